package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Handshake headers the WebSocket transport reads or writes itself.
const (
	headerOrigin    = "Origin"
	headerWSVersion = "Sec-WebSocket-Version"
)

// maxCloseReasonBytes is the room for the reason in a close frame: a
// control frame carries at most 125 bytes of payload (RFC 6455 section
// 5.5), and the close code takes 2 of them (section 5.5.1).
const maxCloseReasonBytes = 123

// wsWriteBufferPool lends write buffers to connections only while they
// write, so an idle connection holds none. It holds no configuration, so
// handlers sharing it do not interfere.
var wsWriteBufferPool = new(sync.Pool)

// serveWebSocket serves one call of m over a WebSocket with the grpc-ws.v1
// subprotocol (docs/protocol.md), for caller c that admitBrowser admitted
// (a refused Origin got 403 there, before the upgrade). The handshake is
// refused before the upgrade, with a JSON status body, when the
// subprotocol is not offered (400) or the request's headers do not make
// valid metadata (400).
func (h *Handler) serveWebSocket(w http.ResponseWriter, r *http.Request, m *method, c browserCaller) {
	// Subprotocols, not the raw header, because the upgrader selects the
	// subprotocol from the same parse.
	if !slices.Contains(websocket.Subprotocols(r), wsSubprotocol) {
		h.writeError(w, http.StatusBadRequest, status.Newf(codes.InvalidArgument,
			"%s: offer the WebSocket subprotocol %s in Sec-WebSocket-Protocol", m.name, wsSubprotocol))
		return
	}
	md, timeout, err := h.browserMetadata(r, c)
	if err != nil {
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	upgrader := websocket.Upgrader{
		HandshakeTimeout: h.cfg.writeTimeout,
		WriteBufferPool:  wsWriteBufferPool,
		Subprotocols:     []string{wsSubprotocol},
		// permessage-deflate when the method opts in and the client offers
		// it; gorilla negotiates no context takeover only, so that a
		// compressor is the connection's only while it writes a message.
		EnableCompression: m.compress.WebSocket,
		// admitBrowser checked the origin before the handler was called.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, _ *http.Request, httpStatus int, reason error) {
			if httpStatus >= http.StatusInternalServerError {
				// A failed hijack: bridge-internal, not for the browser.
				h.writeError(w, httpStatus, status.New(codes.Internal, "WebSocket upgrade failed"))
				return
			}
			// RFC 6455 section 4.4: tell the client which version we speak.
			w.Header().Set(headerWSVersion, "13")
			h.writeError(w, httpStatus, status.New(codes.InvalidArgument, reason.Error()))
		},
	}
	client := h.clientIP(r)
	if a := h.streams.begin(client); a != admitted {
		code, st := h.streams.refusal(a)
		h.writeError(w, code, st)
		return
	}
	defer h.streams.end(client)
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered or closed the connection
	}
	_ = conn.SetCompressionLevel(compressLevel) // valid; a no-op when not negotiated
	s := newWSSession(h, m, r, conn, c, md, timeout)
	s.obs = h.cfg.metrics.StreamStarted(m.name, TransportWebSocket, false)
	s.serve()
}

// wsEnd is how a session ends: the content of the status frame and the
// code of the close frame after it.
type wsEnd struct {
	st        *status.Status
	trailers  metadata.MD
	closeCode int
}

// callEnd is the ending for a call's final status: the close code repeats
// the status code.
func callEnd(st *status.Status, trailers metadata.MD) wsEnd {
	return wsEnd{st: st, trailers: trailers, closeCode: wsCloseCode(st.Code())}
}

// goingAway is the ending when the bridge shuts down: the client should
// reconnect, to another replica.
var goingAway = wsEnd{st: status.New(codes.Unavailable, "the bridge is shutting down"), closeCode: websocket.CloseGoingAway}

// violation is the ending for a frame that breaks the protocol: the close
// code is 1007 for a text frame that is not UTF-8 (RFC 6455 section 8.1),
// 1008 for every other violation.
func violation(err error) wsEnd {
	code := websocket.ClosePolicyViolation
	if errors.Is(err, errNotUTF8) {
		code = websocket.CloseInvalidFramePayloadData
	}
	return wsEnd{st: status.New(codes.InvalidArgument, err.Error()), closeCode: code}
}

// wsSession is one WebSocket connection and the one call it carries.
//
// Two goroutines share it, each with its own side:
//   - the reader (read) is the only one that reads the socket and the only
//     one that calls NewStream, SendMsg and CloseSend; it answers pings;
//   - the receiver (receive, then close) runs on the HTTP handler goroutine:
//     it is the only one that calls Header, RecvMsg and Trailer, and the
//     only one that writes data frames (messages, headers, the status),
//     each straight to the socket as it arrives, under a write deadline.
//
// Control frames (pings, pongs, the close frame) may be written from any
// goroutine: gorilla/websocket allows WriteControl alongside a data write.
// Pings, the pong check, the maximum duration and the drain are timers and
// context callbacks, not goroutines. The first ending (end) decides the
// status and cancels the call, which unblocks RecvMsg; the handler returns
// only after the reader has ended too.
type wsSession struct {
	h     *Handler
	m     *method
	r     *http.Request
	conn  *websocket.Conn
	start time.Time

	// ctx is the session's context: the request's values, but cancelled
	// only by end, so that the first ending decides the status. The call
	// derives from it. A per-connection object, hence a context field.
	ctx    context.Context
	cancel context.CancelFunc

	endOnce sync.Once
	ended   chan struct{} // closed by end, after final is set
	final   wsEnd         // written once by end, read after <-ended

	// opened hands the call that the reader opened to the receiver.
	opened     chan grpc.ClientStream
	readerDone chan struct{}

	// Between the reader and the ping check, as durations since start
	// (monotonic).
	lastPong atomic.Int64 // when the last pong arrived
	sending  atomic.Bool  // the reader waits on the backend, not the socket
	sentAt   atomic.Int64 // when the reader last stopped waiting on the backend

	// Reader side.
	md         metadata.MD   // request metadata: the upgrade's headers, then the metadata frame's
	noAmbient  bool          // the page is admitted only by "*": no cookie or authorization, from the frame either
	timeout    time.Duration // from grpc-timeout, noTimeout for none
	stream     grpc.ClientStream
	callCancel context.CancelFunc
	frames     int  // data frames read so far
	requests   int  // request messages sent
	endSeen    bool // the client sent end
	halfClosed bool // CloseSend was called
	callOver   bool // SendMsg reported that the call has ended

	obs StreamObserver // MessageReceived from the reader, MessageSent from the receiver

	// Receiver side.
	sent int // response messages written

	// The ping timer's, whose callbacks run one at a time.
	pinger       *time.Timer
	awaitingPong bool
	pingAt       int64 // when the unanswered ping was sent
	checkFrom    int64 // start of the time in which the reader must have read the pong

	failMu   sync.Mutex
	writeErr error // the first failed write: nothing more is written
}

func newWSSession(h *Handler, m *method, r *http.Request, conn *websocket.Conn, c browserCaller, md metadata.MD, timeout time.Duration) *wsSession {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	return &wsSession{
		h:          h,
		m:          m,
		r:          r,
		conn:       conn,
		start:      time.Now(),
		ctx:        ctx,
		cancel:     cancel,
		ended:      make(chan struct{}),
		opened:     make(chan grpc.ClientStream, 1),
		readerDone: make(chan struct{}),
		md:         md,
		timeout:    timeout,
		noAmbient:  c.wildcard,
	}
}

// serve runs the session until the call and the connection have ended.
func (s *wsSession) serve() {
	defer s.cancel()
	// A deadline that the HTTP server set for reading the request would
	// otherwise end the connection: the reader reads for as long as it is
	// open, and the writer's ping check decides when the peer is gone.
	_ = s.conn.SetReadDeadline(time.Time{})
	s.conn.SetPingHandler(s.onPing)
	s.conn.SetPongHandler(s.onPong)
	// close answers a close frame, after the status frame.
	s.conn.SetCloseHandler(func(int, string) error { return nil })

	stopWatch := s.watch()
	go func() {
		defer close(s.readerDone)
		s.read()
	}()
	select {
	case stream := <-s.opened:
		func() {
			defer s.h.recoverStream(s.m.name, TransportWebSocket, s.panicked)
			s.receive(stream)
		}()
	case <-s.ended:
	}
	stopWatch()
	s.close()
	<-s.readerDone
	s.obs.StreamEnded(s.final.st.Code(), s.final.closeCode, errors.Is(s.failed(), os.ErrDeadlineExceeded))
	s.h.logStreamEnd(s.r.Context(), s.r.RemoteAddr, streamEnd{
		method:      s.m.name,
		transport:   TransportWebSocket,
		st:          s.final.st,
		closeCode:   s.final.closeCode,
		clientFault: clientFaultClose(s.final.closeCode),
		start:       s.start,
		messages:    s.sent,
	})
}

// end ends the session with e, unless it has ended already: the first
// ending wins. It cancels the call at once.
func (s *wsSession) end(e wsEnd) {
	s.endOnce.Do(func() {
		s.final = e
		close(s.ended)
		s.cancel()
	})
}

func (s *wsSession) isEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

func (s *wsSession) since() int64 { return int64(time.Since(s.start)) }

// read is the reader goroutine. It reads frames until the socket fails or
// the peer's close frame arrives, and ends the session then, which cancels
// the call: the browser is gone. It keeps reading after the call has ended,
// discarding data frames, so that control frames are still processed and
// the peer's close frame is seen.
func (s *wsSession) read() {
	defer func() {
		if s.callCancel != nil {
			s.callCancel()
		}
	}()
	// Before the call's cancel, so that the status of a panic is the
	// session's, not the cancelled call's.
	defer s.h.recoverStream(s.m.name, TransportWebSocket, s.panicked)
	for {
		typ, rd, err := s.conn.NextReader()
		if err != nil {
			s.end(peerGone(err))
			return
		}
		// The limit is enforced here rather than with SetReadLimit, with
		// which the connection would send its own close frame without the
		// status frame before it. The rest of a message over the limit is
		// discarded by the next NextReader.
		data, err := io.ReadAll(io.LimitReader(rd, s.h.cfg.readMaxBytes+1))
		if err != nil {
			continue // NextReader returns the error again
		}
		if int64(len(data)) > s.h.cfg.readMaxBytes {
			s.end(wsEnd{
				st:        status.Newf(codes.ResourceExhausted, "message larger than the limit of %d bytes", s.h.cfg.readMaxBytes),
				closeCode: websocket.CloseMessageTooBig,
			})
			continue
		}
		if s.isEnded() || s.callOver {
			continue // the status and the close frame are on their way
		}
		var verr error
		switch typ {
		case websocket.BinaryMessage:
			verr = s.onMessage(data)
		case websocket.TextMessage:
			verr = s.onControl(data)
		}
		s.frames++
		if verr != nil {
			s.end(violation(verr))
		}
	}
}

// peerGone is the ending when the socket fails or the peer closes it, or
// when gorilla/websocket failed the connection for a frame that breaks
// RFC 6455 (brokenFraming).
func peerGone(err error) wsEnd {
	if e, ok := brokenFraming(err); ok {
		return e
	}
	st := status.New(codes.Canceled, "client connection lost")
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		st = status.Newf(codes.Canceled, "client closed the WebSocket with code %d", ce.Code)
	}
	return callEnd(st, nil)
}

// onMessage handles a binary frame: one request message. The first frame
// opens the call when no metadata frame did. A method that is not
// client-streaming takes exactly one message, which is followed by
// CloseSend at once.
func (s *wsSession) onMessage(data []byte) error {
	switch {
	case s.endSeen:
		return errors.New("message after end")
	case s.halfClosed:
		return fmt.Errorf("%s is not client-streaming: it takes exactly one request message", s.m.name)
	}
	// Decoded only to check it: a frame that is not the request type is a
	// protocol violation the browser hears about, not an error from the
	// backend.
	if err := proto.Unmarshal(data, s.m.input.New().Interface()); err != nil {
		return fmt.Errorf("binary frame is not a %s: %v", s.m.desc.Input().FullName(), explainDecodeError(s.m.desc.Input(), data, err))
	}
	if s.stream == nil && !s.open() {
		return nil
	}
	// data is this frame's own buffer (io.ReadAll), so grpc-go may keep it.
	if !s.send(&rawFrame{data: mem.BufferSlice{mem.SliceBuffer(data)}}) {
		return nil
	}
	s.obs.MessageReceived(len(data))
	s.requests++
	if !s.m.streamDesc.ClientStreams {
		s.closeSend()
	}
	return nil
}

// onControl handles a text frame: a metadata frame, which must come first
// and opens the call, or an end frame.
func (s *wsSession) onControl(data []byte) error {
	c, err := decodeControl(data)
	if err != nil {
		return err
	}
	if c.metadata != nil {
		if s.frames > 0 {
			return errors.New("metadata is allowed only once, as the first frame")
		}
		if err := s.addMetadata(c.metadata); err != nil {
			return err
		}
		s.open()
		return nil
	}
	switch {
	case s.endSeen:
		return errors.New("end sent twice")
	case !s.m.streamDesc.ClientStreams && s.requests == 0:
		return fmt.Errorf("end before the request message: %s takes exactly one request message", s.m.name)
	}
	s.endSeen = true
	if s.stream == nil && !s.open() {
		return nil
	}
	s.closeSend()
	return nil
}

// addMetadata adds the entries of a metadata frame to the request metadata
// with the rules of HTTP request headers: keys are case-insensitive, keys
// not on the allow-list are dropped, -bin values are base64, other values
// printable ASCII, and grpc-timeout sets the call's deadline.
func (s *wsSession) addMetadata(entries map[string][]string) error {
	for name, values := range entries {
		key := strings.ToLower(name)
		if !validKey(key) {
			return fmt.Errorf("metadata key %s is not a valid gRPC metadata key (letters, digits, '-', '_', '.')", quoteName(name))
		}
		// The bridge sets these itself, from the connection.
		if !s.h.requestMD.allows(key) || key == mdForwardedFor || key == mdForwardedHost ||
			s.noAmbient && slices.Contains(ambientCredentialKeys, key) {
			continue
		}
		if key == mdTimeout {
			if len(values) != 1 {
				return errors.New("metadata grpc-timeout: want exactly one value")
			}
			d, err := parseTimeout(values[0])
			if err != nil {
				return fmt.Errorf("metadata grpc-timeout: %w", err)
			}
			s.timeout = d
			continue
		}
		for _, v := range values {
			if strings.HasSuffix(key, binaryKeySuffix) {
				b, err := decodeBinaryHeader(v)
				if err != nil {
					return fmt.Errorf("metadata %s: not base64: %v", quoteName(key), err)
				}
				s.md[key] = append(s.md[key], string(b))
				continue
			}
			if !isPrintableASCII(v) {
				return fmt.Errorf("metadata %s: values must be printable ASCII", quoteName(key))
			}
			s.md[key] = append(s.md[key], v)
		}
	}
	return nil
}

// open starts the call and the receiver that relays its responses. It
// reports false when the call could not start; the session is ending then.
func (s *wsSession) open() bool {
	ctx, cancel := callContext(s.ctx, s.timeout)
	s.callCancel = cancel // called when the reader returns
	s.sending.Store(true)
	// Frames travel as the bytes they are: the browser's were checked to
	// decode as the request type, and the backend's go to the browser as
	// the backend encoded them (unknown fields included), with no second
	// decode and encode in the bridge.
	stream, err := s.m.conn.NewStream(metadata.NewOutgoingContext(ctx, s.md), &s.m.streamDesc, s.m.path,
		grpc.ForceCodecV2(rawCodec{}))
	s.doneSending()
	if err != nil {
		s.end(callEnd(s.m.callStatus(s.ctx, err), nil))
		return false
	}
	s.stream = stream
	s.opened <- stream // the only send: open is called once
	return true
}

// send sends one request message. It blocks while the backend does not
// take it (gRPC flow control), which holds up reading the socket and so,
// through TCP, the browser. It reports false when the call has ended.
func (s *wsSession) send(msg *rawFrame) bool {
	s.sending.Store(true)
	err := s.stream.SendMsg(msg)
	s.doneSending()
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF):
		// The call has ended; RecvMsg returns its status to the receiver.
		s.callOver = true
	default:
		s.end(callEnd(s.m.callStatus(s.ctx, err), nil))
	}
	return false
}

func (s *wsSession) doneSending() {
	s.sentAt.Store(s.since())
	s.sending.Store(false)
}

func (s *wsSession) closeSend() {
	_ = s.stream.CloseSend() // always nil for client streams
	s.halfClosed = true
}

// onPing runs on the reader, and answers at once (RFC 6455 section
// 5.5.3).
func (s *wsSession) onPing(payload string) error {
	s.writeControl(websocket.PongMessage, []byte(payload))
	return nil
}

// onPong runs on the reader.
func (s *wsSession) onPong(string) error {
	s.lastPong.Store(s.since())
	return nil
}

// receive relays the call's headers, messages and final status to the
// socket, on the handler goroutine. It reads the next message only after
// the previous one is written, so a slow browser slows the backend through
// gRPC flow control. It returns after the call's status, or when the
// session ends, which cancels the call and so unblocks RecvMsg.
func (s *wsSession) receive(stream grpc.ClientStream) {
	// Header blocks until the backend sends headers or ends the call; nil
	// means it ended without headers (a trailers-only response), whose
	// status RecvMsg returns next.
	if hdr, _ := stream.Header(); hdr != nil && !s.isEnded() {
		s.writeMessage(websocket.TextMessage, encodeHeaders(s.h.responseMD.responseMetadata(hdr)))
	}
	for !s.isEnded() {
		// Each response goes out as the bytes the backend sent.
		var msg rawFrame
		data, st := s.m.recvWire(stream, &msg)
		if st != nil {
			s.end(callEnd(st, stream.Trailer()))
			return
		}
		s.writeMessage(websocket.BinaryMessage, data)
		msg.free()
		s.sent++
		s.obs.MessageSent(len(data))
	}
}

// watch starts what ends the session from outside the call: the ping
// check, the maximum duration, the drain and the server's shutdown. The
// request's context ends while the socket is open only when the server's
// base context does (net/http has let go of a hijacked connection): the
// bridge is shutting down, as it is when Handler.Shutdown starts the
// drain.
func (s *wsSession) watch() (stop func()) {
	stops := []func() bool{
		context.AfterFunc(s.h.streams.drainCtx, func() { s.end(goingAway) }),
		context.AfterFunc(s.r.Context(), func() { s.end(goingAway) }),
	}
	if d := s.h.cfg.maxStreamDuration; d > 0 {
		t := time.AfterFunc(s.h.cfg.streamLifetime(d), func() {
			s.end(callEnd(status.Newf(codes.Unavailable, "the stream reached its maximum duration of %v", d), nil))
		})
		stops = append(stops, t.Stop)
	}
	s.pinger = time.AfterFunc(s.h.cfg.pingInterval, s.pingTick)
	stops = append(stops, s.pinger.Stop)
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// pingTick is the ping timer's callback: it sends a ping every ping
// interval and, a pong timeout after each, checks that its pong came.
func (s *wsSession) pingTick() {
	if s.isEnded() {
		return
	}
	cfg := s.h.cfg
	now := s.since()
	if !s.awaitingPong {
		s.awaitingPong = true
		s.pingAt, s.checkFrom = now, now
		s.writeControl(websocket.PingMessage, nil)
		s.pinger.Reset(cfg.pongTimeout)
		return
	}
	switch {
	case s.lastPong.Load() >= s.pingAt:
		s.awaitingPong = false
		s.pinger.Reset(time.Duration(s.pingAt + int64(cfg.pingInterval) - now))
	case s.sending.Load() || s.sentAt.Load() > s.checkFrom:
		// The reader has been waiting on the backend instead of reading
		// the socket, where the pong may sit: no verdict on the peer yet.
		s.checkFrom = now
		s.pinger.Reset(cfg.pongTimeout)
	default:
		s.end(callEnd(status.Newf(codes.Unavailable, "client did not answer a ping within %v", cfg.pongTimeout), nil))
	}
}

// close ends the connection as RFC 6455 section 7 asks: the status frame,
// then the close frame, then it waits for the peer's close frame (the
// reader returns when it arrives) for at most the pong timeout, and closes
// the TCP connection, which also ends a reader still waiting.
func (s *wsSession) close() {
	e := s.final
	s.writeMessage(websocket.TextMessage, encodeStatus(s.h.codec, e.st, s.h.responseMD.responseMetadata(e.trailers)))
	s.writeControl(websocket.CloseMessage, websocket.FormatCloseMessage(e.closeCode, closeReason(e.st.Message())))
	wait := time.NewTimer(s.h.cfg.pongTimeout)
	defer wait.Stop()
	select {
	case <-s.readerDone:
	case <-wait.C:
	}
	_ = s.conn.Close()
}

// writeMessage writes one data frame under the write deadline. After a
// failed write the connection is broken: the session ends and nothing more
// is written.
func (s *wsSession) writeMessage(typ int, data []byte) {
	if s.failed() != nil {
		return
	}
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.h.cfg.writeTimeout)); err != nil {
		s.writeFailed(err)
		return
	}
	// A short message would grow (compress.go); a no-op when
	// permessage-deflate was not negotiated.
	s.conn.EnableWriteCompression(len(data) >= compressMinWS)
	if err := s.conn.WriteMessage(typ, data); err != nil {
		s.writeFailed(err)
	}
}

// writeControl writes one control frame under the write deadline, from
// any goroutine.
func (s *wsSession) writeControl(typ int, data []byte) {
	if s.failed() != nil {
		return
	}
	err := s.conn.WriteControl(typ, data, time.Now().Add(s.h.cfg.writeTimeout))
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		s.writeFailed(err) // after the close frame, a pong is simply not sent
	}
}

func (s *wsSession) failed() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.writeErr
}

func (s *wsSession) writeFailed(err error) {
	s.failMu.Lock()
	if s.writeErr == nil {
		s.writeErr = err
	}
	s.failMu.Unlock()
	s.end(callEnd(status.New(codes.Unavailable, "write to client failed"), nil))
}

// closeReason makes a close frame's reason from a status message: valid
// UTF-8 (RFC 6455 section 5.5.1), cut on a character boundary to fit the
// frame.
func closeReason(msg string) string {
	return truncateUTF8(strings.ToValidUTF8(msg, "\uFFFD"), maxCloseReasonBytes)
}

// headerHasToken reports whether a comma-separated header (Connection,
// Upgrade) lists token, case-insensitively, as gorilla's handshake check
// reads them.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
