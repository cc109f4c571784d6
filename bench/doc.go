// Package bench holds the load benchmark of goms, a module of its own so
// that goms users never download grpc-go's code generators or
// grpc-gateway, which only the reference servers need.
//
//   - cmd/bench is the harness: `make bench` and `make bench-quick`.
//   - cmd/benchserver serves goms and bare connect-go.
//   - cmd/grpcserver serves grpc-go and grpc-gateway, from gen/.
//
// gen/ is generated from ../proto by `go generate` in this directory, with
// the plugins pinned in ../tools/go.mod.
package bench

//go:generate go tool -modfile=../tools/go.mod buf generate
