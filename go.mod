module github.com/reversTeam/go-ms

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	connectrpc.com/grpchealth v1.5.0
	connectrpc.com/grpcreflect v1.3.1
	google.golang.org/protobuf v1.36.12
)

require github.com/google/go-cmp v0.7.0
