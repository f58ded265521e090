package bridge

import (
	"context"
	"errors"
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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
	bw := &batchHijacker{ResponseWriter: w}
	conn, err := upgrader.Upgrade(bw, r, nil)
	if err != nil {
		return // the upgrader has answered or closed the connection
	}
	_ = conn.SetCompressionLevel(compressLevel) // valid; a no-op when not negotiated
	s := newWSSession(h, m, r, conn, bw.conn, c, md, timeout)
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
// Two goroutines share it, each with its own side, and each side has a
// file of its own (and, during a burst of responses, the writer):
//   - the reader (ws_reader.go: read) is the only one that reads the
//     socket and the only one that calls NewStream, SendMsg and CloseSend;
//     it answers pings;
//   - the receiver (ws_writer.go: receive, then close) runs on the HTTP
//     handler goroutine: it is the only one that calls Header, RecvMsg and
//     Trailer, and it queues the data frames (headers, messages, the
//     status) in out, bounded; it writes a response that came alone
//     itself, and a writer goroutine, started only while frames are
//     queued, writes those of a burst in one write(2) each batch
//     (batchConn), under a write deadline.
//
// Control frames (pings, pongs, the close frame) may be written from any
// goroutine: gorilla/websocket allows WriteControl alongside a data write.
// The keepalive (ws_keepalive.go: pings, the pong check, the maximum
// duration and the drain) is timers and context callbacks, not goroutines.
// The control objects of text frames are ws_control.go's. The first
// ending (end) decides the status and cancels the call, which unblocks
// RecvMsg; the handler returns only after the reader has ended too.
type wsSession struct {
	h     *Handler
	m     *method
	r     *http.Request
	conn  *websocket.Conn
	bconn *batchConn // under conn: the writer's batches
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

	readBuf   []byte   // the message being read (readMessage), reused
	sendFrame rawFrame // the request on its way into SendMsg, reused: grpc-go takes its buffers

	obs StreamObserver // MessageReceived from the reader, MessageSent from the receiver

	// Receiver side.
	out       wsOut    // the data frames on their way to the writer
	sent      int      // response messages written, by the writer
	recvFrame rawFrame // RecvMsg's target, reused: its buffers move to the queued frame

	// The ping timer's, whose callbacks run one at a time.
	pinger       *time.Timer
	awaitingPong bool
	pingAt       int64 // when the unanswered ping was sent
	checkFrom    int64 // start of the time in which the reader must have read the pong

	failMu   sync.Mutex
	writeErr error // the first failed write: nothing more is written
}

func newWSSession(h *Handler, m *method, r *http.Request, conn *websocket.Conn, bconn *batchConn, c browserCaller, md metadata.MD, timeout time.Duration) *wsSession {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	s := &wsSession{
		h:          h,
		m:          m,
		r:          r,
		conn:       conn,
		bconn:      bconn,
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
	s.out.room.L = &s.out.mu
	return s
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
