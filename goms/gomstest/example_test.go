package gomstest_test

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/gomstest"
	"github.com/reversTeam/go-ms/internal/testservice"
)

// A test starts a server on a loopback port with its handlers mounted, and
// calls it in every protocol, then in-process through Server.Client.
func Example() {
	t := &testing.T{} // in a test, the *testing.T it is given
	ts := gomstest.Start(t, goms.Config{}, func(srv *goms.Server) error {
		return srv.Mount(gomsv1connect.NewGoMsServiceHandler(testservice.NewGoMs(), srv.HandlerOptions()...))
	})
	defer ts.Stop() // what the test's cleanup does
	ctx := context.Background()
	for _, p := range gomstest.Protocols {
		client := gomstest.Dial(t, ts, "", p, gomsv1connect.NewGoMsServiceClient)
		res, err := client.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "over " + string(p)}))
		if err != nil {
			fmt.Println(p, err)
			continue
		}
		fmt.Println(res.Msg.GetItem().GetName())
	}
	client := gomstest.InProcess(ts, gomsv1connect.GoMsServiceName, gomsv1connect.NewGoMsServiceClient)
	_, err := client.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
	fmt.Println(connect.CodeOf(err))
	// Output:
	// over grpc
	// over grpcweb
	// over connect+json
	// over connect+proto
	// not_found
}
