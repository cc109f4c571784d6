package validate_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/internal/gomstest"
	"github.com/reversTeam/go-ms/goms/validate"
)

type protocol struct {
	name string
	h2   bool
	opts []connect.ClientOption
}

var protocols = []protocol{
	{name: "connect-proto"},
	{name: "connect-json", opts: []connect.ClientOption{connect.WithProtoJSON()}},
	{name: "grpc", h2: true, opts: []connect.ClientOption{connect.WithGRPC()}},
	{name: "grpcweb", opts: []connect.ClientOption{connect.WithGRPCWeb()}},
}

func (p protocol) client(tb testing.TB) *http.Client {
	if p.h2 {
		return gomstest.H2C(tb)
	}
	return gomstest.HTTP1(tb)
}

// violation is the part of a buf.validate.Violation the tests check.
type violation struct {
	field, rule string
}

// wantViolations fails the test unless err is invalid_argument with a
// buf.validate.Violations detail listing exactly want.
func wantViolations(t *testing.T, what string, err error, want ...violation) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		t.Errorf("%s: got %v, want invalid_argument", what, err)
		return
	}
	var got []violation
	for _, d := range ce.Details() {
		msg, err := d.Value()
		if err != nil {
			t.Errorf("%s: detail %s: %v", what, d.Type(), err)
			continue
		}
		vs, ok := msg.(*validatepb.Violations)
		if !ok {
			t.Errorf("%s: detail of type %s, want buf.validate.Violations", what, d.Type())
			continue
		}
		for _, v := range vs.GetViolations() {
			var path []string
			for _, e := range v.GetField().GetElements() {
				path = append(path, e.GetFieldName())
			}
			got = append(got, violation{strings.Join(path, "."), v.GetRuleId()})
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: violations %v, want %v", what, got, want)
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	run := gomstest.Start(t, goms.Config{
		Listeners: []goms.Listener{{Name: "gateway"}},
		Plugins:   []goms.Plugin{validate.New()},
	}, nil)
	long := strings.Repeat("x", 201)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			items := gomsv1connect.NewGoMsServiceClient(p.client(t), run.URL("gateway"), p.opts...)
			children := childv1connect.NewChildServiceClient(p.client(t), run.URL("gateway"), p.opts...)
			ctx := t.Context()

			_, err := items.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{}))
			wantViolations(t, "empty name", err, violation{"name", "string.min_len"})
			_, err = items.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: long}))
			wantViolations(t, "long name", err, violation{"name", "string.max_len"})
			_, err = items.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "ABC"}))
			wantViolations(t, "bad id", err, violation{"id", "string.pattern"})
			_, err = items.Update(ctx, connect.NewRequest(&gomsv1.UpdateRequest{Id: "nope"}))
			wantViolations(t, "bad update", err, violation{"id", "string.pattern"}, violation{"name", "string.min_len"})
			_, err = items.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: 1001}))
			wantViolations(t, "page size too large", err, violation{"page_size", "int32.gte_lte"})
			_, err = items.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: -1}))
			wantViolations(t, "negative page size", err, violation{"page_size", "int32.gte_lte"})
			_, err = children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: "nope", Name: "c"}))
			wantViolations(t, "bad parent id", err, violation{"parent_id", "string.pattern"})
			_, err = children.List(ctx, connect.NewRequest(&childv1.ListRequest{ParentId: "0123456789ABCDEF"}))
			wantViolations(t, "bad parent filter", err, violation{"parent_id", "string.pattern"})

			// Valid requests reach the handlers.
			created, err := items.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "valid-" + p.name}))
			if err != nil {
				t.Fatal(err)
			}
			id := created.Msg.GetItem().GetId()
			if _, err := items.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: id})); err != nil {
				t.Errorf("Get(%q): %v", id, err)
			}
			_, err = items.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: "0123456789abcdef"}))
			gomstest.WantError(t, err, connect.CodeNotFound)
			for _, size := range []int32{0, 1000} {
				if _, err := items.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: size})); err != nil {
					t.Errorf("List(page_size %d): %v", size, err)
				}
			}
			if _, err := children.List(ctx, connect.NewRequest(&childv1.ListRequest{})); err != nil {
				t.Errorf("List without parent filter: %v", err)
			}
			if _, err := children.Create(ctx, connect.NewRequest(&childv1.CreateRequest{ParentId: id, Name: "child"})); err != nil {
				t.Errorf("child Create: %v", err)
			}

			// Streams are checked message by message.
			if p.name == "connect-proto" || p.name == "grpc" {
				stream := items.CreateMany(ctx)
				_ = stream.Send(&gomsv1.CreateManyRequest{Name: "ok-" + p.name})
				_ = stream.Send(&gomsv1.CreateManyRequest{})
				_, err := stream.CloseAndReceive()
				wantViolations(t, "stream", err, violation{"name", "string.min_len"})
			}
		})
	}
}
