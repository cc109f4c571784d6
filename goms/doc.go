// Package goms serves protobuf micro-services written with connect-go to
// gRPC, gRPC-Web and Connect clients from the same listeners.
//
// A [Server] owns one or more named listeners. Each listener speaks
// HTTP/1.1 and HTTP/2 (cleartext h2c, or TLS when given a certificate) and
// has a [Mode] that says which RPC protocols it accepts: [ModeGRPC] (gRPC
// only), [ModeHTTP] (Connect and gRPC-Web) or [ModeGateway] (all three).
// Handlers are the ones protoc-gen-connect-go generates; goms mounts them,
// adds gRPC health checking, server reflection and the plain HTTP probes
// /healthz and /readyz, and runs everything until its context ends:
//
//	srv, err := goms.New(goms.Config{
//		Listeners: []goms.Listener{
//			{Name: "grpc", Addr: "127.0.0.1:42001", Mode: goms.ModeGRPC},
//			{Name: "http", Addr: "127.0.0.1:8080", Mode: goms.ModeHTTP},
//		},
//	})
//	if err != nil {
//		return err
//	}
//	srv.Mount(gomsv1connect.NewGoMsServiceHandler(impl, srv.HandlerOptions()...))
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	return srv.Serve(ctx)
//
// An http or gateway listener can also let web pages of other origins call
// it ([Listener].CORS) and serve the REST routes that google.api.http
// annotations give the mounted methods ([Listener].REST).
//
// A request that uses a protocol its listener does not accept, or that
// names a procedure nobody mounted, gets an error in the caller's own
// protocol (a grpc-status for gRPC and gRPC-Web, a Connect JSON error with
// an HTTP status otherwise) that says what went wrong.
package goms
