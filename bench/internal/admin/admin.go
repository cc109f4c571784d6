// Package admin is the contract between the benchmark harness and the
// server processes it starts: the items every server holds, the line a
// server prints on stdout once it listens, and the admin endpoint that
// reports the server's own CPU time and allocations.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// Payloads the servers are seeded with: Get on the item of a payload
// answers an item whose name has that many bytes.
const (
	PayloadSmall = "small"
	PayloadLarge = "10KiB"
)

// ItemNames maps each payload to the name of its item.
func ItemNames() map[string]string {
	return map[string]string{
		PayloadSmall: "bench-item",
		PayloadLarge: strings.Repeat("x", 10<<10),
	}
}

// Endpoint names in Hello.Addrs.
const (
	// EndpointGRPC is where gRPC clients go.
	EndpointGRPC = "grpc"
	// EndpointHTTP is where Connect, gRPC-Web and JSON clients go.
	EndpointHTTP = "http"
)

// Hello is the JSON line a server prints on stdout once it listens and
// holds its items.
type Hello struct {
	// Addrs maps EndpointGRPC and EndpointHTTP to listening addresses;
	// an endpoint the server lacks is absent.
	Addrs map[string]string `json:"addrs"`
	// Admin is the address of the admin endpoint.
	Admin string `json:"admin"`
	// IDs maps each payload to the id of its item.
	IDs map[string]string `json:"ids"`
	// AccessLog, when set, names the file the server appends an access
	// log record to for every call; the harness empties it before each
	// case and checks that the case wrote to it.
	AccessLog string `json:"access_log,omitempty"`
}

// Stats are a server's cumulative counters.
type Stats struct {
	// CPU is the user plus system time of the whole process, from
	// getrusage(RUSAGE_SELF).
	CPU time.Duration `json:"cpu_ns"`
	// Mallocs counts heap allocations (runtime.MemStats.Mallocs).
	Mallocs uint64 `json:"mallocs"`
	// AllocBytes counts bytes allocated on the heap.
	AllocBytes uint64 `json:"alloc_bytes"`
}

// StatsPath serves Stats as JSON.
const StatsPath = "/stats"

// ReadStats returns the counters of this process.
func ReadStats() (Stats, error) {
	cpu, err := ProcessCPU()
	if err != nil {
		return Stats{}, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Stats{CPU: cpu, Mallocs: ms.Mallocs, AllocBytes: ms.TotalAlloc}, nil
}

// ProcessCPU returns the CPU time, user and system, this process has used.
func ProcessCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// Serve starts the admin endpoint on addr and returns the address it is
// bound to. It serves until the process exits.
func Serve(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("admin: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StatsPath, func(w http.ResponseWriter, _ *http.Request) {
		st, err := ReadStats()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr().String(), nil
}

// Profile starts a CPU profile of this process, written to path by the
// returned stop function; an empty path profiles nothing.
func Profile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// Announce prints h on stdout, the signal that the server is ready.
func Announce(h Hello) error {
	return json.NewEncoder(os.Stdout).Encode(h)
}

// Client reads the stats of a server process.
type Client struct {
	url  string
	http *http.Client
}

// NewClient returns a client of the admin endpoint at addr.
func NewClient(addr string) *Client {
	return &Client{
		url:  "http://" + addr + StatsPath,
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
	}
}

// Stats fetches the server's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return Stats{}, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return Stats{}, err
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != http.StatusOK {
		return Stats{}, fmt.Errorf("admin: %s: %s", c.url, res.Status)
	}
	var st Stats
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return Stats{}, fmt.Errorf("admin: %s: %w", c.url, err)
	}
	return st, nil
}

// CreateAppend creates a file in dir, named after pattern as os.CreateTemp
// does, and returns it opened for appending, so that the harness can empty
// it (truncate) between cases while a server writes to it.
func CreateAppend(dir, pattern string) (*os.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		return nil, errors.Join(err, os.Remove(name))
	}
	f, err = os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, errors.Join(err, os.Remove(name))
	}
	return f, nil
}
