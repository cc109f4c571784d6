package goms

import (
	"net/http"
	"slices"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
)

// reflectionHandlers returns the grpc.reflection.v1 and v1alpha handlers
// of a listener that serves the services named: they list exactly those,
// plus health and reflection.
func reflectionHandlers(services []string, opts []connect.HandlerOption) map[string]http.Handler {
	names := slices.Clone(services)
	for _, b := range builtinServices {
		if !slices.Contains(names, b) {
			names = append(names, b)
		}
	}
	reflector := grpcreflect.NewStaticReflector(names...)
	routes := make(map[string]http.Handler, 2)
	for _, h := range []func(*grpcreflect.Reflector, ...connect.HandlerOption) (string, http.Handler){
		grpcreflect.NewHandlerV1, grpcreflect.NewHandlerV1Alpha,
	} {
		path, handler := h(reflector, opts...)
		routes[path] = handler
	}
	return routes
}
