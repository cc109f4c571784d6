package prom_test

import (
	"fmt"

	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/prom"
)

// The metrics plugin records the calls of every handler built with
// srv.HandlerOptions() and of every client built with srv.ClientOptions(),
// and the admin listener serves them under /metrics.
func Example() {
	metrics, err := prom.New()
	if err != nil {
		panic(err)
	}
	srv, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", Addr: "127.0.0.1:0"}},
		Admin:     goms.Admin{Addr: "127.0.0.1:0"},
		Plugins:   []goms.Plugin{metrics},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(metrics.Name(), len(srv.ClientOptions()), prom.MetricsPath)
	// Output: metrics 1 /metrics
}
