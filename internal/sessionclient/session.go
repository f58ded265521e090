package sessionclient

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Options tune a session. The zero value is fine.
type Options struct {
	// Header is sent with every request of the session (Origin, say).
	Header http.Header
	// Window is each call's downstream flow-control window in bytes; 0:
	// the HELLO's window.
	Window uint64
	// HTTPClient makes the HTTP carrier's requests; nil: a client of its
	// own, with keep-alive and without compression.
	HTTPClient *http.Client
}

// Acknowledgement policy (docs/protocol.md, "Sequence numbers and
// acknowledgements"): at least every 32 frames or 64 KiB, and within
// 100 ms otherwise. An ACK rides along with any other upstream frames;
// alone it waits ackDelay, so that a busy downstream costs few upstream
// writes (on the HTTP carrier, each is a POST).
const (
	ackFrames = 32
	ackBytes  = 64 << 10
	ackDelay  = 20 * time.Millisecond
)

// closeFlushTimeout bounds how long Close waits to send its GOAWAY.
const closeFlushTimeout = 2 * time.Second

// carrier moves batches of frames: the WebSocket or the HTTP fallback.
type carrier interface {
	// read returns the next downstream batch.
	read() ([]byte, error)
	// write sends an upstream batch with the session's latest token; it
	// returns frames the answer carries (the HTTP carrier's ACK), if any.
	write(batch []byte, token string) ([]byte, error)
	// close ends the carrier, making read return.
	close()
}

// Session is one grpc-session.v1 session. Its methods are safe for
// concurrent use.
type Session struct {
	c    carrier
	opts Options

	mu          sync.Mutex
	hello       Hello
	sendSeq     uint64
	recvSeq     uint64 // the last downstream seq taken
	ackedSent   uint64 // the last seq an ACK went out for
	sinceFrames int    // taken since the last ACK
	sinceBytes  int
	ackDue      bool
	ackTimer    *time.Timer
	nextCall    uint64
	calls       map[uint64]*Call
	out         []byte // encoded upstream frames waiting for the writer
	closing     bool
	err         error // why the session ended; nil while it runs

	kick chan struct{} // the writer has work
	done chan struct{} // closed when the session ends
	wg   sync.WaitGroup
}

// newSession starts a session on c, whose first downstream batch, hello,
// holds the HELLO.
func newSession(c carrier, hello []byte, opts Options) (*Session, error) {
	s := &Session{c: c, opts: opts, calls: map[uint64]*Call{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	frames, err := DecodeFrames(hello)
	if err != nil || len(frames) == 0 || frames[0].Type != TypeHello {
		c.close()
		return nil, fmt.Errorf("sessionclient: want a HELLO first: %v", err)
	}
	if err := s.onBatch(hello); err != nil {
		c.close()
		return nil, err
	}
	s.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()
	return s, nil
}

// Hello is the latest HELLO the bridge sent.
func (s *Session) Hello() Hello {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hello
}

// Done is closed when the session has ended; Err then tells why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended, or nil while it runs.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session with a GOAWAY; calls still open end CANCELED.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.err == nil && !s.closing {
		s.closing = true
		s.out = AppendFrame(s.out, Frame{Type: TypeGoaway})
		s.kickLocked()
	}
	s.mu.Unlock()
	select {
	case <-s.done: // the writer flushed the GOAWAY and ended the session
	case <-time.After(closeFlushTimeout):
	}
	s.fail(status.Error(codes.Canceled, "session closed by the client"))
	s.wg.Wait()
	return nil
}

// fail ends the session and each of its calls with err (the first reason
// wins).
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	calls := s.calls
	s.calls = nil
	for _, c := range calls {
		c.endLocked(status.Convert(err))
	}
	close(s.done)
	s.mu.Unlock()
	s.c.close()
}

func (s *Session) kickLocked() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// sendSeqLocked queues a sequenced frame.
func (s *Session) sendSeqLocked(typ byte, call uint64, payload []byte) {
	s.sendSeq++
	s.out = AppendFrame(s.out, Frame{Type: typ, Seq: s.sendSeq, Call: call, Payload: payload})
	s.kickLocked()
}

// writeLoop sends what is queued, one batch at a time: one WebSocket
// message or one POST (the protocol's one upstream POST at a time), with
// everything that queued up meanwhile batched into the next.
func (s *Session) writeLoop() {
	defer s.wg.Done()
	var spare []byte
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		s.mu.Lock()
		if len(s.out) == 0 && !s.ackDue {
			s.mu.Unlock()
			continue
		}
		batch := s.out
		s.out = spare[:0]
		if s.recvSeq > s.ackedSent {
			batch = AppendFrame(batch, Frame{Type: TypeAck, Payload: binary.AppendUvarint(nil, s.recvSeq)})
			s.ackedSent, s.sinceFrames, s.sinceBytes = s.recvSeq, 0, 0
		}
		s.ackDue = false
		closing, token := s.closing, s.hello.Token
		s.mu.Unlock()
		reply, err := s.c.write(batch, token)
		if err != nil {
			s.fail(status.Errorf(codes.Unavailable, "session upstream: %v", err))
			return
		}
		if closing {
			s.fail(status.Error(codes.Canceled, "session closed by the client"))
			return
		}
		if len(reply) > 0 {
			if err := s.onBatch(reply); err != nil {
				s.fail(err)
				return
			}
		}
		spare = batch
	}
}

// readLoop takes downstream batches until the carrier ends.
func (s *Session) readLoop() {
	defer s.wg.Done()
	for {
		b, err := s.c.read()
		if err != nil {
			s.fail(status.Errorf(codes.Unavailable, "session downstream ended: %v", err))
			return
		}
		if err := s.onBatch(b); err != nil {
			s.fail(err)
			return
		}
	}
}

// onBatch takes a downstream batch.
func (s *Session) onBatch(b []byte) error {
	frames, err := DecodeFrames(b)
	if err != nil {
		return status.Errorf(codes.Internal, "session downstream: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frames {
		switch f.Type {
		case TypeHello:
			h, err := DecodeHello(f.Payload)
			if err != nil {
				return status.Errorf(codes.Internal, "session downstream: %v", err)
			}
			s.hello = h
		case TypePing:
			s.out = AppendFrame(s.out, Frame{Type: TypePong, Payload: f.Payload})
			s.kickLocked()
		case TypeAck, TypePong:
			// Nothing to release: this client keeps no frames for a resend.
		case TypeGoaway:
			return goawayError(f.Payload)
		case TypeOpen, TypeHalfClose, TypeCancel:
			return status.Errorf(codes.Internal, "session downstream: frame 0x%02x is client to bridge only", f.Type)
		default:
			if f.Seq <= s.recvSeq {
				continue // resent
			}
			if f.Seq != s.recvSeq+1 {
				return status.Errorf(codes.Internal, "session downstream: frame %d after %d", f.Seq, s.recvSeq)
			}
			s.recvSeq = f.Seq
			s.sinceFrames++
			s.sinceBytes += len(f.Payload)
			if c := s.calls[f.Call]; c != nil {
				if err := c.takeLocked(f); err != nil {
					return err
				}
			}
		}
	}
	s.scheduleAckLocked()
	return nil
}

// scheduleAckLocked asks the writer for an ACK now if enough is taken
// since the last one, else within ackDelay.
func (s *Session) scheduleAckLocked() {
	if s.recvSeq == s.ackedSent || s.err != nil {
		return
	}
	if s.sinceFrames >= ackFrames || s.sinceBytes >= ackBytes {
		s.ackDue = true
		s.kickLocked()
		return
	}
	if s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(ackDelay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.recvSeq > s.ackedSent {
				s.ackDue = true
				s.kickLocked()
			}
		})
	} else {
		s.ackTimer.Reset(ackDelay)
	}
}

// wireStatus is a STATUS payload, and a GOAWAY's status.
type wireStatus struct {
	Code    codes.Code `json:"code"`
	Message string     `json:"message"`
}

func goawayError(p []byte) error {
	var st wireStatus
	if err := json.Unmarshal(p, &st); err != nil {
		return status.Errorf(codes.Unavailable, "session ended by the bridge (GOAWAY %q)", p)
	}
	return status.Errorf(st.Code, "session ended by the bridge: %s", st.Message)
}

// Open starts a call of the method at path ("/pkg.Service/Method") with
// request metadata md, a grpc-ws.v1 metadata object
// ({"metadata":{"key":["value"]}}) or nil.
func (s *Session) Open(path string, md []byte) (*Call, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.closing {
		return nil, status.Error(codes.Canceled, "session closing")
	}
	s.nextCall++
	window := s.opts.Window
	if window == 0 {
		window = s.hello.Window
	}
	c := &Call{s: s, id: s.nextCall, window: int64(s.hello.Window), downWindow: window, grantAt: max(window/4, 1),
		ready: make(chan struct{}, 1), credit: make(chan struct{}, 1)}
	s.calls[c.id] = c
	s.sendSeqLocked(TypeOpen, c.id, AppendOpen(nil, s.opts.Window, path, md))
	return c, nil
}

// Call is one call of a session. Send and CloseSend may be called from
// one goroutine while Recv is called from another.
type Call struct {
	s          *Session
	id         uint64
	downWindow uint64 // the call's downstream window
	grantAt    uint64 // grant downstream credit once this many bytes are consumed

	// Guarded by s.mu.
	window   int64 // upstream credit
	msgs     [][]byte
	queued   uint64 // bytes in msgs and consumed: what the bridge may not exceed
	consumed uint64 // bytes taken by Recv and not yet granted back
	headers  map[string][]string
	final    *status.Status // set when the call has ended
	trailers map[string][]string

	ready  chan struct{} // a message or the end arrived
	credit chan struct{} // upstream window arrived, or the end
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// takeLocked takes a sequenced downstream frame of the call.
func (c *Call) takeLocked(f Frame) error {
	switch f.Type {
	case TypeHeaders:
		var h struct {
			Headers map[string][]string `json:"headers"`
		}
		if err := json.Unmarshal(f.Payload, &h); err != nil {
			return status.Errorf(codes.Internal, "call %d: HEADERS: %v", c.id, err)
		}
		c.headers = h.Headers
	case TypeMessage:
		// The bridge sends while the call's window is above zero, so at
		// most the window plus one message waits here: more is the
		// bridge's protocol violation, never an unbounded queue.
		if c.queued >= c.downWindow {
			return status.Errorf(codes.Internal, "call %d: the bridge sent past the call's window of %d bytes", c.id, c.downWindow)
		}
		c.queued += uint64(len(f.Payload))
		c.msgs = append(c.msgs, append([]byte(nil), f.Payload...))
		signal(c.ready)
	case TypeWindow:
		inc, err := uvarintPayload(f)
		if err != nil {
			return status.Errorf(codes.Internal, "call %d: %v", c.id, err)
		}
		c.window += int64(inc)
		signal(c.credit)
	case TypeStatus:
		var st struct {
			Status   wireStatus          `json:"status"`
			Trailers map[string][]string `json:"trailers"`
		}
		if err := json.Unmarshal(f.Payload, &st); err != nil {
			return status.Errorf(codes.Internal, "call %d: STATUS: %v", c.id, err)
		}
		c.trailers = st.Trailers
		delete(c.s.calls, c.id)
		c.endLocked(status.New(st.Status.Code, st.Status.Message))
	}
	return nil
}

func (c *Call) endLocked(st *status.Status) {
	if c.final == nil {
		c.final = st
	}
	signal(c.ready)
	signal(c.credit)
}

// Send sends one request message, waiting for upstream credit.
func (c *Call) Send(ctx context.Context, msg []byte) error {
	for {
		c.s.mu.Lock()
		if c.final != nil {
			c.s.mu.Unlock()
			return c.final.Err()
		}
		if c.window > 0 {
			c.window -= int64(len(msg))
			c.s.sendSeqLocked(TypeMessage, c.id, msg)
			c.s.mu.Unlock()
			return nil
		}
		c.s.mu.Unlock()
		select {
		case <-c.credit:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CloseSend half-closes the call: no more request messages.
func (c *Call) CloseSend() { c.sendControl(TypeHalfClose) }

// Cancel abandons the call; the bridge answers with a CANCELED status.
func (c *Call) Cancel() { c.sendControl(TypeCancel) }

func (c *Call) sendControl(typ byte) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.final == nil {
		c.s.sendSeqLocked(typ, c.id, nil)
	}
}

// Recv returns the next response message, granting its bytes back to the
// bridge as downstream credit. After the last one it returns io.EOF if the
// call ended OK, else the status as an error (status.FromError).
func (c *Call) Recv(ctx context.Context) ([]byte, error) {
	for {
		c.s.mu.Lock()
		if len(c.msgs) > 0 {
			m := c.msgs[0]
			c.msgs[0] = nil
			c.msgs = c.msgs[1:]
			c.consumed += uint64(len(m))
			if c.consumed >= c.grantAt && c.final == nil {
				c.s.sendSeqLocked(TypeWindow, c.id, binary.AppendUvarint(nil, c.consumed))
				c.queued -= c.consumed
				c.consumed = 0
			}
			c.s.mu.Unlock()
			return m, nil
		}
		if st := c.final; st != nil {
			c.s.mu.Unlock()
			if st.Code() == codes.OK {
				return nil, io.EOF
			}
			return nil, st.Err()
		}
		c.s.mu.Unlock()
		select {
		case <-c.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Header returns the response headers, once they arrived (nil before, or
// when the call failed first).
func (c *Call) Header() map[string][]string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.headers
}

// Trailer returns the trailers, after the call ended.
func (c *Call) Trailer() map[string][]string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.trailers
}

// httpError describes an HTTP refusal, with the start of its body.
func httpError(what string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, body)
}

var errTextMessage = errors.New("text WebSocket message: a protocol violation")
