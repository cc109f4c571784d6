package main

import (
	"regexp"
	"testing"

	"google.golang.org/grpc/encoding"

	"github.com/reversTeam/go-ms/bench/internal/load"
)

func TestMedianOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := medianOf(tc.in); got != tc.want {
			t.Errorf("medianOf(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRatioIsTheMedianOfRoundRatios(t *testing.T) {
	t.Parallel()
	a := []sample{{throughput: 10}, {throughput: 30}, {throughput: 100}}
	b := []sample{{throughput: 10}, {throughput: 10}, {throughput: 10}}
	thr := func(s sample) float64 { return s.throughput }
	if got, ok := ratio(a, b, thr); !ok || got != 3 {
		t.Errorf("ratio = %v, %v; want 3", got, ok)
	}
	if _, ok := ratio(a, b[:2], thr); ok {
		t.Error("ratio of unpaired rounds is ok")
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	runs := plan(nil)
	seen := make(map[caseRun]bool)
	for _, c := range runs {
		if !c.kind.Serves(c.protocol) {
			t.Errorf("%s: the server does not serve the protocol", c.name())
		}
		if seen[c] {
			t.Errorf("%s twice", c.name())
		}
		seen[c] = true
	}
	if !seen[caseRun{0, load.ConnectJSONHTTP1, KindGateway}] || !seen[caseRun{0, load.GRPC, KindGomsEngine}] {
		t.Error("the plan lacks the reference cases")
	}
	for _, k := range []Kind{KindGomsDefault, KindGomsObserved, KindGoms} {
		for i, sc := range scenarios() {
			for _, p := range sc.protocols {
				if want := i == 0 || k == KindGomsDefault; seen[caseRun{i, p, k}] != want {
					t.Errorf("%s measured in %s, %s: %v, want %v", k, sc, p, !want, want)
				}
			}
		}
	}
	only := plan(regexp.MustCompile(`/gRPC, h2c/grpcgo$`))
	if len(only) != len(scenarios()) {
		t.Errorf("filtered plan has %d runs, want one per scenario", len(only))
	}
}

func TestParseCPUs(t *testing.T) {
	t.Parallel()
	if got, err := parseCPUs("0, 2"); err != nil || len(got) != 2 || got[1] != 2 {
		t.Errorf("parseCPUs = %v, %v", got, err)
	}
	if _, err := parseCPUs("x"); err == nil {
		t.Error("parseCPUs(x) succeeded")
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	if got, want := commandLine([]string{"-out", "../docs/benchmarks.md"}), "`cd bench && go run ./cmd/bench -out ../docs/benchmarks.md`, which `make bench` runs"; got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
	if got, want := commandLine([]string{"-run", "a b$"}), "`cd bench && go run ./cmd/bench -run 'a b$'`"; got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
}

// TestNoCompressorLinked checks that the harness links no gRPC compressor:
// its grpc-go client would offer it, and connect-go servers would then
// compress every response, which the benchmark does not measure.
func TestNoCompressorLinked(t *testing.T) {
	t.Parallel()
	if c := encoding.GetCompressor("gzip"); c != nil {
		t.Error("a gzip compressor is registered: something links google.golang.org/grpc/encoding/gzip (goms does)")
	}
}
