package bridge

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// sseFlushBytes bounds the events that the writer batches before it
// flushes even though more are queued: enough to fill a TCP segment or an
// HTTP/2 frame, small enough that memory per stream stays bounded.
const sseFlushBytes = 32 << 10

// sseItem is what a receiver goroutine hands to the writer: the backend's
// response headers, one encoded message, or the final status. Items of a
// shared call are shared by its subscribers and read-only.
type sseItem struct {
	kind     sseItemKind
	id       string // event id of a message
	data     []byte // JSON of a message or of the headers; a whole event for itemFrame
	size     int    // itemFrame: the size of the message's JSON
	st       *status.Status
	trailers metadata.MD
}

type sseItemKind uint8

const (
	itemHeaders sseItemKind = iota + 1
	itemMessage
	itemFrame   // a message event of a shared call, framed once for every subscriber
	itemStatus  // the final status
	itemDropped // a shared call's subscriber fell behind: st is its final status
)

// serveSSE serves one call of m as an event stream.
func (h *Handler) serveSSE(w http.ResponseWriter, r *http.Request, m *method, pathParams map[string]string, b binding) {
	if m.streamDesc.ClientStreams {
		h.writeError(w, http.StatusBadRequest, status.Newf(codes.InvalidArgument,
			"%s is a client-streaming method: open it as a WebSocket with subprotocol %s", m.name, wsSubprotocol))
		return
	}
	// A body that trickles in must not hold the handler without bound: it
	// has the write timeout to arrive. The deadline is cleared after a
	// good read, since over HTTP/1.1 the server's read for a closed
	// connection uses it too; after a bad one it stays, so that net/http's
	// attempt to drain the rest of the body fails at once.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.cfg.writeTimeout))
	req, rerr := h.decodeRequest(r, m, pathParams, b)
	if rerr == nil {
		_ = rc.SetReadDeadline(time.Time{})
	}
	if rerr != nil {
		h.writeError(w, rerr.httpStatus, rerr.st)
		return
	}
	md, timeout, err := h.requestMD.requestMetadata(r, h.peerTrusted(r))
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

	// Every path out of this function cancels the call: that is what ends
	// the upstream stream when the browser leaves or a write fails.
	ctx, cancel := callContext(r.Context(), timeout)
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, md)

	start := time.Now()
	s := &sseStream{h: h, w: w, rc: http.NewResponseController(w)}
	client := h.clientIP(r)
	if a := h.streams.begin(client); a != admitted {
		// A final refusal is a non-200 answer; a transient one (full or
		// draining) keeps the browser's EventSource retrying.
		_, st := h.streams.refusal(a)
		s.finish(st, nil)
		h.logStreamEnd(r, streamEnd{method: m.name, transport: TransportSSE, st: st, start: start})
		return
	}
	defer h.streams.end(client)
	s.obs = h.cfg.metrics.StreamStarted(m.name, TransportSSE, r.Header.Get(headerLastEventID) != "")
	s.obs.MessageReceived(proto.Size(req))
	var st *status.Status
	if share {
		if sub := m.shared.subscribe(h, m, key, req, sharedMD, r.Header.Get(headerLastEventID)); sub != nil {
			st = func() *status.Status {
				defer sub.leave() // the last to leave ends the shared call
				return s.relay(r.Context(), nil, nil, sub.items)
			}()
		}
	}
	if st == nil {
		st = s.run(ctx, r.Context(), m, req, nextSeq)
	}
	s.obs.StreamEnded(st.Code(), 0, s.slow)
	h.logStreamEnd(r, streamEnd{method: m.name, transport: TransportSSE, st: st, start: start, messages: s.messages})
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

// sseStream is one SSE response. Its methods run on the handler goroutine,
// which alone owns the ResponseWriter.
type sseStream struct {
	h         *Handler
	w         http.ResponseWriter
	rc        *http.ResponseController
	buf       []byte // events not yet written
	committed bool   // the 200 and the first bytes are in buf or written
	messages  int
	slow      bool // a write to the browser timed out
	obs       StreamObserver
}

// run opens the call, relays it until it ends, and returns its final
// status. ctx carries the call (metadata, deadline); clientCtx ends when the
// browser leaves.
func (s *sseStream) run(ctx, clientCtx context.Context, m *method, req proto.Message, nextSeq uint64) *status.Status {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan sseItem, defaultSSEQueueLen)
	// spare returns the JSON buffers of written messages to the receiver,
	// which encodes the next messages into them: appendEvent copied their
	// bytes, so they are free, and steady streams stop allocating them.
	spare := make(chan []byte, defaultSSEQueueLen+1)
	// stop is closed when the handler returns, and only then: the receiver
	// must not give up on its own when the call's deadline passes, or the
	// final status would be lost.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		// The receiver: the only goroutine that uses the call. It ends when
		// the call ends or when the handler stops it; the handler's deferred
		// cancel of the call context unblocks it wherever it waits.
		defer close(done)
		s.h.receiveSSE(ctx, m, req, nextSeq, items, spare, stop)
	}()
	defer func() {
		cancel() // unblocks RecvMsg
		close(stop)
		<-done
	}()
	return s.relay(clientCtx, items, spare, nil)
}

// relay writes the items of one source until the stream ends, and returns
// its final status: the items of the stream's own receiver, or those of a
// shared call's subscription (exactly one of items and shared is non-nil).
// spare takes back the JSON buffers of the own receiver's messages (nil
// with shared, whose frames every subscriber reads). It owns the heartbeat, the batching of events into writes, and the
// endings that do not come from the call: the browser leaving, a failed
// write, the drain, the maximum duration.
func (s *sseStream) relay(clientCtx context.Context, items <-chan sseItem, spare chan<- []byte, shared <-chan *sseItem) *status.Status {
	heartbeat := time.NewTimer(s.h.cfg.heartbeatInterval)
	defer heartbeat.Stop()
	var expired <-chan time.Time // nil: no maximum duration
	if d := s.h.cfg.maxStreamDuration; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case it := <-items:
			if st := s.add(&it); st != nil {
				return st
			}
			if it.kind == itemMessage && cap(it.data) <= sseFlushBytes {
				select {
				case spare <- it.data[:0]:
				default:
				}
			}
			if len(items) > 0 && len(s.buf) < sseFlushBytes {
				continue // more is ready: batch it into the same write
			}
			if err := s.flush(); err != nil {
				return s.writeFailed(err)
			}
		case it := <-shared:
			if st := s.add(it); st != nil {
				return st
			}
			if len(shared) > 0 && len(s.buf) < sseFlushBytes {
				continue
			}
			if err := s.flush(); err != nil {
				return s.writeFailed(err)
			}
		case <-heartbeat.C:
			// A backend that stays silent still gets its 200 now, so the
			// browser's EventSource sees the stream as open.
			s.commit()
			s.buf = append(s.buf, ssePing...)
			if err := s.flush(); err != nil {
				return s.writeFailed(err)
			}
		case <-clientCtx.Done():
			return status.New(codes.Canceled, "client disconnected")
		case <-s.h.streams.draining:
			return s.handOff("the bridge is shutting down")
		case <-expired:
			return s.handOff("the stream reached its maximum duration")
		}
		heartbeat.Reset(s.h.cfg.heartbeatInterval)
	}
}

// add buffers the event of one item, or ends the stream with the item's
// final status and returns it.
func (s *sseStream) add(it *sseItem) *status.Status {
	switch it.kind {
	case itemHeaders:
		s.commit()
		s.buf = appendEvent(s.buf, "", sseEventHeaders, it.data)
	case itemMessage:
		s.commit()
		s.buf = appendEvent(s.buf, it.id, sseEventMessage, it.data)
		s.messages++
		s.obs.MessageSent(len(it.data))
	case itemFrame:
		s.commit()
		s.buf = append(s.buf, it.data...)
		s.messages++
		s.obs.MessageSent(it.size)
	case itemStatus:
		s.finish(it.st, it.trailers)
		return it.st
	case itemDropped:
		// Falling behind is not the stream's fault, and a reconnect
		// catches up: a retry hint even though the code is not transient.
		s.slow = true
		s.finishEvent(it.st, nil, true)
		return it.st
	}
	return nil
}

// handOff ends a healthy stream so that the browser resumes it, perhaps
// at another replica: a retry hint and no end event, so EventSource
// reconnects after the retry time with Last-Event-ID.
func (s *sseStream) handOff(reason string) *status.Status {
	s.commit()
	s.buf = appendRetry(s.buf, s.h.cfg.retryInterval)
	s.buf = append(s.buf, '\n')
	_ = s.flush()
	return status.New(codes.Unavailable, reason)
}

// commit writes the response headers and the first bytes of the stream,
// once.
func (s *sseStream) commit() {
	if s.committed {
		return
	}
	s.committed = true
	hdr := s.w.Header()
	hdr.Set(headerContentType, contentTypeEventStream)
	hdr.Set(headerCacheControl, "no-cache")
	hdr.Set(headerAccelBuffering, "no")
	s.w.WriteHeader(http.StatusOK)
	s.buf = appendRetry(s.buf, s.h.cfg.retryInterval)
	s.buf = append(s.buf, '\n')
}

// finish ends the stream with st. Before the stream is committed, a final
// error is a non-200 JSON answer; otherwise, and for transient errors even
// before the first byte, it is an end or error event, with a retry hint
// first for transient errors so that the browser reconnects.
func (s *sseStream) finish(st *status.Status, trailers metadata.MD) {
	if !s.committed && st.Code() != codes.OK && !isTransient(st.Code()) {
		s.h.writeStatus(s.w, st)
		return
	}
	s.finishEvent(st, trailers, isTransient(st.Code()))
}

// finishEvent ends the stream with st as an end or error event, with a
// retry hint first when retry is set and st is an error.
func (s *sseStream) finishEvent(st *status.Status, trailers metadata.MD, retry bool) {
	s.commit()
	data := marshalStatus(s.h.codec, st, s.h.responseMD.responseMetadata(trailers))
	event := sseEventEnd
	if st.Code() != codes.OK {
		event = sseEventError
		if retry {
			s.buf = appendRetry(s.buf, s.h.cfg.retryInterval)
		}
	}
	s.buf = appendEvent(s.buf, "", event, data)
	_ = s.flush() // the stream ends either way
}

// flush writes the buffered events under the write deadline and flushes
// them to the browser.
func (s *sseStream) flush() error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.h.cfg.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	if cap(s.buf) > 2*sseFlushBytes {
		s.buf = nil // one huge event must not pin its buffer for the stream's life
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	// Clear the deadline: over HTTP/2 a deadline left set resets the
	// stream when it passes, even with no write pending, which would cut
	// every stream quiet for longer than the write timeout.
	_ = s.rc.SetWriteDeadline(time.Time{})
	return nil
}

func (s *sseStream) writeFailed(err error) *status.Status {
	s.slow = errors.Is(err, os.ErrDeadlineExceeded)
	return status.Newf(codes.Unavailable, "write to client: %v", err)
}

// receiveSSE relays the call's headers, messages and final status to out,
// encoding each message as JSON on the way. It sends the next item only when
// out has room, and reads the next message only after that: a slow browser
// stalls this loop and, through gRPC flow control, the backend.
//
// It also opens the call and sends the request, so that the handler
// goroutine keeps its heartbeat, drain and limits going while a backend is
// slow to accept the call.
func (h *Handler) receiveSSE(ctx context.Context, m *method, req proto.Message, nextSeq uint64, out chan<- sseItem, spare <-chan []byte, stop <-chan struct{}) {
	send := func(it sseItem) bool {
		select {
		case out <- it:
			return true
		case <-stop:
			return false
		}
	}
	stream, st := openServerStream(ctx, m, req)
	if st != nil {
		send(sseItem{kind: itemStatus, st: st})
		return
	}
	// Header blocks until the backend sends headers or ends the call; nil
	// means it ended without headers (a trailers-only response), whose
	// status RecvMsg returns next.
	if hdr, _ := stream.Header(); hdr != nil {
		if !send(sseItem{kind: itemHeaders, data: h.headersJSON(hdr)}) {
			return
		}
	}
	// One message is reused for every response: it is fully encoded before
	// the next RecvMsg overwrites it.
	msg := m.output.New().Interface()
	for {
		if err := stream.RecvMsg(msg); err != nil {
			send(sseItem{kind: itemStatus, st: recvStatus(err), trailers: stream.Trailer()})
			return
		}
		var buf []byte
		select {
		case buf = <-spare:
		default:
		}
		data, err := h.codec.marshal.MarshalAppend(buf, msg)
		if err != nil {
			send(sseItem{kind: itemStatus, st: status.Newf(codes.Internal, "encode %s as JSON: %v", m.desc.Output().FullName(), err)})
			return
		}
		id := eventID(m, msg, nextSeq)
		nextSeq++
		if !send(sseItem{kind: itemMessage, id: id, data: data}) {
			return
		}
	}
}

// cursorID formats the cursor field of a response as an event id. A value
// that cannot be an id (a string with a line break) gives no id, so the
// browser keeps the previous one rather than a corrupted stream.
func cursorID(msg proto.Message, fd protoreflect.FieldDescriptor) string {
	v := msg.ProtoReflect().Get(fd)
	var id string
	switch fd.Kind() {
	case protoreflect.StringKind:
		id = v.String()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		id = strconv.FormatUint(v.Uint(), 10)
	default:
		id = strconv.FormatInt(v.Int(), 10)
	}
	if !validEventID(id) {
		return ""
	}
	return id
}
