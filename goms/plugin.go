package goms

import (
	"net/http"

	"connectrpc.com/connect"
)

// Plugin adds a named interceptor to a server, such as the metrics of
// goms/prom or the tracing of goms/tracing. Plugins live in their own packages
// so that a program pays for their dependencies only when it uses them.
type Plugin interface {
	// Name is how configuration selects the plugin's interceptor. The
	// names Interceptors lists have a fixed place in the chain; other
	// names run after them, in Config.Plugins order.
	Name() string
	// Interceptor is applied to the calls the server handles.
	Interceptor() connect.Interceptor
}

// ClientPlugin is a Plugin that also instruments the calls of the clients
// the server provides (Server.ClientOptions).
type ClientPlugin interface {
	Plugin
	ClientInterceptor() connect.Interceptor
}

// AdminPlugin is a Plugin that serves HTTP routes on the admin listener,
// such as /metrics.
type AdminPlugin interface {
	Plugin
	AdminRoutes() map[string]http.Handler
}
