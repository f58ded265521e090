package bridge

import (
	"errors"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The WebSocket session's writer: the receiver on the HTTP handler
// goroutine, the only one that receives from the call (Header, RecvMsg,
// Trailer) and writes data frames, each straight to the socket under a
// write deadline; control frames may be written from any goroutine.

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

// closeReason makes a close frame's reason from a status message: valid
// UTF-8 (RFC 6455 section 5.5.1), cut on a character boundary to fit the
// frame.
func closeReason(msg string) string {
	return truncateUTF8(strings.ToValidUTF8(msg, "\uFFFD"), maxCloseReasonBytes)
}
