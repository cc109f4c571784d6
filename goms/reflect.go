package goms

import (
	"net/http"
	"slices"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
)

// addReflection mounts grpc.reflection.v1 and v1alpha on the listeners
// Config.Reflection selects. Each listener lists exactly the services
// mounted on it, plus health and reflection. Called with s.mu held.
func (s *Server) addReflection() error {
	if s.cfg.Reflection.Disabled {
		return nil
	}
	for _, l := range s.listeners {
		if l.admin {
			continue
		}
		if only := s.cfg.Reflection.Listeners; len(only) > 0 && !slices.Contains(only, l.Name) {
			continue
		}
		names := slices.Clone(l.routes.names)
		names = append(names, grpcreflect.ReflectV1ServiceName, grpcreflect.ReflectV1AlphaServiceName)
		if !slices.Contains(names, grpchealth.HealthV1ServiceName) {
			names = append(names, grpchealth.HealthV1ServiceName)
		}
		reflector := grpcreflect.NewStaticReflector(names...)
		for _, h := range []func(*grpcreflect.Reflector, ...connect.HandlerOption) (string, http.Handler){
			grpcreflect.NewHandlerV1, grpcreflect.NewHandlerV1Alpha,
		} {
			path, handler := h(reflector, s.handlerOpts...)
			if err := s.mountLocked([]string{l.Name}, path, handler); err != nil {
				return err
			}
		}
	}
	return nil
}
