package bridge

import (
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The WebSocket carrier of sessions: frames both ways in binary messages.

// sessionSubprotocol is the WebSocket subprotocol of sessions.
const sessionSubprotocol = "grpc-session.v1"

// closeReplaced is the close code of a WebSocket whose session another
// downstream took over.
const closeReplaced = 4000

// wsBatch bounds the frames of one WebSocket message from the bridge.
const wsBatch = 64 << 10

// serveWebSocket creates a session over a WebSocket (s nil) or reattaches
// s's downstream to one.
func (srv *sessionServer) serveWebSocket(w http.ResponseWriter, r *http.Request, c browserCaller, s *session) {
	h := srv.h
	if !slices.Contains(websocket.Subprotocols(r), sessionSubprotocol) {
		h.writeError(w, http.StatusBadRequest, status.Newf(codes.InvalidArgument,
			"offer the WebSocket subprotocol %s in Sec-WebSocket-Protocol", sessionSubprotocol))
		return
	}
	var ack uint64
	if s == nil {
		var code int
		var st *status.Status
		if s, code, st = srv.create(r, c, SessionCarrierWebSocket); st != nil {
			h.writeError(w, code, st)
			return
		}
	} else {
		var st *status.Status
		if ack, st = downstreamAck(r); st != nil {
			h.writeError(w, http.StatusBadRequest, st)
			return
		}
	}
	dl, hello, err := s.attach(SessionCarrierWebSocket, ack)
	if err != nil {
		h.writeError(w, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	defer s.detach(dl)
	upgrader := websocket.Upgrader{
		HandshakeTimeout: h.cfg.writeTimeout,
		WriteBufferPool:  wsWriteBufferPool,
		Subprotocols:     []string{sessionSubprotocol},
		// admitBrowser checked the origin, or the forwarding peer did.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, _ *http.Request, code int, reason error) {
			w.Header().Set(headerWSVersion, "13")
			h.writeError(w, code, status.New(codes.InvalidArgument, reason.Error()))
		},
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // answered; the session waits out its grace period
	}
	(&sessionWS{s: s, dl: dl, conn: conn}).serve(hello)
}

// sessionWS is one WebSocket attached to a session. The reader goroutine
// (read) is the only one that reads the socket; the handler goroutine
// (serve) is the only one that writes data frames, and sends the pings.
type sessionWS struct {
	s        *session
	dl       *downstream
	conn     *websocket.Conn
	lastPong atomic.Int64 // unix nanoseconds
}

func (ws *sessionWS) serve(hello []byte) {
	h := ws.s.srv.h
	_ = ws.conn.SetReadDeadline(time.Time{})
	ws.conn.SetReadLimit(h.cfg.readMaxBytes + maxBodyOverhead)
	ws.conn.SetPongHandler(func(string) error {
		ws.lastPong.Store(time.Now().UnixNano())
		return nil
	})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer h.recoverStream(sessionLogName, TransportSession, func(st *status.Status) { ws.s.close(errPanicked, st) })
		ws.read()
	}()
	closeCode := ws.write(hello)
	if closeCode != 0 {
		reason := ""
		if closeCode == closeReplaced {
			reason = "replaced"
		}
		_ = ws.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeCode, reason), time.Now().Add(h.cfg.writeTimeout))
		wait := time.NewTimer(h.cfg.pongTimeout)
		select {
		case <-readerDone:
		case <-wait.C:
		}
		wait.Stop()
	}
	_ = ws.conn.Close()
	<-readerDone
}

// read is the reader goroutine: each binary message is a batch of frames.
// It cuts the downstream when the socket fails or closes.
func (ws *sessionWS) read() {
	defer ws.s.detach(ws.dl)
	for {
		typ, rd, err := ws.conn.NextReader()
		if err != nil {
			return
		}
		data, err := io.ReadAll(rd)
		if err != nil {
			return // over the read limit: gorilla closes with 1009
		}
		if typ != websocket.BinaryMessage {
			ws.s.close(errSessionViolation, status.New(codes.InvalidArgument, "a text message on a session WebSocket: frames travel in binary messages"))
			continue
		}
		_, _ = ws.s.receive(data) // a violation closes the session, with its GOAWAY
	}
}

// write is the writer, on the handler goroutine: HELLO, then what the
// session has for this downstream, with a ping when idle. It returns the
// close code to send, or 0 when the connection is cut.
func (ws *sessionWS) write(hello []byte) int {
	h, s := ws.s.srv.h, ws.s
	if !ws.send(hello) {
		return 0
	}
	var pingAt time.Time // of the unanswered ping, zero for none
	lastHello := time.Now()
	for {
		if time.Since(lastHello) > s.srv.o.TokenTTL/2 {
			// A fresh token before the one the client holds expires.
			s.mu.Lock()
			hello := s.helloLocked()
			s.mu.Unlock()
			if !ws.send(hello) {
				return 0
			}
			lastHello = time.Now()
		}
		wait := h.cfg.pingInterval
		if !pingAt.IsZero() {
			wait = h.cfg.pongTimeout
		}
		batch, _, done := s.take(ws.dl, wait, wsBatch)
		switch {
		case done:
			return ws.endCode()
		case len(batch) > 0:
			if !ws.send(batch) {
				return 0
			}
			continue
		}
		if !pingAt.IsZero() {
			if ws.lastPong.Load() < pingAt.UnixNano() {
				return 0 // no pong in time: a cut, the session waits out its grace period
			}
			pingAt = time.Time{}
			continue
		}
		pingAt = time.Now()
		if err := ws.conn.WriteControl(websocket.PingMessage, nil, pingAt.Add(h.cfg.writeTimeout)); err != nil {
			return 0
		}
	}
}

func (ws *sessionWS) send(b []byte) bool {
	h := ws.s.srv.h
	if err := ws.conn.SetWriteDeadline(time.Now().Add(h.cfg.writeTimeout)); err != nil {
		return false
	}
	return ws.conn.WriteMessage(websocket.BinaryMessage, b) == nil
}

// endCode is the close code of a downstream that is over: 4000 when
// another took over, 1001 after the drain's GOAWAY, 1008 after a
// violation's, 1000 otherwise; 0 for a cut.
func (ws *sessionWS) endCode() int {
	s := ws.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case ws.dl.replaced:
		return closeReplaced
	case !s.final:
		return 0
	case s.goaway == nil:
		return websocket.CloseNormalClosure // the client's GOAWAY
	case s.goaway.Code() == codes.Unavailable:
		return websocket.CloseGoingAway
	case s.goaway.Code() == codes.InvalidArgument || s.goaway.Code() == codes.ResourceExhausted:
		return websocket.ClosePolicyViolation
	default:
		return websocket.CloseNormalClosure
	}
}
