package bridge

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The WebSocket session's reader: the only goroutine that reads the
// socket, and the only one that opens the call and sends to it (NewStream,
// SendMsg, CloseSend). It answers pings, and the first frame that breaks
// the protocol ends the session.

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
		data, err := s.readMessage(rd)
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

// wsReadKeep is the largest read buffer a session keeps between messages:
// one large message does not stay allocated for the session's life.
const wsReadKeep = 64 << 10

// readMessage reads the rest of a message, up to one byte over the limit,
// into the session's read buffer: the bytes are valid until the next call.
// The buffer is reused, so that reading a message allocates nothing; what
// goes to the backend is copied out of it (onMessage).
func (s *wsSession) readMessage(rd io.Reader) ([]byte, error) {
	limit := min(s.h.cfg.readMaxBytes, math.MaxInt64-1) + 1
	buf := s.readBuf[:0]
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(limit-int64(len(buf)), int64(max(512, cap(buf))))))
		}
		room := buf[len(buf):cap(buf)]
		if left := limit - int64(len(buf)); int64(len(room)) > left {
			room = room[:left]
		}
		n, err := rd.Read(room)
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if cap(buf) <= wsReadKeep {
		s.readBuf = buf[:0]
	} else {
		s.readBuf = nil
	}
	return buf, nil
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
	if err := s.m.checkRequest(data); err != nil {
		return fmt.Errorf("binary frame is not a %s: %v", s.m.desc.Input().FullName(), err)
	}
	if s.stream == nil && !s.open() {
		return nil
	}
	// data is the session's read buffer: the frame goes to grpc-go, which
	// keeps it until written, as a copy of its own, pooled when large
	// enough (grpc-go frees it once written).
	s.sendFrame.data = mem.BufferSlice{mem.Copy(data, mem.DefaultBufferPool())}
	if !s.send(&s.sendFrame) {
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
// (see [headerMatcher.addControlMetadata]); grpc-timeout sets the call's
// deadline.
func (s *wsSession) addMetadata(entries map[string][]string) error {
	return s.h.requestMD.addControlMetadata(s.md, &s.timeout, entries, s.noAmbient)
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
	msg.free() // what SendMsg did not take, when it failed before encoding
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
