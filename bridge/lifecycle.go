package bridge

import (
	"context"
	"sync"
)

// streams tracks the handler's live streams for a graceful shutdown. A
// mutex, not a sync.WaitGroup: streams may try to begin while Shutdown is
// already waiting, which a WaitGroup does not allow.
type streams struct {
	mu       sync.Mutex
	live     int
	draining chan struct{} // closed when the drain starts
	idle     chan struct{} // closed when draining and no stream is live
}

func newStreams() *streams {
	return &streams{draining: make(chan struct{}), idle: make(chan struct{})}
}

// begin registers a new stream; false means the handler is draining and
// the stream must not start.
func (s *streams) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isDraining() {
		return false
	}
	s.live++
	return true
}

// end unregisters a stream that begin registered.
func (s *streams) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live--
	if s.live == 0 && s.isDraining() {
		close(s.idle)
	}
}

// drain starts the drain once; streams watch the draining channel.
func (s *streams) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isDraining() {
		return
	}
	close(s.draining)
	if s.live == 0 {
		close(s.idle)
	}
}

func (s *streams) isDraining() bool {
	select {
	case <-s.draining:
		return true
	default:
		return false
	}
}

// Shutdown drains the handler for a graceful stop, as on SIGTERM: new
// streams are refused as transient (UNAVAILABLE: SSE gets a retry hint and
// an error event, so EventSource reconnects to another replica; a
// WebSocket handshake gets 503), every live SSE stream gets a retry: hint
// and ends, so the browser resumes it elsewhere with Last-Event-ID, and
// every live WebSocket gets status UNAVAILABLE and close code 1001.
// Shutdown returns when no stream is live, or with ctx's error when ctx ends
// first.
//
// Call it before [net/http.Server.Shutdown], which does not wait for
// hijacked (WebSocket) connections and would wait for SSE streams forever.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.streams.drain()
	select {
	case <-h.streams.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
