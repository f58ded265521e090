package bridge

import (
	"context"
	"errors"
	"net/http"
	"os"
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

// sseStream is one SSE response: the call (or the shared call's
// subscription) on one side, the browser (sseOut) on the other.
type sseStream struct {
	h        *Handler
	out      *sseOut
	messages int
	slow     bool // a write to the browser timed out, or the browser fell behind a shared call
	obs      StreamObserver
}

// run relays the call until it ends, and returns its final status. It
// runs on one goroutine, the stream's only one while the call is quiet.
// ctx is the stream's context.
func (s *sseStream) run(ctx context.Context, stream grpc.ClientStream, m *method, nextSeq uint64) *status.Status {
	h := s.h
	// Header blocks until the backend sends headers or ends the call; nil
	// means it ended without headers (a trailers-only response), whose
	// status RecvMsg returns next.
	if hdr, _ := stream.Header(); hdr != nil {
		if err := s.out.event("", sseEventHeaders, h.headersJSON(hdr)); err != nil {
			return s.end(ctx, nil, nil)
		}
	}
	// Each response's JSON is encoded into a buffer borrowed for that
	// moment only, and copied into the pending events. The writer takes
	// everything pending when it gets to it: messages that arrive meanwhile
	// share its next write.
	enc := newResponseEncoder(h, m)
	var f rawFrame
	for {
		wire, st := m.recvWire(stream, &f)
		if st != nil {
			return s.end(ctx, st, stream.Trailer())
		}
		buf := getSSEBuf()
		data, id, err := enc.encode(buf, wire, nextSeq)
		f.free()
		if err != nil {
			putSSEBuf(data)
			return s.end(ctx, status.Convert(err), nil)
		}
		err = s.out.event(id, sseEventMessage, data)
		putSSEBuf(data)
		if err != nil {
			return s.end(ctx, nil, nil)
		}
		nextSeq++
		s.messages++
		s.obs.MessageSent(len(data))
	}
}

// relay writes the events of a shared call's subscription until it ends,
// and returns its final status. It writes on its own goroutine, when no
// further event is queued: the subscription's queue is the backpressure.
func (s *sseStream) relay(ctx context.Context, items <-chan *sseItem) *status.Status {
	s.out.inline = true
	done := ctx.Done()
	for {
		select {
		case it := <-items:
			var err error
			switch it.kind {
			case itemHeaders:
				err = s.out.event("", sseEventHeaders, it.data)
			case itemFrame:
				if err = s.out.frame(it.data); err == nil {
					s.messages++
					s.obs.MessageSent(it.size)
				}
			case itemStatus:
				return s.end(ctx, it.st, it.trailers)
			case itemDropped:
				// Falling behind is not the stream's fault, and a reconnect
				// catches up: a retry hint even though the code is not
				// transient.
				s.slow = true
				s.finishEvent(it.st, nil, true, false)
				return it.st
			case itemHandOff:
				return s.handOff("the bridge is shutting down")
			}
			if err != nil {
				return s.end(ctx, nil, nil)
			}
			if len(items) == 0 {
				s.out.flush()
			}
		case <-done:
			if errors.Is(context.Cause(ctx), errDraining) {
				// The shared call drains too, and its last item (the
				// hand-off, or its end) is on its way: every subscriber
				// writes up to it, so that all resume from the same id.
				done = nil
				continue
			}
			return s.end(ctx, nil, nil)
		}
	}
}

// end ends the stream and returns its final status: st, the call's, or,
// when the stream's context ended first (st may be nil then), the ending
// that its cause asks for.
func (s *sseStream) end(ctx context.Context, st *status.Status, trailers metadata.MD) *status.Status {
	if ctx.Err() != nil {
		var werr writeError
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errDraining):
			return s.handOff("the bridge is shutting down")
		case errors.Is(cause, errMaxDurationLimit):
			return s.handOff("the stream reached its maximum duration")
		case errors.Is(cause, errPanicked): // logged and counted by recoverStream
			return status.New(codes.Internal, "internal error in the bridge")
		case errors.As(cause, &werr):
			s.slow = errors.Is(werr.err, os.ErrDeadlineExceeded)
			return status.New(codes.Unavailable, werr.Error())
		default:
			return status.New(codes.Canceled, errPeerGone.Error())
		}
	}
	if st == nil { // cannot happen: a failed write cancels ctx first
		st = status.New(codes.Unavailable, "write to client failed")
	}
	s.finish(st, trailers)
	return st
}

// handOff ends a healthy stream so that the browser resumes it, perhaps
// at another replica: a retry hint and no end event, so EventSource
// reconnects after the retry time with Last-Event-ID.
func (s *sseStream) handOff(reason string) *status.Status {
	retry := s.h.cfg.retryInterval
	s.out.final(func(o *sseOut) {
		o.commitLocked()
		o.pending = appendRetry(o.pending, retry)
		o.pending = append(o.pending, '\n')
	})
	return status.New(codes.Unavailable, reason)
}

// finish ends the stream with st. Before the stream is committed, a final
// error is a non-200 JSON answer; otherwise, and for transient errors even
// before the first byte, it is an end or error event, with a retry hint
// first for transient errors so that the browser reconnects.
func (s *sseStream) finish(st *status.Status, trailers metadata.MD) {
	s.finishEvent(st, trailers, isTransient(st.Code()), true)
}

// finishEvent ends the stream with st as an end or error event, with a
// retry hint first when retry is set and st is an error. With answer, a
// final error before the stream is committed is a non-200 answer instead.
func (s *sseStream) finishEvent(st *status.Status, trailers metadata.MD, retry, answer bool) {
	data := marshalStatus(s.h.codec, st, s.h.responseMD.responseMetadata(trailers))
	interval := s.h.cfg.retryInterval
	s.out.final(func(o *sseOut) {
		if answer && !o.committed && st.Code() != codes.OK && !isTransient(st.Code()) {
			o.answerLocked(st)
			return
		}
		o.commitLocked()
		event := sseEventEnd
		if st.Code() != codes.OK {
			event = sseEventError
			if retry {
				o.pending = appendRetry(o.pending, interval)
			}
		}
		o.pending = appendEvent(o.pending, "", event, data)
	})
}
