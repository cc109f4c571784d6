// Command connattack measures what the connection attacks of
// docs/security.md cost a goms server, for several builds of the gateway
// example in one run: the RSS and live heap an idle connection holds after
// a split header block, how long slow attacks keep a connection, and the
// CPU a 10 s header-block flood costs the server.
//
//	go build -o /tmp/gw-old ./examples/gateway   # in another checkout
//	go build -o bin/gateway ./examples/gateway
//	cd bench && go run ./cmd/connattack -server old=/tmp/gw-old -server new=../bin/gateway
//
// Each server runs as its own process on free loopback ports, with its
// admin listener's pprof on, which gives the live heap after a GC.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type serverFlags []string

func (s *serverFlags) String() string     { return strings.Join(*s, ",") }
func (s *serverFlags) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var servers serverFlags
	flag.Var(&servers, "server", "name=path of a gateway example binary (repeatable)")
	conns := flag.Int("conns", 200, "idle connections per memory measurement")
	fill := flag.Int("fill", 512<<10, "bytes of HPACK table size updates before the fields of a split header block")
	flood := flag.Duration("flood", 10*time.Second, "length of each header-block flood")
	wait := flag.Duration("wait", 30*time.Second, "how long to wait for a slow attack's connection to close")
	flag.Parse()
	if len(servers) == 0 {
		fmt.Fprintln(os.Stderr, "connattack: give at least one -server name=path")
		os.Exit(2)
	}
	for _, s := range servers {
		name, path, ok := strings.Cut(s, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "connattack: -server %q: want name=path\n", s)
			os.Exit(2)
		}
		if err := measure(name, path, *conns, *fill, *flood, *wait); err != nil {
			fmt.Fprintf(os.Stderr, "connattack: %s: %v\n", name, err)
			os.Exit(1)
		}
	}
}

// server is a running gateway example.
type server struct {
	cmd               *exec.Cmd
	grpc, http, admin string
}

// start starts the server on free ports, trying again when one was taken
// between the check and the server's listen.
func start(path string) (*server, error) {
	var err error
	for range 3 {
		var s *server
		if s, err = startOnce(path); err == nil {
			return s, nil
		}
	}
	return nil, err
}

func startOnce(path string) (*server, error) {
	ports := make([]int, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
	}
	s := &server{
		grpc:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		http:  fmt.Sprintf("127.0.0.1:%d", ports[1]),
		admin: fmt.Sprintf("127.0.0.1:%d", ports[2]),
	}
	s.cmd = exec.Command(path, "-grpc-port", strconv.Itoa(ports[0]), "-http-port", strconv.Itoa(ports[1]),
		"-set", "admin.address="+s.admin, "-set", "admin.pprof=true", "-set", "log.level=error")
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _, _ = s.cmd.Process.Wait(); close(exited) }()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return nil, errors.New("exited before it was ready")
		default:
		}
		if res, err := http.Get("http://" + s.admin + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return s, nil
			}
		}
	}
	s.stop()
	return nil, errors.New("not ready after 20s")
}

func (s *server) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// rss returns the server's resident set size.
func (s *server) rss() int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(data)
	if m == nil {
		return 0
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// heap returns the server's live heap after a GC.
func (s *server) heap() int64 {
	res, err := http.Get("http://" + s.admin + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	m := regexp.MustCompile(`# HeapAlloc = (\d+)`).FindSubmatch(data)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// cpu returns the CPU time the server has used.
func (s *server) cpu() time.Duration {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100
}

func measure(name, path string, conns, fill int, flood, wait time.Duration) error {
	s, err := start(path)
	if err != nil {
		return err
	}
	defer s.stop()
	list := []byte{0, 0, 0, 0, 0} // an empty ListRequest
	// Idle connections after a call: plain, then with a split header block.
	for _, fillBytes := range []int{0, fill} {
		time.Sleep(time.Second)
		rss0, heap0 := s.rss(), s.heap()
		open := make([]net.Conn, 0, conns)
		for range conns {
			c, err := net.Dial("tcp", s.grpc)
			if err != nil {
				return err
			}
			open = append(open, c)
			go func() { _, _ = c.Write(request(1, fillBytes, list)) }()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if code, err := grpcStatus(c, 1); err != nil || code != "0" {
				return fmt.Errorf("List: grpc-status %q, %v", code, err)
			}
		}
		time.Sleep(time.Second)
		rss1, heap1 := s.rss(), s.heap()
		fmt.Printf("%s\tidle grpc connection after a call, %d KiB split header block\tRSS %d KiB\tlive heap %d KiB\t(%d connections)\n",
			name, fillBytes>>10, (rss1-rss0)/int64(conns)>>10, (heap1-heap0)/int64(conns)>>10, conns)
		for _, c := range open {
			_ = c.Close()
		}
	}

	// Slow attacks: how long the server keeps the connection.
	slow := []struct {
		what, addr string
		send       []byte
	}{
		{"grpc port: 16 bytes of the preface", s.grpc, []byte(http2.ClientPreface[:16])},
		{"http port: 16 bytes of the preface", s.http, []byte(http2.ClientPreface[:16])},
		{"http port: Connect unary, HTTP/1.1, Content-Length 4 GiB, no body", s.http, []byte(
			"POST /goms.v1.GoMsService/List HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4294967296\r\n\r\n")},
		{"http port: gRPC-Web, HTTP/1.1, envelope claiming 0xFFFFFFFF bytes", s.http, []byte(
			"POST /goms.v1.GoMsService/List HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: 4294967301\r\n\r\n\x00\xff\xff\xff\xff")},
		{"grpc port: gRPC message claiming 16 bytes, 7 sent", s.grpc, stalledMessage()},
	}
	var wg sync.WaitGroup
	for _, a := range slow {
		wg.Go(func() {
			c, err := net.Dial("tcp", a.addr)
			if err != nil {
				fmt.Printf("%s\t%s\t%v\n", name, a.what, err)
				return
			}
			defer c.Close()
			start := time.Now()
			_, _ = c.Write(a.send)
			_ = c.SetReadDeadline(start.Add(wait))
			_, err = io.Copy(io.Discard, c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				fmt.Printf("%s\t%s\tstill open after %v\n", name, a.what, wait)
				return
			}
			fmt.Printf("%s\t%s\tclosed after %v\n", name, a.what, time.Since(start).Round(10*time.Millisecond))
		})
	}
	wg.Wait()

	// Header-block floods: one client sends HEADERS without END_HEADERS,
	// then CONTINUATION frames of table size updates, for flood, on one
	// connection, then again opening a new connection whenever the server
	// closes one.
	for _, port := range []struct{ what, addr string }{{"grpc port", s.grpc}, {"http port", s.http}} {
		for _, reconnect := range []bool{false, true} {
			cpu0 := s.cpu()
			sent, conns, err := headerFlood(port.addr, flood, reconnect)
			if err != nil {
				return err
			}
			fmt.Printf("%s	%s: %v header-block flood, reconnecting %v	server CPU %v	client sent %d MiB on %d connections\n",
				name, port.what, flood, reconnect, (s.cpu() - cpu0).Round(10*time.Millisecond), sent>>20, conns)
		}
	}
	return nil
}

// request returns the bytes of a connection that opens with a gRPC call
// whose header block holds fill bytes of table size updates before its
// fields, 16 KiB a frame.
func request(id uint32, fill int, msg []byte) []byte {
	var buf bytes.Buffer
	buf.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&buf, nil)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"},
		{":path", "/goms.v1.GoMsService/List"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := append(bytes.Repeat([]byte{0x20}, fill), hb.Bytes()...)
	for first := true; ; first = false {
		n := min(len(block), 16<<10)
		end := n == len(block)
		if first {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:n], EndHeaders: end})
		} else {
			_ = fr.WriteContinuation(id, end, block[:n])
		}
		block = block[n:]
		if end {
			break
		}
	}
	_ = fr.WriteData(id, true, msg)
	return buf.Bytes()
}

// stalledMessage opens a gRPC call whose message claims 16 bytes and
// sends 7.
func stalledMessage() []byte {
	b := request(1, 0, nil)
	b = b[:len(b)-9] // without its empty DATA frame
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	_ = fr.WriteData(1, false, append([]byte{0, 0, 0, 0, 16}, "partial"...))
	return append(b, buf.Bytes()...)
}

// grpcStatus reads frames until stream id ends and returns its
// grpc-status.
func grpcStatus(c net.Conn, id uint32) (string, error) {
	fr := http2.NewFramer(io.Discard, bufio.NewReader(c))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "", err
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id && h.StreamEnded() {
			return grpcStatusField(h), nil
		}
	}
}

func grpcStatusField(h *http2.MetaHeadersFrame) string {
	for _, f := range h.Fields {
		if f.Name == "grpc-status" {
			return f.Value
		}
	}
	return ""
}

// headerFlood floods addr with never-ending header blocks for d, on one
// connection or, with reconnect, on a new one whenever the server closes
// one, and returns the bytes sent and the connections used.
func headerFlood(addr string, d time.Duration, reconnect bool) (int64, int, error) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	_ = fr.WriteContinuation(1, false, bytes.Repeat([]byte{0x20}, 16<<10))
	cont := bytes.Clone(buf.Bytes())
	buf.Reset()
	buf.WriteString(http2.ClientPreface)
	_ = fr.WriteSettings()
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bytes.Repeat([]byte{0x20}, 16<<10)})
	head := buf.Bytes()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var sent int64
	conns := 0
	for ctx.Err() == nil && (reconnect || conns == 0) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return sent, conns, err
		}
		conns++
		go func() { _, _ = io.Copy(io.Discard, c) }()
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		n, err := c.Write(head)
		for sent += int64(n); err == nil; sent += int64(n) {
			n, err = c.Write(cont)
		}
		if !reconnect {
			<-ctx.Done() // the server's CPU is measured over d
		}
		stop()
		_ = c.Close()
	}
	return sent, conns, nil
}
