package goms

import (
	"context"
	"errors"
	"sync"
	"time"

	"connectrpc.com/grpchealth"
)

// A Server's life after Listen: Serve runs the listeners until its context
// ends or Close is called, then drains and shuts down.

// Serve listens (unless Listen was called), serves every listener, and
// blocks until ctx ends or a listener fails. Then it shuts down:
//
//  1. /readyz answers 503 and every health status turns NOT_SERVING, and
//     the server goes on serving for Config.DrainDelay;
//  2. the listeners stop accepting, idle connections close, and HTTP/2
//     clients receive GOAWAY;
//  3. calls in flight get Config.ShutdownTimeout to finish;
//  4. calls still running then see their context cancelled, and those in
//     handlers built with HandlerOptions end with CodeUnavailable; their
//     responses get a moment to flush before connections are closed.
//
// Serve returns nil when ctx ended and the shutdown went through, or when
// Close stopped the server; the listener's error when one failed; and
// ErrServerClosed when the server was already closed.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st == stateNew {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if s.state != stateListening {
		defer s.mu.Unlock()
		if s.state == stateClosed || s.state == stateShuttingDown {
			return ErrServerClosed
		}
		return errors.New("goms: Serve called twice")
	}
	s.state = stateServing
	errc := make(chan error, len(s.listeners))
	for _, l := range s.listeners {
		go func() { errc <- l.serve() }()
		s.logger.Info("goms: listening", "listener", l.Name, "addr", l.ln.Addr().String(), "mode", string(l.Mode), "tls", l.tlsConfig != nil)
	}
	s.setServing()
	remotes, stopRemotes := context.WithCancel(context.Background())
	s.stopRemotes = stopRemotes
	for _, r := range s.remotes {
		go r.run(remotes)
	}
	if s.status != nil {
		s.status.run(s.base)
	}
	s.mu.Unlock()

	var err error
	select {
	case <-ctx.Done():
	case <-s.closing.Done():
	case err = <-errc:
		s.logger.Error("goms: listener failed", "err", err)
	}
	s.shutdown()
	return err
}

// setServing reports every mounted service SERVING, except those given
// another status through SetHealth. Called with s.mu held.
func (s *Server) setServing() {
	for _, l := range s.listeners {
		for _, name := range l.mux.names {
			s.health.SetStatus(name, grpchealth.StatusServing)
		}
	}
	s.health.SetStatus("", grpchealth.StatusServing)
	for name, st := range s.userHealth {
		s.health.SetStatus(name, st)
	}
	s.ready.Store(true)
}

// shutdown drains and stops every listener, as Serve documents. Close cuts
// it short.
func (s *Server) shutdown() {
	s.mu.Lock()
	if s.state == stateClosed || s.state == stateShuttingDown {
		s.mu.Unlock()
		return
	}
	s.state = stateShuttingDown
	s.ready.Store(false)
	for _, l := range s.listeners {
		for _, name := range l.mux.names {
			s.health.SetStatus(name, grpchealth.StatusNotServing)
		}
	}
	for name := range s.userHealth {
		s.health.SetStatus(name, grpchealth.StatusNotServing)
	}
	s.health.SetStatus("", grpchealth.StatusNotServing)
	s.mu.Unlock()
	s.logger.Info("goms: shutting down", "grace", s.cfg.ShutdownTimeout)
	defer func() {
		s.mu.Lock()
		s.state = stateClosed
		s.mu.Unlock()
		// Outgoing connections close last: draining calls may use them.
		if s.stopRemotes != nil {
			s.stopRemotes()
		}
		s.closeAccessFile()
	}()

	if s.cfg.DrainDelay > 0 {
		select {
		case <-time.After(s.cfg.DrainDelay):
		case <-s.closing.Done():
		}
	}
	grace, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	stopGrace := context.AfterFunc(s.closing, cancel) // Close ends the grace period
	defer stopGrace()
	if s.shutdownAll(grace) {
		s.cancelBase(errShuttingDown)
		s.logger.Info("goms: stopped")
		return
	}
	// The grace period is over: end what still runs, let the statuses
	// flush, then close whatever is left.
	s.cancelBase(errShuttingDown)
	s.logger.Warn("goms: grace period over, cancelling the calls still running")
	flush, cancelFlush := context.WithTimeout(context.Background(), flushTimeout)
	defer cancelFlush()
	stopFlush := context.AfterFunc(s.closing, cancelFlush)
	defer stopFlush()
	if !s.shutdownAll(flush) {
		for _, l := range s.listeners {
			l.close()
		}
	}
	s.logger.Info("goms: stopped")
}

// shutdownAll shuts every listener down in parallel and reports whether
// all of them finished before ctx ended.
func (s *Server) shutdownAll(ctx context.Context) bool {
	var wg sync.WaitGroup
	done := make([]bool, len(s.listeners))
	for i, l := range s.listeners {
		wg.Go(func() { done[i] = l.shutdown(ctx) })
	}
	wg.Wait()
	for _, ok := range done {
		if !ok {
			return false
		}
	}
	return true
}

// Close stops the server at once: listeners and connections close and
// calls in flight fail. Serve, if running, returns nil, even when it is
// draining. Prefer cancelling Serve's context, which drains calls first.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.state
	if prev == stateClosed {
		return nil
	}
	s.state = stateClosed
	s.ready.Store(false)
	s.cancelBase(errShuttingDown)
	s.cancelClosing()
	if s.stopRemotes != nil {
		s.stopRemotes()
	}
	s.closeRemotes()
	defer s.closeAccessFile()
	var errs []error
	for _, l := range s.listeners {
		if prev == stateServing || prev == stateShuttingDown {
			l.close()
		} else if l.ln != nil {
			errs = append(errs, l.ln.Close())
		}
	}
	return errors.Join(errs...)
}

// closeRemotes closes the clients of the remotes.
func (s *Server) closeRemotes() {
	for _, r := range s.remotes {
		r.close()
	}
}

// closeAccessFile writes out the access log file's buffer and closes it.
func (s *Server) closeAccessFile() {
	if s.accessFile == nil {
		return
	}
	if err := s.accessFile.close(); err != nil {
		s.logger.Error("goms: log.access_file: closing", "err", err)
	}
}

// flushTimeout bounds the wait, after calls were cancelled, for their final
// statuses to reach the clients before connections are closed.
const flushTimeout = 2 * time.Second
