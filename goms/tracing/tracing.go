// Package tracing traces the calls of goms servers and of their clients with
// OpenTelemetry, through connectrpc.com/otelconnect, and exports the spans
// over OTLP (gRPC or HTTP) to a collector, Jaeger or any OTLP receiver.
//
//	tr, err := tracing.New(ctx, tracing.Config{ServiceName: "child"})
//	if err != nil {
//		return err
//	}
//	defer tr.Shutdown(context.Background()) // flushes the last spans
//	srv, err := goms.New(goms.Config{Listeners: listeners, Plugins: []goms.Plugin{tr}})
//
// Tracing is off unless Config or the standard OTEL_* environment
// variables name an endpoint. Calls carry W3C trace context
// (traceparent, tracestate) and baggage: a server span continues the trace
// of its caller, and clients built with Server.ClientOptions pass the
// trace on, so that a call through several processes is one trace.
package tracing

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/reversTeam/go-ms/goms"
)

// The OTLP protocols Config.Protocol accepts.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Config configures tracing. Its zero value leaves everything to the
// standard OTEL_* environment variables, and so is off unless they name
// an endpoint. A field that is set wins over the environment.
type Config struct {
	// Enabled turns tracing on even without an endpoint, exporting to
	// the exporter's default: localhost:4318 (http/protobuf) or
	// localhost:4317 (grpc).
	Enabled bool `yaml:"enabled"`
	// Endpoint is where spans go: "host:port", or a URL such as
	// "http://collector:4318/v1/traces" for http/protobuf. Setting it
	// turns tracing on. Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
	// OTEL_EXPORTER_OTLP_ENDPOINT; tracing is off when neither is set.
	Endpoint string `yaml:"endpoint"`
	// Protocol is ProtocolGRPC or ProtocolHTTPProtobuf. Default:
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL,
	// else http/protobuf.
	Protocol string `yaml:"protocol"`
	// Insecure sends spans in cleartext (no TLS). Default: TLS, unless
	// the endpoint URL is http:// or OTEL_EXPORTER_OTLP_INSECURE says
	// otherwise.
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the fraction of new traces recorded, from 0 to 1;
	// calls whose caller sent a sampled trace follow their caller's
	// choice. Nil means OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG,
	// whose default records every trace.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name of the spans. Default:
	// OTEL_SERVICE_NAME, else "unknown_service:" and the program name.
	ServiceName string `yaml:"service_name"`
	// UntrustedCallers makes each server span start a new trace, linked
	// to the caller's span instead of continuing its trace: for servers
	// that face callers outside the system. Default false.
	UntrustedCallers bool `yaml:"untrusted_callers"`
}

// enabled reports whether cfg or the environment turns tracing on.
func (c Config) enabled() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || os.Getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return c.Enabled || c.Endpoint != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

func (c Config) protocol() (string, error) {
	p := c.Protocol
	for _, env := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p == "" {
			p = os.Getenv(env)
		}
	}
	switch p {
	case "", ProtocolHTTPProtobuf:
		return ProtocolHTTPProtobuf, nil
	case ProtocolGRPC:
		return ProtocolGRPC, nil
	}
	return "", fmt.Errorf("goms/tracing: protocol %q: want %q or %q", p, ProtocolGRPC, ProtocolHTTPProtobuf)
}

// Tracing is the tracing plugin, a goms.ClientPlugin named
// "tracing". Create it with New.
type Tracing struct {
	provider    trace.TracerProvider
	sdk         *sdktrace.TracerProvider // the provider New made, if any
	interceptor connect.Interceptor
	server      connect.Interceptor // the server side, when it differs
}

var _ goms.ClientPlugin = (*Tracing)(nil)

// Option configures New.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	provider trace.TracerProvider
}

// WithTracerProvider traces with tp, for programs that set up the
// OpenTelemetry SDK themselves; the exporter settings of Config are then
// unused and Shutdown leaves tp alone. Tracing is on whatever Config says.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.provider = tp })
}

// New returns the tracing plugin. When tracing is off, its interceptors
// pass calls through untouched: they neither record spans nor propagate
// trace context. Configuration errors name the field at fault.
func New(ctx context.Context, cfg Config, opts ...Option) (*Tracing, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	t := &Tracing{provider: o.provider}
	if t.provider == nil {
		if cfg.SampleRatio != nil && (*cfg.SampleRatio < 0 || *cfg.SampleRatio > 1) {
			return nil, fmt.Errorf("goms/tracing: sample_ratio: %v is not between 0 and 1", *cfg.SampleRatio)
		}
		protocol, err := cfg.protocol()
		if err != nil {
			return nil, err
		}
		if !cfg.enabled() {
			t.interceptor, t.server = passThrough{}, passThrough{}
			return t, nil
		}
		sdk, err := newProvider(ctx, cfg, protocol)
		if err != nil {
			return nil, err
		}
		t.provider, t.sdk = sdk, sdk
	}
	ocOpts := []otelconnect.Option{
		otelconnect.WithTracerProvider(t.provider),
		otelconnect.WithPropagator(Propagator()),
		otelconnect.WithoutMetrics(), // goms/prom records metrics
		otelconnect.WithFilter(traced),
	}
	if !cfg.UntrustedCallers {
		ocOpts = append(ocOpts, otelconnect.WithTrustRemote())
	}
	ic, err := otelconnect.NewInterceptor(ocOpts...)
	if err != nil {
		return nil, fmt.Errorf("goms/tracing: %w", err)
	}
	t.interceptor = ic
	t.server = ic
	if t.sdk != nil && cfg.SampleRatio != nil && *cfg.SampleRatio == 0 {
		t.server = unsampledServer{traced: ic}
	}
	return t, nil
}

// Propagator returns the propagator goms uses: W3C trace context and W3C
// baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// traced keeps health checks and reflection out of traces: they are
// frequent and say nothing about the application.
func traced(_ context.Context, spec connect.Spec) bool {
	service, _, _ := strings.Cut(strings.TrimPrefix(spec.Procedure, "/"), "/")
	switch service {
	case grpchealth.HealthV1ServiceName, grpcreflect.ReflectV1ServiceName, grpcreflect.ReflectV1AlphaServiceName:
		return false
	}
	return true
}

func newProvider(ctx context.Context, cfg Config, protocol string) (*sdktrace.TracerProvider, error) {
	var client otlptrace.Client
	switch protocol {
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if strings.Contains(cfg.Endpoint, "://") {
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		} else if cfg.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		client = otlptracegrpc.NewClient(opts...)
	default:
		var opts []otlptracehttp.Option
		if strings.Contains(cfg.Endpoint, "://") {
			opts = append(opts, otlptracehttp.WithEndpointURL(cfg.Endpoint))
		} else if cfg.Endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		client = otlptracehttp.NewClient(opts...)
	}
	// The exporter connects lazily: a collector that is down costs dropped
	// spans, not a failed start.
	exporter, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("goms/tracing: exporter: %w", err)
	}
	// Later detectors win: the config over the environment over the
	// default name. (resource.Default would read the environment only
	// once per process.)
	detectors := []resource.Option{
		resource.WithAttributes(attribute.String("service.name", "unknown_service:"+filepath.Base(os.Args[0]))),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	}
	if cfg.ServiceName != "" {
		detectors = append(detectors, resource.WithAttributes(attribute.String("service.name", cfg.ServiceName)))
	}
	res, err := resource.New(ctx, detectors...)
	if err != nil {
		return nil, fmt.Errorf("goms/tracing: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithBatcher(exporter),
		sdktrace.WithResource(res),
	}
	if cfg.SampleRatio != nil {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*cfg.SampleRatio))))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

// Name returns "tracing".
func (t *Tracing) Name() string { return "tracing" }

// Interceptor returns the interceptor that makes the server spans.
func (t *Tracing) Interceptor() connect.Interceptor { return t.server }

// ClientInterceptor returns the interceptor that makes the client spans
// and sends the trace context along.
func (t *Tracing) ClientInterceptor() connect.Interceptor { return t.interceptor }

// Enabled reports whether the plugin traces.
func (t *Tracing) Enabled() bool { return t.provider != nil }

// TracerProvider returns the provider spans are made with, nil when
// tracing is off. Pass it to go.opentelemetry.io/otel.SetTracerProvider
// to trace other libraries with it too.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Shutdown exports the spans still buffered and stops the provider New
// made, waiting at most until ctx ends. Spans ended afterwards are
// dropped. It does nothing when tracing is off or the provider came from
// WithTracerProvider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("goms/tracing: shutdown: %w", err)
	}
	return nil
}

// passThrough is the interceptor of a Tracing that is off.
type passThrough struct{}

func (passThrough) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (passThrough) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (passThrough) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
