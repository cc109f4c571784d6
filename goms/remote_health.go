package goms

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Health checks of remote endpoints: each connected endpoint is watched
// through grpc.health.v1's Watch for the remote's service, on its own
// connection, and the picker prefers the endpoints that say SERVING.
//
// grpc-go's own client-side health checking takes an endpoint out of picks
// as soon as it stops saying SERVING. When every endpoint does so at once,
// as the last replicas of a rolling update do while they drain and before
// the names hold their replacements, calls then fail although the draining
// processes still answer them. goms fails open instead, as Envoy's panic
// threshold does: with no serving endpoint left, calls go to those that
// drain or have not said yet, and only then to those that do not serve the
// service at all.

// endpointHealth is what an endpoint's health check last said.
type endpointHealth int32

const (
	// healthUnknown: not connected, or no answer yet.
	healthUnknown endpointHealth = iota
	// healthServing: SERVING, or the endpoint has no health service.
	healthServing
	// healthNotServing: NOT_SERVING, as while the process drains.
	healthNotServing
	// healthNoService: the process does not serve the service.
	healthNoService
)

func (h endpointHealth) String() string {
	switch h {
	case healthServing:
		return "serving"
	case healthNotServing:
		return "not_serving"
	case healthNoService:
		return "no_service"
	}
	return "unknown"
}

// rank orders endpoints for picks by health: lower is better.
func (h endpointHealth) rank() int {
	switch h {
	case healthServing:
		return 0
	case healthNoService:
		return 2
	}
	return 1
}

// healthBackoff bounds how often a failed Watch is started again.
const (
	healthMinBackoff = 100 * time.Millisecond
	healthMaxBackoff = time.Second
)

// watchHealth keeps ep.health up to date until ctx ends, which the picker
// builder does when the endpoint stops being connected.
func (t *endpointTable) watchHealth(ctx context.Context, ep *endpointState) {
	r := t.r
	backoff := healthMinBackoff
	for ctx.Err() == nil {
		err := t.watchOnce(ctx, ep, &backoff)
		if ctx.Err() != nil || errors.Is(err, ErrServerClosed) {
			return
		}
		switch status.Code(err) {
		case codes.Unimplemented:
			// A server without health checks (as grpc-go treats it):
			// serving while connected.
			t.setHealth(ep, healthServing, nil)
			r.env.logger.Info("goms: remote endpoint has no health service; taken as serving", "remote", r.Name, "endpoint", ep.addr)
			return
		case codes.NotFound:
			t.setHealth(ep, healthNoService, err)
		default:
			t.setHealth(ep, healthUnknown, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, healthMaxBackoff)
	}
}

// watchOnce runs one Watch on the endpoint's connection and returns why it
// ended.
func (t *endpointTable) watchOnce(ctx context.Context, ep *endpointState, backoff *time.Duration) error {
	cc, err := t.r.conn()
	if err != nil {
		return err // closed
	}
	ctx, cancel := context.WithCancel(withPickHint(ctx, &pickHint{want: ep.addr}))
	defer cancel()
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{Service: t.r.Service})
	if err != nil {
		return err
	}
	for {
		res, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "health watch ended")
			}
			return err
		}
		h := healthNotServing
		switch res.GetStatus() {
		case healthpb.HealthCheckResponse_SERVING:
			h = healthServing
		case healthpb.HealthCheckResponse_SERVICE_UNKNOWN:
			h = healthNoService
		}
		t.setHealth(ep, h, nil)
		*backoff = healthMinBackoff
	}
}

// setHealth records an endpoint's health; when it stops serving, the names
// are resolved again, since its replacement may already be in them.
func (t *endpointTable) setHealth(ep *endpointState, h endpointHealth, err error) {
	was := endpointHealth(ep.health.Swap(int32(h)))
	if was == h {
		return
	}
	if was == healthServing {
		t.r.resolveNow()
	}
	if was == healthServing || h == healthServing && was != healthUnknown {
		args := []any{"remote", t.r.Name, "endpoint", ep.addr, "health", h.String()}
		if err != nil {
			args = append(args, "err", err)
		}
		t.r.env.logger.Info("goms: remote endpoint health", args...)
	}
}
