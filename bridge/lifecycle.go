package bridge

import (
	"context"
	"net/http"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streams tracks the handler's live streams, for the concurrency limits
// and for a graceful shutdown. A mutex, not a sync.WaitGroup: streams may
// try to begin while Shutdown is already waiting, which a WaitGroup does
// not allow.
type streams struct {
	maxTotal     int // 0: no limit
	maxPerClient int // 0: no limit

	mu       sync.Mutex
	live     int
	byClient map[string]int // live streams per client address, for those with any
	// drainCtx is cancelled when the drain starts: SSE streams hang their
	// ending on it with context.AfterFunc, which costs no goroutine.
	drainCtx   context.Context
	startDrain context.CancelFunc
	idle       chan struct{} // closed when draining and no stream is live
}

// admission is the answer to a stream that wants to begin.
type admission uint8

const (
	admitted admission = iota
	refusedDraining
	refusedTotal
	refusedClient
)

func newStreams(maxTotal, maxPerClient int) *streams {
	drainCtx, startDrain := context.WithCancel(context.Background())
	return &streams{
		maxTotal:     maxTotal,
		maxPerClient: maxPerClient,
		byClient:     make(map[string]int),
		drainCtx:     drainCtx,
		startDrain:   startDrain,
		idle:         make(chan struct{}),
	}
}

// begin registers a new stream of client (an IP address; "" for callers
// that the per-client limit does not apply to) unless a limit or the drain
// refuses it. Every admitted stream must call end with the same client.
func (s *streams) begin(client string) admission {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.isDraining():
		return refusedDraining
	case s.maxTotal > 0 && s.live >= s.maxTotal:
		return refusedTotal
	case client != "" && s.maxPerClient > 0 && s.byClient[client] >= s.maxPerClient:
		return refusedClient
	}
	s.live++
	if client != "" {
		s.byClient[client]++
	}
	return admitted
}

// end unregisters a stream that begin admitted.
func (s *streams) end(client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live--
	if client != "" {
		if s.byClient[client]--; s.byClient[client] == 0 {
			delete(s.byClient, client) // the map holds live clients only
		}
	}
	if s.live == 0 && s.isDraining() {
		close(s.idle)
	}
}

// refusal is the status and HTTP status of a stream that begin refused.
// A full bridge and a draining one are transient: the client should retry,
// here later or at another replica. A client over its own limit is told so.
func (s *streams) refusal(a admission) (int, *status.Status) {
	switch a {
	case refusedDraining:
		return http.StatusServiceUnavailable, status.New(codes.Unavailable, "the bridge is shutting down")
	case refusedTotal:
		return http.StatusServiceUnavailable, status.Newf(codes.Unavailable, "the bridge is at its limit of %d concurrent streams", s.maxTotal)
	default:
		return http.StatusTooManyRequests, status.Newf(codes.ResourceExhausted, "this client is at its limit of %d concurrent streams", s.maxPerClient)
	}
}

// drain starts the drain once; streams watch drainCtx.
func (s *streams) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isDraining() {
		return
	}
	s.startDrain()
	if s.live == 0 {
		close(s.idle)
	}
}

func (s *streams) isDraining() bool {
	return s.drainCtx.Err() != nil
}

// Shutdown drains the handler for a graceful stop, as on SIGTERM: new
// streams are refused as transient (UNAVAILABLE: SSE gets a retry hint and
// an error event, so EventSource reconnects to another replica; a
// WebSocket handshake gets 503), every live SSE stream gets a retry: hint
// and ends, so the browser resumes it elsewhere with Last-Event-ID, and
// every live WebSocket gets status UNAVAILABLE and close code 1001.
// Native gRPC: the bridge's grpc.health.v1.Health turns NOT_SERVING (a
// watch gets NOT_SERVING, then UNAVAILABLE), new calls are refused with
// UNAVAILABLE, live calls that stream responses end with UNAVAILABLE, and
// unary and client-streaming calls may finish.
// Shutdown returns when no stream is live, or with ctx's error when ctx ends
// first.
//
// Call it before [net/http.Server.Shutdown], which does not wait for
// hijacked (WebSocket) connections and would wait for SSE streams forever.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.streams.drain()
	h.native.startDrain()
	select {
	case <-h.streams.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// MarkNotReady turns the bridge's own grpc.health.v1.Health NOT_SERVING
// (its watches see the change) while every call is still served: the gRPC
// counterpart of a readiness probe turning 503 at SIGTERM, so that gRPC
// clients and load balancers that health-check move away during a shutdown
// delay, before [Handler.Shutdown] refuses anything. Shutdown does it too;
// there is no way back, as a replica that began to stop does not recover.
func (h *Handler) MarkNotReady() { h.native.health.Shutdown() }

// ActiveStreams returns the number of streams (SSE, WebSocket, unary JSON
// and native gRPC calls, and sessions, each counting once however many
// calls it carries) open now.
func (h *Handler) ActiveStreams() int {
	h.streams.mu.Lock()
	defer h.streams.mu.Unlock()
	return h.streams.live
}
