package bridge

import (
	"context"
	"errors"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// One SSE response from the call's side: run relays an own call, relay
// a shared call's subscription, and end, handOff and finish end the stream
// (an end or error event, a retry hint, or a non-200 answer). serveSSE in
// handler_sse.go opens the stream; sse_out.go writes it.

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
