package goms

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"strconv"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeStream is the grpc.ServerStream of a bridged call, without grpc-go:
// it records the messages sent and replays the messages to receive.
type fakeStream struct {
	grpc.ServerStream // nil: the methods below are all the bridge uses
	sent              [][]byte
	recv              [][]byte
	trailer           metadata.MD
}

func (s *fakeStream) Context() context.Context     { return context.Background() }
func (s *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (s *fakeStream) SendHeader(metadata.MD) error { return nil }
func (s *fakeStream) SetTrailer(md metadata.MD)    { s.trailer = md }
func (s *fakeStream) SendMsg(m any) error {
	s.sent = append(s.sent, bytes.Clone(*m.(*[]byte)))
	return nil
}
func (s *fakeStream) RecvMsg(m any) error { return s.recvMsg(m.(*rawMessage)) }
func (s *fakeStream) recvMsg(m *rawMessage) error {
	if len(s.recv) == 0 {
		return io.EOF
	}
	m.data = mem.BufferSlice{mem.SliceBuffer(s.recv[0])}
	s.recv = s.recv[1:]
	return nil
}

// chunks cuts data into pieces whose sizes come from sizes, cycling, each
// at least one byte.
func chunks(data, sizes []byte) [][]byte {
	var out [][]byte
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(sizes) > 0 {
			n = min(int(sizes[i%len(sizes)])+1, len(data))
		}
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// FuzzStreamWriter checks the bridge's response writer, which turns the
// enveloped messages a connect handler writes into grpc-go messages: for
// any bytes, written in any pieces, it sends exactly the complete
// envelopes with flags 0, in order, stops with an error at the first
// envelope with other flags, and never panics; and whatever trailers the
// handler set, finish returns a status without panicking, OK only for
// grpc-status 0.
func FuzzStreamWriter(f *testing.F) {
	msgs := append(envelopeBytes(0, []byte("hello")), envelopeBytes(0, nil)...)
	f.Add(msgs, []byte{0, 3, 200}, "0", "", "")
	f.Add(msgs, []byte{}, "14", "shutting%20down", "")
	f.Add(append(msgs, envelopeBytes(1, []byte("compressed"))...), []byte{6}, "13", "", "")
	f.Add([]byte("\x00\x00\x00\x00\x10abc"), []byte{1}, "x", "%zz", "CAU")
	f.Add([]byte{}, []byte{}, "", "", "CA4SBGZhaWw")
	f.Fuzz(func(t *testing.T, data, sizes []byte, grpcStatus, grpcMessage, details string) {
		// What the writer must send: the complete envelopes up to the
		// first with flags.
		var want [][]byte
		wantErr := false
		for b := data; len(b) >= 5; {
			n := int(binary.BigEndian.Uint32(b[1:5]))
			if n > len(b)-5 {
				break
			}
			if b[0] != 0 {
				wantErr = true
				break
			}
			want = append(want, b[5:5+n])
			b = b[5+n:]
		}

		stream := &fakeStream{}
		w := &streamWriter{stream: stream, header: make(http.Header)}
		var gotErr error
		for _, c := range chunks(data, sizes) {
			if _, err := w.Write(c); err != nil {
				gotErr = err
				break
			}
		}
		if wantErr != (gotErr != nil) {
			t.Fatalf("Write error %v, want an error: %v", gotErr, wantErr)
		}
		if len(stream.sent) != len(want) {
			t.Fatalf("sent %d messages, want %d", len(stream.sent), len(want))
		}
		for i := range want {
			if !bytes.Equal(stream.sent[i], want[i]) {
				t.Fatalf("message %d: sent %q, want %q", i, stream.sent[i], want[i])
			}
		}
		if gotErr != nil {
			return
		}

		w.header.Set(http.TrailerPrefix+"Grpc-Status", grpcStatus)
		w.header.Set(http.TrailerPrefix+"Grpc-Message", grpcMessage)
		if details != "" {
			w.header.Set(http.TrailerPrefix+"Grpc-Status-Details-Bin", details)
		}
		err := w.finish()
		if details != "" {
			return // a status message of its own, valid or not
		}
		code, perr := strconv.ParseUint(grpcStatus, 10, 32)
		switch {
		case perr != nil && err == nil:
			t.Fatalf("finish with grpc-status %q: no error", grpcStatus)
		case perr != nil:
			if st, _ := status.FromError(err); st.Code() != codes.Internal {
				t.Fatalf("finish with grpc-status %q: %v, want internal", grpcStatus, err)
			}
		case code == 0 && err != nil:
			t.Fatalf("finish with grpc-status 0: %v", err)
		case code != 0 && status.Code(err) != codes.Code(code):
			t.Fatalf("finish with grpc-status %d: %v", code, err)
		}
	})
}

// FuzzStreamBody checks the bridge's request body, which frames the
// messages grpc-go received as the enveloped stream a connect handler
// reads: for any messages, read through buffers of any sizes, it yields
// each behind its 5-byte prefix, then io.EOF.
func FuzzStreamBody(f *testing.F) {
	f.Add([]byte("hello world"), []byte{5}, []byte{0, 1, 2})
	f.Add([]byte{}, []byte{0}, []byte{})
	f.Add(bytes.Repeat([]byte("x"), 300), []byte{255, 0, 10}, []byte{4})
	f.Fuzz(func(t *testing.T, data, cuts, readSizes []byte) {
		// The messages are data cut by cuts, empty ones included.
		var msgs [][]byte
		for i, rest := 0, data; i < len(cuts) || len(rest) > 0; i++ {
			n := len(rest)
			if i < len(cuts) {
				n = min(int(cuts[i]), len(rest))
			}
			msgs = append(msgs, rest[:n])
			rest = rest[n:]
			if i >= 64 {
				break
			}
		}
		var want []byte
		for _, m := range msgs {
			want = append(want, envelopeBytes(0, m)...)
		}
		body := &streamBody{stream: &fakeStream{recv: msgs}}
		var got []byte
		for i := 0; ; i++ {
			// An empty read returns nothing and loses nothing.
			if n, err := body.Read(nil); n != 0 || err != nil && err != io.EOF {
				t.Fatalf("Read(nil) = %d, %v", n, err)
			}
			size := 1
			if len(readSizes) > 0 {
				size = int(readSizes[i%len(readSizes)]) + 1
			}
			buf := make([]byte, size)
			n, err := body.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if i > 4*len(want)+1000 {
				t.Fatalf("no io.EOF after %d reads", i)
			}
		}
		body.free()
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q, want %q", got, want)
		}
	})
}

// envelopeBytes frames one message as gRPC does.
func envelopeBytes(flags byte, msg []byte) []byte {
	b := []byte{flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}
