package goms_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/reversTeam/go-ms/goms"
)

const configDefaults = `
listeners:
  - {name: grpc, address: "127.0.0.1:1", mode: grpc}
shutdown_timeout: 1s
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "goms.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigFile(t *testing.T) {
	t.Parallel()
	cfg, err := goms.LoadConfig(nil, "testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := goms.Config{
		Listeners: []goms.Listener{
			{Name: "grpc", Addr: "127.0.0.1:42001", Mode: goms.ModeGRPC},
			{Name: "http", Addr: "127.0.0.1:8080", Mode: goms.ModeHTTP, MaxInFlight: 100, MinBodyRate: 1024, MinBodyRateGrace: 10 * time.Second},
		},
		ShutdownTimeout: 5 * time.Second,
		Log:             goms.Log{Format: "json", Level: slog.LevelWarn},
		Admin:           goms.Admin{Addr: "127.0.0.1:4242"},
	}
	if diff := cmp.Diff(want, cfg, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("LoadConfig (-want +got):\n%s", diff)
	}
	// What the file describes is a configuration New accepts.
	if _, err := goms.New(cfg); err != nil {
		t.Errorf("New(loaded config): %v", err)
	}
}

// TestLoadConfigPrecedence checks defaults < file < environment < overrides.
func TestLoadConfigPrecedence(t *testing.T) {
	file := writeConfig(t, `
listeners:
  - name: grpc
    address: 127.0.0.1:2
  - name: http
    address: 127.0.0.1:3
    mode: http
shutdown_timeout: 2s
drain_delay: 1s
`)
	tests := []struct {
		name string
		file string
		env  []string
		set  []string
		want func(*goms.Config)
	}{
		{"defaults only", "", nil, nil, func(c *goms.Config) {
			c.Listeners = []goms.Listener{{Name: "grpc", Addr: "127.0.0.1:1", Mode: goms.ModeGRPC}}
			c.ShutdownTimeout = time.Second
		}},
		{"file over defaults, listeners merged by name", file, nil, nil, func(c *goms.Config) {
			c.Listeners = []goms.Listener{
				{Name: "grpc", Addr: "127.0.0.1:2", Mode: goms.ModeGRPC},
				{Name: "http", Addr: "127.0.0.1:3", Mode: goms.ModeHTTP},
			}
			c.ShutdownTimeout = 2 * time.Second
			c.DrainDelay = time.Second
		}},
		{"environment over file", file, []string{
			"GOMS_SHUTDOWN_TIMEOUT=3s",
			"GOMS_LISTENERS__HTTP__ADDRESS=127.0.0.1:4",
			"GOMS_LOG__LEVEL=debug",
			"HOME=/ignored", "GOMSX=ignored",
		}, nil, func(c *goms.Config) {
			c.Listeners = []goms.Listener{
				{Name: "grpc", Addr: "127.0.0.1:2", Mode: goms.ModeGRPC},
				{Name: "http", Addr: "127.0.0.1:4", Mode: goms.ModeHTTP},
			}
			c.ShutdownTimeout = 3 * time.Second
			c.DrainDelay = time.Second
			c.Log.Level = slog.LevelDebug
		}},
		{"overrides over environment, new listener added", file, []string{"GOMS_SHUTDOWN_TIMEOUT=3s"}, []string{
			"shutdown_timeout=4s",
			"listeners.admin2.address=127.0.0.1:5",
			"reflection.listeners=[grpc, http]",
		}, func(c *goms.Config) {
			c.Listeners = []goms.Listener{
				{Name: "grpc", Addr: "127.0.0.1:2", Mode: goms.ModeGRPC},
				{Name: "http", Addr: "127.0.0.1:3", Mode: goms.ModeHTTP},
				{Name: "admin2", Addr: "127.0.0.1:5"},
			}
			c.ShutdownTimeout = 4 * time.Second
			c.DrainDelay = time.Second
			c.Reflection.Listeners = []string{"grpc", "http"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, tt.env)
			got, err := goms.LoadConfig([]byte(configDefaults), tt.file, tt.set...)
			if err != nil {
				t.Fatal(err)
			}
			var want goms.Config
			tt.want(&want)
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("LoadConfig (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadConfigStrict checks that each mistake is an error naming the key
// and where it came from.
func TestLoadConfigStrict(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		set  []string
		want []string // parts of the error
	}{
		{"unknown top-level key", "listners: []\n", nil, nil, []string{`goms.yaml:1`, `unknown key "listners"`, "listeners"}},
		{"unknown nested key", "listeners:\n  - name: a\n    adress: x\n", nil, nil, []string{`goms.yaml:3`, `unknown key "listeners.a.adress"`, "address"}},
		{"wrong type", "shutdown_timeout: soon\n", nil, nil, []string{`goms.yaml:1`, "shutdown_timeout", "soon", "time.Duration"}},
		{"wrong type in list", "listeners:\n  - name: a\n    max_in_flight: lots\n", nil, nil, []string{`goms.yaml:3`, "lots"}},
		{"duplicate listener", "listeners:\n  - name: a\n  - name: b\n  - name: a\n", nil, nil, []string{`goms.yaml:4`, `name "a" is already used at`, `goms.yaml:2`}},
		{"not a mapping", "- a\n- b\n", nil, nil, []string{"must be a mapping"}},
		{"bad YAML", "listeners: [\n", nil, nil, []string{"goms.yaml"}},
		{"unknown environment key", "", []string{"GOMS_SHUTDOWN_TIMOUT=1s"}, nil, []string{"environment variable GOMS_SHUTDOWN_TIMOUT", `unknown key "shutdown_timout"`}},
		{"environment type", "", []string{"GOMS_DRAIN_DELAY=never"}, nil, []string{"environment variable GOMS_DRAIN_DELAY", "never"}},
		{"override type", "", nil, []string{"listeners.grpc.max_in_flight=many"}, []string{"override listeners.grpc.max_in_flight=many", "many"}},
		{"override without value", "", nil, []string{"shutdown_timeout"}, []string{`want "key=value"`}},
		{"override naming an entry", "", nil, []string{"listeners.grpc=x"}, []string{"names an entry"}},
		{"override through a scalar", "", nil, []string{"shutdown_timeout.x=1"}, []string{"shutdown_timeout is not a mapping"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeConfig(t, tt.file)
			}
			setenv(t, tt.env)
			_, err := goms.LoadConfig([]byte(configDefaults), path, tt.set...)
			if err == nil {
				t.Fatal("LoadConfig succeeded, want an error")
			}
			for _, part := range tt.want {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not contain %q", err, part)
				}
			}
		})
	}
}

// FuzzLoadConfig feeds arbitrary documents and overrides to the loader: it
// must return a configuration or an error, never panic.
func FuzzLoadConfig(f *testing.F) {
	seed, err := os.ReadFile("testdata/config.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed), "shutdown_timeout=1s")
	f.Add("listeners: [{name: a}, {name: a}]", "listeners.a.mode=grpc")
	f.Add("log: {level: loud}", "listeners.b.address=x")
	f.Add("", "a.b.c=[1, {x: y}]")
	f.Fuzz(func(t *testing.T, doc, set string) {
		path := filepath.Join(t.TempDir(), "f.yaml")
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		// The set string also becomes an environment variable, when it can.
		if name, value, _ := strings.Cut("GOMS_"+strings.ToUpper(set), "="); !strings.ContainsRune(name+value, 0) && name != "GOMS_" {
			t.Setenv(name, value)
		}
		_, _ = goms.LoadConfig(nil, path, set)
	})
}

// setenv sets the "NAME=value" variables in env for the rest of the test,
// which LoadConfig reads; a test that calls it cannot run in parallel.
func setenv(t *testing.T, env []string) {
	t.Helper()
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
}
