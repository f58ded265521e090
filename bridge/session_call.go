package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The calls of a session, and the upstream frames that drive them.

// maxPendingPongs bounds the PONGs waiting for the downstream: a client
// that pings faster than it reads loses the oldest answers, never memory.
const maxPendingPongs = 8

// sessionViolation is receive's error for frames that break the protocol:
// the session ends with a GOAWAY of st.
type sessionViolation struct{ st *status.Status }

func (e *sessionViolation) Error() string { return e.st.Message() }

func violationf(format string, args ...any) *sessionViolation {
	return &sessionViolation{st: status.Newf(codes.InvalidArgument, format, args...)}
}

// receive takes one batch of upstream frames (a WebSocket message, a POST
// body) in sequence order: duplicates are skipped, and a gap discards the
// rest of the batch, which the client resends after the ACK. A violation
// closes the session with a GOAWAY that names it and is returned. ack is
// the last upstream frame taken.
func (s *session) receive(buf []byte) (ack uint64, err error) {
	seq, err := s.receiveBatch(buf)
	s.mu.Lock()
	if seq > s.ackSeq {
		s.ackSeq, s.ackDue = seq, true
		s.wakeLocked()
	}
	s.mu.Unlock()
	if err != nil {
		var v *sessionViolation
		if !errors.As(err, &v) {
			v = &sessionViolation{st: status.New(codes.InvalidArgument, err.Error())}
		}
		s.close(errSessionViolation, v.st)
		return seq, v
	}
	return seq, nil
}

// receiveBatch takes buf under upMu, which a panic in it does not leave
// locked, and returns the last upstream seq taken.
func (s *session) receiveBatch(buf []byte) (uint64, error) {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	err := s.receiveLocked(buf)
	return s.recvSeq, err
}

func (s *session) receiveLocked(buf []byte) error {
	maxMessage := s.srv.h.cfg.readMaxBytes
	for len(buf) > 0 {
		f, rest, err := decodeFrame(buf, maxMessage)
		if err != nil {
			if errors.Is(err, errFrameTooLarge) {
				return &sessionViolation{st: status.New(codes.ResourceExhausted, err.Error())}
			}
			return violationf("%v", err)
		}
		buf = rest
		if !f.typ.sequenced() {
			if err := s.onUnsequenced(f); err != nil {
				return err
			}
			continue
		}
		switch {
		case f.seq <= s.recvSeq:
			continue // resent: taken already
		case f.seq != s.recvSeq+1:
			return nil // a gap: the ACK tells the client where to resume
		}
		if err := s.onSequenced(f); err != nil {
			return err
		}
		s.recvSeq = f.seq
	}
	return nil
}

func (s *session) onUnsequenced(f sessionFrame) error {
	switch f.typ {
	case frameAck:
		ack, err := decodeUvarintPayload(f)
		if err != nil {
			return violationf("%v", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.ackLocked(ack); err != nil {
			return violationf("ACK frame: %v", err)
		}
	case framePing:
		if len(f.payload) > maxPingPayload {
			return violationf("PING frame: payload of %d bytes, at most %d", len(f.payload), maxPingPayload)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.pongs) == maxPendingPongs {
			s.pongs = s.pongs[1:]
		}
		s.pongs = append(s.pongs, append([]byte(nil), f.payload...))
	case framePong:
	case frameGoaway:
		s.close(errSessionGoaway, nil)
	default:
		return violationf("%s frame from the client: only the bridge sends it", f.typ)
	}
	return nil
}

func (s *session) onSequenced(f sessionFrame) error {
	if f.typ == frameOpen {
		if f.call <= s.lastCall {
			return violationf("OPEN of call %d: call ids must grow, and %d was opened before", f.call, s.lastCall)
		}
		s.lastCall = f.call
		return s.open(f.call, f.payload)
	}
	if f.call > s.lastCall {
		return violationf("%s frame for call %d, which was never opened", f.typ, f.call)
	}
	s.mu.Lock()
	c := s.calls[f.call]
	s.mu.Unlock()
	if c == nil {
		return nil // the call has ended; a frame sent before its STATUS arrived
	}
	switch f.typ {
	case frameMessage:
		c.onMessage(f.payload)
	case frameHalfClose:
		c.onHalfClose()
	case frameCancel:
		c.fail(status.New(codes.Canceled, "the client cancelled the call"))
	case frameWindow:
		inc, err := decodeUvarintPayload(f)
		if err != nil {
			return violationf("%v", err)
		}
		s.mu.Lock()
		c.downWindow += int64(min(inc, 1<<40)) //nolint:gosec // bounded
		s.room.Broadcast()
		s.mu.Unlock()
	default:
		return violationf("%s frame from the client: only the bridge sends it", f.typ)
	}
	return nil
}

// open starts call id from an OPEN payload. A call that cannot start ends
// at once with its STATUS; the session goes on.
func (s *session) open(id uint64, payload []byte) error {
	o, err := decodeOpen(payload)
	if err != nil {
		return violationf("%v", err)
	}
	h := s.srv.h
	m := h.routes.Load().byPath[o.path]
	if m == nil {
		s.statusOnly(id, status.Newf(codes.NotFound, "no exposed method at %s", quoteName(o.path)))
		return nil
	}
	md, timeout := s.md.Copy(), noTimeout
	if len(o.metadata) > 0 {
		ctl, err := decodeControl(o.metadata)
		if err == nil && ctl.metadata == nil {
			err = errors.New("want a metadata object")
		}
		if err == nil {
			// The grpc-ws.v1 rules of a metadata frame, as they are.
			err = h.requestMD.addControlMetadata(md, &timeout, ctl.metadata, s.noAmbient)
		}
		if err != nil {
			s.statusOnly(id, status.Newf(codes.InvalidArgument, "OPEN metadata: %v", err))
			return nil
		}
	}
	window := int64(s.srv.o.Window)
	if o.window > 0 {
		window = int64(min(o.window, 1<<40)) //nolint:gosec // bounded
	}
	s.mu.Lock()
	switch {
	case s.closing:
		s.mu.Unlock()
		s.statusOnly(id, status.New(codes.Unavailable, "the session is ending"))
		return nil
	case len(s.calls) >= s.srv.o.MaxCalls:
		s.mu.Unlock()
		s.statusOnly(id, status.Newf(codes.ResourceExhausted, "the session is at its limit of %d calls", s.srv.o.MaxCalls))
		return nil
	}
	ctx, cancel := callContext(s.ctx, timeout)
	c := &sessionCall{
		s: s, id: id, m: m, ctx: ctx, cancel: cancel, start: time.Now(),
		downWindow: window, upWindow: int64(s.srv.o.Window),
		wake: make(chan struct{}, 1),
		obs:  h.cfg.metrics.StreamStarted(m.name, TransportSession, false),
	}
	s.calls[id] = c
	s.callsTotal++
	s.wg.Add(1)
	s.mu.Unlock()
	go c.run(metadata.NewOutgoingContext(ctx, md))
	return nil
}

// sessionCall is one call of a session. Its fields after obs are guarded
// by the session's mu.
type sessionCall struct {
	s     *session
	id    uint64
	m     *method
	start time.Time
	// ctx is the call's: the session's, with the call's deadline. A
	// per-call object, hence a context field.
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // input for the sender
	obs    StreamObserver

	downWindow int64          // bytes of responses the client takes before it grants more
	upWindow   int64          // bytes of requests the client may still send
	inputs     []callInput    // taken from the client, waiting for SendMsg
	endSeen    bool           // the client sent HALF_CLOSE
	closeSent  bool           // CloseSend is queued
	requests   int            // request messages taken
	failSt     *status.Status // the ending the bridge chose, or nil
	done       bool           // STATUS is queued: nothing more for this call
}

// callInput is one thing for the sender: a request message, or CloseSend.
type callInput struct {
	msg       []byte
	closeSend bool
}

// fail ends the call with st, unless an ending was chosen already.
func (c *sessionCall) fail(st *status.Status) {
	c.s.mu.Lock()
	if c.failSt == nil {
		c.failSt = st
	}
	c.s.mu.Unlock()
	c.cancel()
}

func (c *sessionCall) onMessage(data []byte) {
	if err := c.m.checkRequest(data); err != nil {
		c.fail(status.Newf(codes.InvalidArgument, "MESSAGE is not a %s: %v", c.m.desc.Input().FullName(), err))
		return
	}
	s := c.s
	s.mu.Lock()
	var st *status.Status
	switch {
	case c.endSeen:
		st = status.New(codes.InvalidArgument, "MESSAGE after HALF_CLOSE")
	case c.closeSent:
		st = status.Newf(codes.InvalidArgument, "%s is not client-streaming: it takes exactly one request message", c.m.name)
	case c.upWindow <= 0:
		st = status.New(codes.ResourceExhausted, "MESSAGE sent without flow-control window")
	}
	if st != nil {
		s.mu.Unlock()
		c.fail(st)
		return
	}
	c.upWindow -= int64(len(data))
	c.requests++
	c.inputs = append(c.inputs, callInput{msg: data})
	if !c.m.streamDesc.ClientStreams {
		c.closeSent = true
		c.inputs = append(c.inputs, callInput{closeSend: true})
	}
	s.mu.Unlock()
	c.signal()
}

func (c *sessionCall) onHalfClose() {
	s := c.s
	s.mu.Lock()
	var st *status.Status
	switch {
	case c.endSeen:
		st = status.New(codes.InvalidArgument, "HALF_CLOSE sent twice")
	case !c.m.streamDesc.ClientStreams && c.requests == 0:
		st = status.Newf(codes.InvalidArgument, "HALF_CLOSE before the request message: %s takes exactly one request message", c.m.name)
	}
	if st != nil {
		s.mu.Unlock()
		c.fail(st)
		return
	}
	c.endSeen = true
	if !c.closeSent {
		c.closeSent = true
		c.inputs = append(c.inputs, callInput{closeSend: true})
	}
	s.mu.Unlock()
	c.signal()
}

func (c *sessionCall) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run is the call's receiver goroutine: it opens the call, starts the
// sender, relays headers, messages (within the call's window and the
// session's bytes in flight) and the final status. It returns when the
// call has ended, after queueing its STATUS.
func (c *sessionCall) run(ctx context.Context) {
	s, h := c.s, c.s.srv.h
	var st *status.Status
	var trailers metadata.MD
	sent := 0
	defer s.wg.Done()
	defer func() { c.end(st, trailers, sent) }()
	defer h.recoverStream(c.m.name, TransportSession, c.fail)
	stream, err := c.m.conn.NewStream(ctx, &c.m.streamDesc, c.m.path, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		st = c.m.callStatus(ctx, err)
		return
	}
	s.wg.Add(1)
	go c.sendLoop(stream)
	if hdr, _ := stream.Header(); hdr != nil {
		s.mu.Lock()
		if !c.done {
			s.queueLocked(frameHeaders, c.id, encodeHeaders(h.responseMD.responseMetadata(hdr)))
		}
		s.mu.Unlock()
	}
	for {
		if !c.waitWindow() {
			st = status.FromContextError(c.ctx.Err())
			return
		}
		var f rawFrame
		data, rst := c.m.recvWire(stream, &f)
		if rst != nil {
			st, trailers = rst, stream.Trailer()
			return
		}
		ok := c.queueMessage(data)
		f.free()
		if !ok {
			st = status.FromContextError(c.ctx.Err())
			return
		}
		sent++
		c.obs.MessageSent(len(data))
	}
}

// waitWindow waits until the call may receive the next response: the
// client has granted it window. It reports false when the call ended.
func (c *sessionCall) waitWindow() bool {
	s := c.s
	stop := context.AfterFunc(c.ctx, c.broadcast)
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c.downWindow <= 0 && c.ctx.Err() == nil {
		s.room.Wait()
	}
	return c.ctx.Err() == nil
}

// queueMessage queues one response, once the session's bytes in flight
// leave room for it (one message always goes when none are in flight).
func (c *sessionCall) queueMessage(data []byte) bool {
	s := c.s
	stop := context.AfterFunc(c.ctx, c.broadcast)
	defer stop()
	limit := s.srv.o.MaxBytesInFlight
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.outBytes > 0 && s.outBytes+len(data) > limit && c.ctx.Err() == nil {
		s.room.Wait()
	}
	if c.ctx.Err() != nil {
		return false
	}
	c.downWindow -= int64(len(data))
	s.queueLocked(frameMessage, c.id, data) // copies data into the frame
	return true
}

func (c *sessionCall) broadcast() {
	c.s.mu.Lock()
	c.s.room.Broadcast()
	c.s.mu.Unlock()
}

// sendLoop is the call's sender goroutine: it hands the client's messages
// to the backend in order and grants their window back once taken, and
// half-closes. It returns after CloseSend, or when the call ends.
func (c *sessionCall) sendLoop(stream grpc.ClientStream) {
	s := c.s
	defer s.wg.Done()
	defer s.srv.h.recoverStream(c.m.name, TransportSession, c.fail)
	for {
		in, ok := c.nextInput()
		if !ok {
			return
		}
		if in.closeSend {
			_ = stream.CloseSend() // always nil for client streams
			return
		}
		// in.msg is the batch's own buffer, so grpc-go may keep it.
		if err := stream.SendMsg(&rawFrame{data: mem.BufferSlice{mem.SliceBuffer(in.msg)}}); err != nil {
			if !errors.Is(err, io.EOF) { // io.EOF: RecvMsg has the status
				c.fail(c.m.callStatus(c.ctx, err))
			}
			return
		}
		c.obs.MessageReceived(len(in.msg))
		if !c.grant(len(in.msg)) {
			return
		}
	}
}

// grant gives the client n bytes of window back, once the session's bytes
// in flight leave room for the WINDOW frame: a client that sends without
// reading what comes down stops getting credit instead of piling up
// frames. It reports false when the call has ended.
func (c *sessionCall) grant(n int) bool {
	s := c.s
	stop := context.AfterFunc(c.ctx, c.broadcast)
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.outBytes > s.srv.o.MaxBytesInFlight && c.ctx.Err() == nil {
		s.room.Wait()
	}
	if c.done || c.ctx.Err() != nil {
		return false
	}
	c.upWindow += int64(n)
	s.queueLocked(frameWindow, c.id, binary.AppendUvarint(nil, uint64(n))) //nolint:gosec // a length
	return true
}

// nextInput waits for the next input of the sender; false when the call
// ended.
func (c *sessionCall) nextInput() (callInput, bool) {
	for {
		c.s.mu.Lock()
		if len(c.inputs) > 0 {
			in := c.inputs[0]
			c.inputs[0] = callInput{}
			c.inputs = c.inputs[1:]
			c.s.mu.Unlock()
			return in, true
		}
		c.s.mu.Unlock()
		select {
		case <-c.wake:
		case <-c.ctx.Done():
			return callInput{}, false
		}
	}
}

// end queues the call's STATUS: the ending the bridge chose when there is
// one, UNAVAILABLE when the bridge drains, otherwise st, the call's own.
func (c *sessionCall) end(st *status.Status, trailers metadata.MD, sent int) {
	s, h := c.s, c.s.srv.h
	c.cancel()
	s.mu.Lock()
	switch {
	case c.failSt != nil:
		st, trailers = c.failSt, nil
	case errors.Is(context.Cause(s.ctx), errDraining):
		st, trailers = status.New(codes.Unavailable, "the bridge is shutting down"), nil
	case st == nil:
		st = status.New(codes.Internal, "internal error in the bridge")
	}
	c.done = true
	c.inputs = nil
	delete(s.calls, c.id)
	s.queueLocked(frameStatus, c.id, encodeStatus(h.codec, st, h.responseMD.responseMetadata(trailers)))
	s.room.Broadcast()
	s.mu.Unlock()
	c.obs.StreamEnded(st.Code(), 0, false)
	h.logStreamEnd(context.Background(), s.client, streamEnd{
		method: c.m.name, transport: TransportSession, st: st, start: c.start, messages: sent,
	})
}

// String names the call in errors and logs.
func (c *sessionCall) String() string { return fmt.Sprintf("call %d (%s)", c.id, c.m.name) }
