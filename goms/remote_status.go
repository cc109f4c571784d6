package goms

import (
	"time"

	"google.golang.org/grpc/connectivity"
)

// RemoteStatus is what a process's client of one remote service knows of
// it, as Server.Remotes reports it.
type RemoteStatus struct {
	// Name and Service are those of the Remote.
	Name, Service string
	// Calls counts the calls sent; Attempts the attempts they took
	// (retries and hedges included); Hedges the second attempts of hedged
	// calls; Throttled the calls failed at once by adaptive throttling;
	// Ejections the times outlier detection ejected an endpoint.
	Calls, Attempts, Hedges, Throttled, Ejections int64
	// Endpoints are the resolved addresses, sorted.
	Endpoints []EndpointStatus
}

// EndpointStatus is one address of a remote service.
type EndpointStatus struct {
	// Addr is the endpoint's host:port.
	Addr string
	// State is "ready" (connected, and its health check says SERVING),
	// "draining" (connected, and says NOT_SERVING: it gets calls only when
	// no endpoint is ready), "checking" (connected, its health not known
	// yet), "ejected" (left out by
	// outlier detection), "no_service" (connected, but does not serve the
	// service) or "unavailable" (not connected).
	State string
	// InFlight counts the calls in flight on it.
	InFlight int64
	// Latency is a moving average of its calls' latency.
	Latency time.Duration
}

// remotesStatus reports the state of the remotes of cfg, by service in
// remotes, in the order of cfg.
func remotesStatus(cfg []Remote, remotes map[string]*remote) []RemoteStatus {
	out := make([]RemoteStatus, 0, len(cfg))
	for _, rc := range cfg {
		r := remotes[rc.Service]
		if r == nil {
			continue
		}
		out = append(out, r.status())
	}
	return out
}

func (r *remote) status() RemoteStatus {
	st := RemoteStatus{
		Name: r.Name, Service: r.Service,
		Calls: r.stats.calls.Load(), Attempts: r.stats.attempts.Load(), Hedges: r.stats.hedges.Load(),
		Throttled: r.stats.throttled.Load(), Ejections: r.stats.ejections.Load(),
	}
	now := time.Now().UnixNano()
	// When no endpoint is connected grpc-go does not build a picker, and
	// the endpoints' records keep what the last one saw.
	connected := false
	r.ccMu.Lock()
	if r.cc != nil {
		connected = r.cc.GetState() == connectivity.Ready
	}
	r.ccMu.Unlock()
	for _, ep := range r.endpoints.all() {
		es := EndpointStatus{Addr: ep.addr, State: "unavailable", InFlight: ep.inFlight.Load()}
		switch {
		case !connected || !ep.ready.Load():
		case ep.ejected(now):
			es.State = "ejected"
		default:
			switch endpointHealth(ep.health.Load()) {
			case healthServing:
				es.State = "ready"
			case healthNoService:
				es.State = "no_service"
			case healthNotServing:
				es.State = "draining"
			default:
				es.State = "checking"
			}
		}
		es.Latency = time.Duration(ep.recent.Load())
		st.Endpoints = append(st.Endpoints, es)
	}
	return st
}
