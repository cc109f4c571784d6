package validate_test

import (
	"fmt"

	"github.com/reversTeam/go-ms/goms"
	"github.com/reversTeam/go-ms/goms/validate"
)

// The validation plugin checks the requests of every handler built with
// srv.HandlerOptions() against the buf.validate rules of their messages.
func Example() {
	v := validate.New()
	_, err := goms.New(goms.Config{
		Listeners: []goms.Listener{{Name: "gateway", Addr: "127.0.0.1:0"}},
		Plugins:   []goms.Plugin{v},
	})
	fmt.Println(v.Name(), err)
	// Output: validate <nil>
}
