package goms

import (
	"compress/gzip"
	"errors"
	"io"

	"connectrpc.com/connect"
)

// errInflatedTooLarge ends the inflation of a message past the limit.
var errInflatedTooLarge = errors.New("inflated message is over the size limit")

// boundedGzip returns the handler option that replaces connect-go's gzip
// with one whose decompressor stops one byte past limit. connect-go reads
// a compressed message that is over its limit to the end, to report its
// size: 1 MiB of gzip inflating to 1 GiB then costs a second of CPU to
// refuse. The call still fails with CodeResourceExhausted, without the
// size. Handlers given a larger WithReadMaxBytes still refuse compressed
// messages over limit.
func boundedGzip(limit int) connect.HandlerOption {
	return connect.WithCompression("gzip",
		func() connect.Decompressor { return &boundedGzipReader{limit: int64(limit)} },
		func() connect.Compressor { return gzip.NewWriter(io.Discard) },
	)
}

// boundedGzipReader is a gzip.Reader that fails once it has returned more
// than limit bytes since its last Reset.
type boundedGzipReader struct {
	gzip.Reader
	limit, read int64
}

func (r *boundedGzipReader) Read(p []byte) (int, error) {
	if r.read > r.limit {
		return 0, errInflatedTooLarge
	}
	n, err := r.Reader.Read(p)
	r.read += int64(n)
	return n, err
}

func (r *boundedGzipReader) Reset(src io.Reader) error {
	r.read = 0
	return r.Reader.Reset(src)
}

// compressMinBytes is the size from which handlers compress a response
// the client accepts compressed. connect-go's default compresses every
// response; grpc-go's only those to clients that compressed their request.
const compressMinBytes = 1024
