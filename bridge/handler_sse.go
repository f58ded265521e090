package bridge

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// serveSSE serves one call of m as an event stream, for caller c that
// admitBrowser admitted.
func (h *Handler) serveSSE(w http.ResponseWriter, r *http.Request, m *method, c browserCaller, pathParams map[string]string, b binding) {
	if m.streamDesc.ClientStreams {
		h.writeError(w, http.StatusBadRequest, status.Newf(codes.InvalidArgument,
			"%s is a client-streaming method: open it as a WebSocket with subprotocol %s", m.name, wsSubprotocol))
		return
	}
	req, rerr := h.readRequest(w, r, m, pathParams, b)
	if rerr != nil {
		h.writeError(w, rerr.httpStatus, rerr.st)
		return
	}
	md, timeout, err := h.browserMetadata(r, c)
	if err != nil {
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	// A shared method's key is taken before a resume changes the request
	// and the metadata. A call with its own deadline is not shared: the
	// deadline belongs to one caller.
	var (
		key      sharedKey
		sharedMD metadata.MD
		share    = m.shared != nil && timeout == noTimeout
	)
	if share {
		if key, sharedMD, err = sharedKeyOf(req, md); err != nil {
			share = false // not encodable: the call of its own reports it
		}
	}
	nextSeq, rerr := h.resume(r, m, req, md)
	if rerr != nil {
		h.writeError(w, rerr.httpStatus, rerr.st)
		return
	}

	client := h.clientIP(r)
	start := time.Now()
	if a := h.streams.begin(client); a != admitted {
		// A final refusal is a non-200 answer; a transient one (full or
		// draining) keeps the browser's EventSource retrying.
		_, st := h.streams.refusal(a)
		out := newSSEOut(h, w, m.name)
		(&sseStream{h: h, out: out}).finish(st, nil)
		out.close()
		h.logStreamEnd(r.Context(), r.RemoteAddr, streamEnd{method: m.name, transport: TransportSSE, st: st, start: start})
		return
	}
	// The stream's context ends it from outside the call, with the reason
	// as its cause: the browser leaving, the drain, the maximum duration, a
	// failed write. Every path cancels it, which ends the upstream call.
	out := newSSEOut(h, w, m.name)
	hijacked := r.ProtoMajor == 1 && !h.cfg.sseNoHijack && out.hijack()
	out.compress(r, m)
	base := r.Context()
	if hijacked {
		// net/http cancels the request's context when the handler returns,
		// which it does at once after a hijack: the stream keeps its
		// values only.
		base = context.WithoutCancel(base)
	}
	ctx, cancel := context.WithCancelCause(base)
	out.fail = cancel
	s := &sseStream{h: h, out: out}
	// What serve needs of the request, taken now: a hijacked stream must
	// not keep the request, whose body holds net/http's buffers.
	peer, lastID := r.RemoteAddr, r.Header.Get(headerLastEventID)
	stopDrain := context.AfterFunc(h.streams.drainCtx, func() { cancel(errDraining) })
	stopExpiry := func() bool { return false } // no maximum duration
	if d := h.cfg.maxStreamDuration; d > 0 {
		stopExpiry = time.AfterFunc(h.cfg.streamLifetime(d), func() { cancel(errMaxDurationLimit) }).Stop
	}
	out.watch(func() { cancel(errPeerGone) })
	out.startHeartbeat()
	// The call is opened (or the shared call joined) here, where the stack
	// is deep already: a hijacked stream's own goroutine then grows only
	// to what relaying takes, which is what it keeps while it is idle.
	// Without a deadline the stream's own context serves the call: a
	// context less per idle stream.
	callCtx, cancelCall := ctx, func() {}
	if timeout != noTimeout {
		callCtx, cancelCall = context.WithTimeout(ctx, timeout)
	}
	var (
		sub    *sharedSub
		stream grpc.ClientStream
		st     *status.Status
	)
	func() {
		// net/http would recover a panic here (in the program's Metrics, in
		// the backend's NewStream) but leave the stream behind (its count,
		// its call, a connection taken over): end it instead.
		defer h.recoverStream(m.name, TransportSSE, func(p *status.Status) {
			st = p
			if s.obs == nil {
				s.obs = noMetrics{}
			}
		})
		s.obs = h.cfg.metrics.StreamStarted(m.name, TransportSSE, lastID != "")
		s.obs.MessageReceived(proto.Size(req))
		if share {
			sub = m.shared.subscribe(h, m, key, req, sharedMD, lastID)
		}
		if sub == nil {
			stream, st = openServerStream(metadata.NewOutgoingContext(callCtx, md), m, req)
		}
	}()
	serve := func() {
		// Every defer is in this one frame, which the idle stream keeps:
		// a deeper stack would double the stack an idle stream holds.
		defer h.recoverStream(m.name, TransportSSE, nil) // in the ending: a Metrics or slog hook, the close
		defer h.streams.end(client)
		defer cancel(errNotServed)
		defer out.close()
		defer func() {
			s.obs.StreamEnded(st.Code(), 0, s.slow)
			h.logStreamEnd(ctx, peer, streamEnd{method: m.name, transport: TransportSSE, st: st, start: start, messages: s.messages})
		}()
		defer func() {
			cancelCall()
			stopExpiry()
			stopDrain()
		}()
		defer h.recoverStream(m.name, TransportSSE, func(p *status.Status) { st = s.end(ctx, p, nil) })
		switch {
		case sub != nil:
			st = func() *status.Status {
				defer sub.leave() // the last to leave ends the shared call
				return s.relay(ctx, sub.items)
			}()
		case st != nil:
			st = s.end(ctx, st, nil)
		default:
			st = s.run(ctx, stream, m, nextSeq)
		}
	}
	if hijacked {
		// The handler returns, and net/http lets go of the connection's
		// goroutines and buffers; the stream goes on by itself.
		go serve()
		return
	}
	serve()
}

// resume applies a Last-Event-ID header: it forwards the id as the
// last-event-id metadata entry, sets the method's resume field from it, and
// returns the sequence number of the first event when the method has no
// cursor field (the per-stream sequence continues after the last id).
func (h *Handler) resume(r *http.Request, m *method, req proto.Message, md metadata.MD) (uint64, *requestError) {
	last := r.Header.Get(headerLastEventID)
	if last == "" {
		return 1, nil
	}
	if len(last) > maxLastEventIDBytes {
		return 0, badRequest("Last-Event-ID is %d bytes long; the limit is %d", len(last), maxLastEventIDBytes)
	}
	if !isPrintableASCII(last) {
		return 0, badRequest("Last-Event-ID must be printable ASCII")
	}
	md[mdLastEventID] = []string{last}
	if m.resume != nil {
		if err := setScalar(req, m.resume, last); err != nil {
			return 0, badRequest("Last-Event-ID %q is not a valid %s for %s: %v", last, m.resume.Kind(), m.resume.Name(), err)
		}
	}
	if m.cursor == nil {
		if n, err := strconv.ParseUint(last, 10, 64); err == nil && n < 1<<63 {
			return n + 1, nil
		}
	}
	return 1, nil
}
