//go:build linux

package main_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// The multi-host network: a bridge in a namespace of its own joins one
// namespace per host. Addresses come from 198.18.0.0/15, the range RFC 2544
// sets aside for benchmarking networks, so they are nobody's real hosts.
const (
	dnsServiceName = "goms.test." // resolves to the three server hosts
	dnsAddr        = "198.18.0.53"
	edgeAddr       = "198.18.0.20"
	gomsPort       = "42101"
	edgePort       = "8080"
	adminPort      = "4242"
)

var serverAddrs = []string{"198.18.0.11", "198.18.0.12", "198.18.0.13"}

// The load: loadWorkers call in a loop, each call with loadCallTimeout,
// until loadMaxCalls or a time limit, whichever comes first.
const (
	loadWorkers     = 4
	loadCallTimeout = 2 * time.Second
	loadMaxCalls    = 200_000
)

// TestMultiHost runs three goms services and an edge as four hosts, each
// in its own network namespace, and the edge finds the services through a
// DNS name with three A records. Under load, one service host's link is
// cut: calls go on through the other two without a pause. Then the link
// comes back and the host takes its share again.
//
// The link stays cut for 8s, or for GOMS_MULTIHOST_CUT (a duration). Past
// about 20s the edge's HTTP/2 pings declare the connection dead and the
// edge dials the host again while its link is still down.
//
// It needs root and iproute2's ip (.ci/run installs it); it skips without
// them, and with -short.
func TestMultiHost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds namespaces and starts processes; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs as root); skipped")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip (apt-get install iproute2; .ci/run installs it); skipped")
	}

	bin := filepath.Join(t.TempDir(), "distributed")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	n := newTestNet(t)
	servers := make([]*netHost, len(serverAddrs))
	for i, addr := range serverAddrs {
		servers[i] = n.addHost(t, fmt.Sprintf("s%d", i+1), addr)
	}
	edge := n.addHost(t, "c", edgeAddr)
	tester := n.addHost(t, "t", dnsAddr) // the test's own host: DNS server and load

	var addrs []netip.Addr
	for _, a := range serverAddrs {
		addrs = append(addrs, netip.MustParseAddr(a))
	}
	dns := startDNS(t, tester, addrs)
	// ip netns exec mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf.
	n.resolvConf(t, edge, "nameserver "+dnsAddr+"\noptions timeout:1 attempts:1\n")

	hc := tester.httpClient()
	t.Cleanup(hc.CloseIdleConnections)
	for i, s := range servers {
		s.start(t, bin, filepath.Join(n.logs, s.name+".log"), "-config", "goms.yaml",
			"-set", "listeners.gateway.address="+net.JoinHostPort(serverAddrs[i], gomsPort),
			"-set", "admin.address="+net.JoinHostPort(serverAddrs[i], adminPort),
			"-set", "log.level=warn")
	}
	edgeConfig := filepath.Join(t.TempDir(), "edge.yaml")
	writeTestFile(t, edgeConfig, fmt.Sprintf(`listeners:
  - {name: edge, address: %q, mode: gateway}
remotes:
  - name: goms
    service: goms.v1.GoMsService
    targets: [%q]
    resolve_interval: 1s
    expose: [edge]
admin: {address: %q}
log: {level: warn}
`, net.JoinHostPort(edgeAddr, edgePort), strings.TrimSuffix(dnsServiceName, ".")+":"+gomsPort, net.JoinHostPort(edgeAddr, adminPort)))
	edge.start(t, bin, filepath.Join(n.logs, "edge.log"), "-config", edgeConfig)
	for _, h := range append(servers, edge) {
		waitAdminReady(t, hc, h)
	}

	client := gomsv1connect.NewGoMsServiceClient(hc, "http://"+net.JoinHostPort(edgeAddr, edgePort))
	list := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, loadCallTimeout)
		defer cancel()
		_, err := client.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: 1}))
		return err
	}
	// The edge resolves the name and connects; its first call may come
	// before that.
	deadline := time.Now().Add(15 * time.Second)
	for err := list(t.Context()); err != nil; err = list(t.Context()) {
		if time.Now().After(deadline) {
			t.Fatalf("no call through the edge succeeded in 15s: %v (DNS queries answered: %d)", err, dns.queries.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// served scrapes the List calls each server host has answered; -1
	// for the host whose link is cut, or one that does not answer.
	served := func(cut *netHost) []int64 {
		c := make([]int64, len(servers))
		for i, h := range servers {
			var err error
			if h == cut {
				c[i] = -1
			} else if c[i], err = listCalls(t.Context(), hc, h); err != nil {
				t.Errorf("%s", err)
				c[i] = -1
			}
		}
		return c
	}
	cutFor := 8 * time.Second
	if v := os.Getenv("GOMS_MULTIHOST_CUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("GOMS_MULTIHOST_CUT: %v", err)
		}
		cutFor = d
	}

	cut := servers[0]
	l := startLoad(list, cutFor+40*time.Second)
	defer l.stop()
	marks := [][]int64{served(nil)}
	next := func(skip *netHost) { marks = append(marks, served(skip)) }

	// Phase 1: all three hosts serve.
	time.Sleep(3 * time.Second)
	l.next()
	next(nil)
	n.cut(t, cut)

	// Phase 2: the first host's link is cut. Its connection dies without
	// a word: only timeouts and HTTP/2 pings can tell.
	time.Sleep(cutFor)
	l.next()
	next(cut)
	n.restore(t, cut)

	// Phase 3: the link is back, until the host has answered 100 more
	// calls (more than the calls it had been sent while cut, which it may
	// answer once TCP sends them again).
	restored := time.Now()
	const reconnectFor = 25 * time.Second
	for first := int64(-1); ; {
		time.Sleep(250 * time.Millisecond)
		if c, err := listCalls(t.Context(), hc, cut); err == nil && first < 0 {
			first = c
		} else if err == nil && c >= first+100 {
			break
		}
		if time.Since(restored) > reconnectFor {
			t.Errorf("%s answered fewer than 100 calls in the %v after its link came back", cut.name, reconnectFor)
			break
		}
	}
	l.next()
	next(nil)

	// Phase 4: all three hosts serve again.
	time.Sleep(3 * time.Second)
	l.stop()
	next(nil)

	t.Logf("%s cut for %v; calls by phase, and List calls each host answered (? when out of reach):", cut.name, cutFor)
	for i, p := range l.phases {
		var hosts []string
		for j, h := range servers {
			n := "?"
			if marks[i][j] >= 0 && marks[i+1][j] >= 0 {
				n = fmt.Sprint(marks[i+1][j] - marks[i][j])
			}
			hosts = append(hosts, h.name+" "+n)
		}
		t.Logf("%-17s %5.1fs: %5d calls, %5d ok, %3d failed %v, longest wait between oks %v; served: %s",
			p.name, p.took.Seconds(), p.sent, p.ok, p.failed(), p.codes, p.maxGap.Round(time.Millisecond), strings.Join(hosts, ", "))
		for _, e := range p.firstErrs {
			t.Logf("  e.g. %s", e)
		}
	}
	t.Logf("per second, ok/failed: %s", l.timeline())
	t.Logf("DNS queries answered: %d", dns.queries.Load())

	// share checks that each host in hosts answered at least 1/part of the
	// phase's successful calls.
	share := func(phase int, part int64, hosts ...int) {
		p := l.phases[phase]
		for _, j := range hosts {
			if a, b := marks[phase][j], marks[phase+1][j]; a < 0 || b < 0 || (b-a)*part < p.ok {
				t.Errorf("%s: %s answered %d of %d calls, want at least 1/%d", p.name, servers[j].name, b-a, p.ok, part)
			}
		}
	}
	if dns.queries.Load() == 0 {
		t.Errorf("the edge asked the DNS server nothing")
	}
	for i, p := range l.phases {
		switch {
		case (i == 0 || i == 3) && p.failed() > 0:
			t.Errorf("%s: %d of %d calls failed, want none", p.name, p.failed(), p.sent)
		case p.ok*10 < p.sent*9:
			t.Errorf("%s: %d of %d calls succeeded, want at least 90%%", p.name, p.ok, p.sent)
		}
		// While a host is cut, the others keep answering: no pause as
		// long as a call's deadline.
		if p.maxGap >= loadCallTimeout {
			t.Errorf("%s: no call succeeded for %v", p.name, p.maxGap.Round(time.Millisecond))
		}
	}
	share(0, 10, 0, 1, 2)
	share(1, 4, 1, 2) // the two left take the load
	share(3, 10, 0, 1, 2)
}

// testNet is a bridge in a namespace of its own and the hosts joined to
// it, each a namespace with one veth pair.
type testNet struct {
	prefix string // of the namespaces' names: goms-t-RANDOM
	bridge string // the bridge's namespace
	logs   string // processes' output
}

// netHost is one namespace on the bridge: its address and the name of
// its port on the bridge.
type netHost struct {
	name, ns, addr, port string
	exited               chan struct{} // closed when its process ends
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	n := &testNet{prefix: "goms-t-" + hex.EncodeToString(suffix), logs: t.TempDir()}
	n.bridge = n.prefix + "-br"
	t.Cleanup(func() { // last, once the processes have ended
		if t.Failed() {
			n.dumpLogs(t)
		}
	})
	n.addNetns(t, n.bridge)
	ipCmd(t, "-n", n.bridge, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", n.bridge, "link", "set", "br0", "up")
	return n
}

// addNetns creates a namespace and deletes it at the end of the test.
func (n *testNet) addNetns(t *testing.T, ns string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s (root without CAP_SYS_ADMIN cannot run this test)", ns, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", ns, err, out)
		}
	})
}

// addHost creates the host NAME: a namespace with addr/24 on its eth0,
// whose peer is the bridge's port p-NAME.
func (n *testNet) addHost(t *testing.T, name, addr string) *netHost {
	t.Helper()
	h := &netHost{name: name, ns: n.prefix + "-" + name, addr: addr, port: "p-" + name}
	n.addNetns(t, h.ns)
	ipCmd(t, "-n", n.bridge, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	ipCmd(t, "-n", n.bridge, "link", "set", h.port, "master", "br0", "up")
	ipCmd(t, "-n", h.ns, "addr", "add", addr+"/24", "dev", "eth0")
	ipCmd(t, "-n", h.ns, "link", "set", "eth0", "up")
	ipCmd(t, "-n", h.ns, "link", "set", "lo", "up")
	return h
}

// cut takes the host's port on the bridge down: its packets vanish, as
// when a cable is pulled, and nobody is told.
func (n *testNet) cut(t *testing.T, h *netHost) {
	t.Helper()
	ipCmd(t, "-n", n.bridge, "link", "set", h.port, "down")
}

func (n *testNet) restore(t *testing.T, h *netHost) {
	t.Helper()
	ipCmd(t, "-n", n.bridge, "link", "set", h.port, "up")
}

// resolvConf writes the resolv.conf that processes run by ip netns exec
// in the host's namespace see.
func (n *testNet) resolvConf(t *testing.T, h *netHost, content string) {
	t.Helper()
	const etc = "/etc/netns"
	if _, err := os.Stat(etc); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { _ = os.Remove(etc) }) // only if empty
	}
	dir := filepath.Join(etc, h.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	writeTestFile(t, filepath.Join(dir, "resolv.conf"), content)
}

func (n *testNet) dumpLogs(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(n.logs)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(n.logs, e.Name()))
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		t.Logf("--- %s (end):\n%s", e.Name(), data)
	}
}

// start runs bin with args in the host's namespace until the test ends.
func (h *netHost) start(t *testing.T, bin, logFile string, args ...string) {
	t.Helper()
	out, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec execs bin in place: the process is bin itself.
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	// Configured by its file and flags alone, not by the GOMS_* variables
	// of whoever runs the test.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-h.exited
		_ = out.Close()
	})
}

// inNetns runs fn on an OS thread that has entered the host's network
// namespace, so that the sockets fn opens belong there (a socket keeps its
// namespace). The thread is never unlocked: it ends with its goroutine
// instead of going back to the runtime's pool in another namespace.
func (h *netHost) inNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", h.ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", h.ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// httpClient returns a client whose connections start in the host's
// namespace.
func (h *netHost) httpClient() *http.Client {
	dialer := &net.Dialer{Timeout: loadCallTimeout}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := h.inNetns(func() (err error) {
				c, err = dialer.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		MaxIdleConnsPerHost: loadWorkers,
	}}
}

// waitReady waits for the host's admin listener to answer /readyz.
func waitAdminReady(t *testing.T, hc *http.Client, h *netHost) {
	t.Helper()
	url := "http://" + net.JoinHostPort(h.addr, adminPort) + "/readyz"
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := hc.Do(req)
		if err == nil {
			res.Body.Close()
		}
		cancel()
		if err == nil && res.StatusCode == http.StatusOK {
			return
		}
		select {
		case <-h.exited:
			t.Fatalf("%s: the process ended before it was ready", h.name)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not ready after 20s: %v", h.name, url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listCalls returns the List calls a host's goms service has answered
// with ok, from its /metrics.
func listCalls(ctx context.Context, hc *http.Client, h *netHost) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(h.addr, adminPort)+"/metrics", nil)
	res, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: metrics: %w", h.name, err)
	}
	defer res.Body.Close()
	var total int64
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "goms_server_requests_total{") ||
			!strings.Contains(line, `method="List"`) || !strings.Contains(line, `code="ok"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: metrics line %q: %w", h.name, line, err)
		}
		total += int64(v)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: metrics: %w", h.name, err)
	}
	return total, nil
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dnsServer answers A queries for dnsServiceName with its addresses, AAAA
// queries for it with none, and anything else with NXDOMAIN, over UDP.
type dnsServer struct {
	conn    net.PacketConn
	addrs   []netip.Addr
	queries atomic.Int64
}

func startDNS(t *testing.T, h *netHost, addrs []netip.Addr) *dnsServer {
	t.Helper()
	d := &dnsServer{addrs: addrs}
	err := h.inNetns(func() (err error) {
		d.conn, err = net.ListenPacket("udp", net.JoinHostPort(h.addr, "53"))
		return err
	})
	if err != nil {
		t.Fatalf("DNS server on %s: %v", h.addr, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		d.conn.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := d.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if res, err := d.answer(buf[:n]); err == nil {
				_, _ = d.conn.WriteTo(res, from)
			}
		}
	}()
	return d
}

func (d *dnsServer) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	qh, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	d.queries.Add(1)
	known := strings.EqualFold(q.Name.String(), dnsServiceName)
	h := dnsmessage.Header{ID: qh.ID, Response: true, Authoritative: true,
		RecursionDesired: qh.RecursionDesired, RecursionAvailable: true}
	if !known {
		h.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if known && q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		for _, a := range d.addrs {
			rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 1}
			if err := b.AResource(rh, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// callLoad calls a function from several loadWorkers until stopped, or until
// loadMaxCalls or its time limit, and counts the outcomes by phase: a call
// counts in the phase in which it ended.
type callLoad struct {
	call     func(context.Context) error
	start    time.Time
	stopping atomic.Bool
	sent     atomic.Int64
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu        sync.Mutex
	phases    []*loadPhase
	lastOK    time.Time
	perSecond [][2]int // ok, failed
}

var loadPhaseNames = []string{"all up", "link cut", "link back", "all up again"}

type loadPhase struct {
	name      string
	from      time.Time
	took      time.Duration
	sent, ok  int64
	maxGap    time.Duration // longest time without a successful call
	codes     map[string]int64
	firstErrs []string
}

func (p *loadPhase) failed() int64 { return p.sent - p.ok }

func startLoad(call func(context.Context) error, limit time.Duration) *callLoad {
	now := time.Now()
	l := &callLoad{call: call, start: now, lastOK: now}
	l.phases = []*loadPhase{{name: loadPhaseNames[0], from: now, codes: map[string]int64{}}}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	for range loadWorkers {
		l.wg.Go(func() {
			for ctx.Err() == nil && !l.stopping.Load() && l.sent.Add(1) <= loadMaxCalls {
				l.record(l.call(ctx))
			}
		})
	}
	go func() { l.wg.Wait(); cancel() }()
	return l
}

func (l *callLoad) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	p := l.phases[len(l.phases)-1]
	p.sent++
	sec := int(now.Sub(l.start) / time.Second)
	for len(l.perSecond) <= sec {
		l.perSecond = append(l.perSecond, [2]int{})
	}
	if err == nil {
		p.ok++
		p.maxGap = max(p.maxGap, now.Sub(l.lastOK))
		l.lastOK = now
		l.perSecond[sec][0]++
		return
	}
	l.perSecond[sec][1]++
	p.codes[connect.CodeOf(err).String()]++
	if len(p.firstErrs) < 3 {
		p.firstErrs = append(p.firstErrs, fmt.Sprintf("at %.1fs: %v", now.Sub(l.start).Seconds(), err))
	}
}

// next starts the next phase.
func (l *callLoad) next() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	p := l.phases[len(l.phases)-1]
	p.took = now.Sub(p.from)
	p.maxGap = max(p.maxGap, now.Sub(l.lastOK))
	l.phases = append(l.phases, &loadPhase{name: loadPhaseNames[len(l.phases)], from: now, codes: map[string]int64{}})
}

// stop ends the load and waits for the calls in flight.
func (l *callLoad) stop() {
	l.stopOnce.Do(func() {
		l.stopping.Store(true)
		l.wg.Wait()
		l.mu.Lock()
		p := l.phases[len(l.phases)-1]
		p.took = time.Since(p.from)
		l.mu.Unlock()
	})
}

func (l *callLoad) timeline() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for i, s := range l.perSecond {
		fmt.Fprintf(&b, "%d:%d/%d ", i, s[0], s[1])
	}
	return b.String()
}
