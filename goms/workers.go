package goms

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// workers runs the handlers of HTTP/2 requests on goroutines kept from
// one request to the next. net/http starts a goroutine per HTTP/2 stream,
// with a small stack that a connect handler grows several times per call
// (copying it each time: about a tenth of a unary call's CPU); a kept
// worker has grown its stack already. grpc-go's stream workers do the
// same. HTTP/1.1 needs none: its connection goroutine serves request
// after request.
//
// A request that finds no idle worker starts one, up to max; past that it
// runs on its own goroutine as net/http meant it to, so nothing ever
// queues behind a busy worker. Workers idle for workerIdle end.
type workers struct {
	jobs chan *job // unbuffered: a send succeeds only to an idle worker
	max  int32
	n    atomic.Int32
	// stop ends idle workers; once closed no worker starts.
	mu      sync.Mutex
	stop    chan struct{}
	stopped bool
}

// workerRequests is how many requests a worker serves before it ends and
// leaves its place to a new goroutine: a rare call that grew the stack
// far does not keep it grown for ever.
const workerRequests = 1 << 16

// workerIdle is how long a worker waits for a request before it ends:
// the workers a burst started do not outlive it by much.
const workerIdle = 2 * time.Second

// workersPerCPU sets the most workers a listener keeps per GOMAXPROCS.
const workersPerCPU = 64

func newWorkers() *workers {
	return &workers{
		jobs: make(chan *job),
		max:  int32(workersPerCPU * runtime.GOMAXPROCS(0)),
		stop: make(chan struct{}),
	}
}

// job is one request handed to a worker; done carries back a panic of the
// handler, nil when it returned.
type job struct {
	h    http.Handler
	w    http.ResponseWriter
	r    *http.Request
	done chan any
}

var jobPool = sync.Pool{New: func() any { return &job{done: make(chan any, 1)} }}

// serve runs h for the request on a worker and waits for it. A panic of
// the handler is raised again here, on net/http's goroutine, which
// handles it as its own (http.ErrAbortHandler included).
func (p *workers) serve(h http.Handler, w http.ResponseWriter, r *http.Request) {
	j := jobPool.Get().(*job)
	j.h, j.w, j.r = h, w, r
	select {
	case p.jobs <- j:
	default:
		if !p.start(j) {
			j.h, j.w, j.r = nil, nil, nil
			jobPool.Put(j)
			h.ServeHTTP(w, r)
			return
		}
	}
	v := <-j.done
	j.h, j.w, j.r = nil, nil, nil
	jobPool.Put(j)
	if v != nil {
		panic(v)
	}
}

// start starts a worker with j as its first job, unless there are max
// workers already or the pool is stopped.
func (p *workers) start(j *job) bool {
	if p.n.Add(1) > p.max {
		p.n.Add(-1)
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		p.n.Add(-1)
		return false
	}
	go p.work(j)
	return true
}

func (p *workers) work(j *job) {
	defer p.n.Add(-1)
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for i := 0; ; i++ {
		j.done <- run(j)
		if i == workerRequests {
			return
		}
		idle.Reset(workerIdle)
		select {
		case j = <-p.jobs:
		case <-idle.C:
			return
		case <-p.stop:
			return
		}
	}
}

// run serves one job and returns what the handler panicked with, if it
// did.
func run(j *job) (panicked any) {
	defer func() {
		if v := recover(); v != nil {
			panicked = v
		}
	}()
	j.h.ServeHTTP(j.w, j.r)
	return nil
}

// close ends the idle workers; busy ones end with their request.
func (p *workers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.stopped = true
		close(p.stop)
	}
}
