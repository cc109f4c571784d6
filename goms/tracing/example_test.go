package tracing_test

import (
	"context"
	"fmt"

	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/tracing"
)

// The tracing plugin exports spans over OTLP when an endpoint is
// configured here or in OTEL_EXPORTER_OTLP_ENDPOINT, and passes calls
// through untouched otherwise. Shutdown flushes the last spans.
func Example() {
	ctx := context.Background()
	tr, err := tracing.New(ctx, tracing.Config{
		Endpoint:    "http://127.0.0.1:4318/v1/traces",
		ServiceName: "child",
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = tr.Shutdown(ctx) }()
	_, err = goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", Addr: "127.0.0.1:0"}},
		Plugins:   []goms.Plugin{tr},
	})
	fmt.Println(tr.Name(), tr.Enabled(), err)
	// Output: tracing true <nil>
}
