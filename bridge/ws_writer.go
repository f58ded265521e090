package bridge

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The WebSocket session's writer. The receiver, on the HTTP handler
// goroutine, is the only one that receives from the call (Header, RecvMsg,
// Trailer). A response that came alone it writes itself, at once; one of
// a burst it queues in wsOut and goes back to RecvMsg. A writer goroutine,
// started only when there is something queued and none is running, writes
// everything queued in one write(2) through the batchConn, again while
// more is queued, and exits when nothing is: messages that arrive while a
// batch is on the wire go out together in the next one, and a quiet
// session has no writer. Control frames may be written from any
// goroutine.

// wsOutBytes bounds the data frames queued while a batch is on the wire:
// the receiver waits for the writer beyond it, which is how a slow browser
// slows the call (and, through gRPC flow control, the backend). One
// message larger than this is still taken whole. Each frame counts
// wsFrameCost more than its bytes, so that a backend streaming empty
// messages to a browser that does not read fills the queue too.
const wsOutBytes = 32 << 10

// wsFrameCost is what a queued frame counts beyond its bytes: about its
// entry in the queue and its frame header.
const wsFrameCost = 64

// wsKeepQueued is the capacity of a queue slice a quiet session keeps.
const wsKeepQueued = 64

// wsBurstGap tells a response that came alone from one of a burst: one
// that kept the receiver waiting at least this long is written at once by
// the receiver, with no hand-off to a writer goroutine, which is what a
// round trip waits for; one that was there already (the wait was shorter)
// goes to the writer, and the receiver goes on receiving what follows,
// which then shares the writer's next write(2). Waking a parked goroutine
// takes longer than this; taking a message that is there does not.
const wsBurstGap = 20 * time.Microsecond

// wsQueued is one data frame waiting for the writer.
type wsQueued struct {
	typ      int
	data     []byte
	msg      rawFrame // the buffers behind data, freed once written
	response bool     // a response message, counted once written
}

// wsOut is the queue between the receiver and the writer. Its fields are
// guarded by mu; the socket's data frames are written only by the one
// writer that runs at a time (writing).
type wsOut struct {
	mu      sync.Mutex
	room    sync.Cond // signalled when a batch is written and when the writer stops
	queue   []wsQueued
	spare   []wsQueued // the writer's last batch, emptied: the next queue
	bytes   int        // of the frames in queue, wsFrameCost each beyond their data
	writing bool       // a writer is running
}

// receive relays the call's headers and messages to the socket, on the
// handler goroutine. It reads the next message only while the queue has
// room, so a slow browser slows the backend through gRPC flow control. It
// returns after the call's status, or when the session ends, which cancels
// the call and so unblocks RecvMsg.
func (s *wsSession) receive(stream grpc.ClientStream) {
	// Header blocks until the backend sends headers or ends the call; nil
	// means it ended without headers (a trailers-only response), whose
	// status RecvMsg returns next.
	if hdr, _ := stream.Header(); hdr != nil && !s.isEnded() {
		s.queue(wsQueued{typ: websocket.TextMessage, data: encodeHeaders(s.h.responseMD.responseMetadata(hdr))}, false)
	}
	for !s.isEnded() {
		// Each response goes out as the bytes the backend sent.
		waitFrom := time.Now()
		data, st := s.m.recvWire(stream, &s.recvFrame)
		if st != nil {
			s.end(callEnd(st, stream.Trailer()))
			return
		}
		q := wsQueued{typ: websocket.BinaryMessage, data: data, msg: s.recvFrame, response: true}
		s.recvFrame = rawFrame{}
		s.queue(q, time.Since(waitFrom) >= wsBurstGap)
	}
}

// queue hands one data frame to the writer, starting one if none is
// running; with inline, when none is running and nothing is queued, the
// calling goroutine writes it at once instead. It waits while a batch is
// on the wire and wsOutBytes are queued already. After a failed write the
// frame is dropped: the session is ending and nothing more is written.
func (s *wsSession) queue(q wsQueued, inline bool) {
	o := &s.out
	o.mu.Lock()
	for o.writing && o.bytes >= wsOutBytes && s.failed() == nil {
		o.room.Wait()
	}
	if s.failed() != nil {
		o.mu.Unlock()
		q.msg.free()
		return
	}
	inline = inline && !o.writing && len(o.queue) == 0
	o.queue = append(o.queue, q)
	o.bytes += wsFrameCost + len(q.data)
	start := !o.writing
	o.writing = true
	o.mu.Unlock()
	switch {
	case inline:
		s.writeLoop()
	case start:
		go s.writeLoop()
	}
}

// flushOut waits for a running writer and writes what is still queued on
// the calling goroutine, so that the close frame comes after every data
// frame.
func (s *wsSession) flushOut() {
	o := &s.out
	o.mu.Lock()
	for o.writing {
		o.room.Wait()
	}
	left := len(o.queue) > 0
	o.writing = left
	o.mu.Unlock()
	if left {
		s.writeLoop()
	}
}

// writeLoop is the writer: it runs with writing set, writes batches until
// nothing is queued, and clears writing.
func (s *wsSession) writeLoop() {
	o := &s.out
	o.mu.Lock()
	for len(o.queue) > 0 {
		batch := o.queue
		o.queue, o.spare, o.bytes = o.spare, nil, 0
		o.mu.Unlock()
		s.writeBatch(batch)
		clear(batch)
		o.mu.Lock()
		o.spare = batch[:0]
		o.room.Broadcast() // room for the receiver
	}
	// The two slices alternate, so a steady stream allocates none; those a
	// burst grew do not stay with a session that may now be quiet.
	if cap(o.queue) > wsKeepQueued {
		o.queue = nil
	}
	if cap(o.spare) > wsKeepQueued {
		o.spare = nil
	}
	o.writing = false
	o.room.Broadcast() // for flushOut, which waits for the writer to stop
	o.mu.Unlock()
}

// writeBatch writes a batch's frames and frees their buffers. After a
// failed write the connection is broken: the session ends and nothing more
// is written. A panic (in gorilla/websocket, or in a metrics observer)
// ends the session as INTERNAL, not the process.
func (s *wsSession) writeBatch(batch []wsQueued) {
	defer func() {
		for i := range batch {
			batch[i].msg.free()
		}
	}()
	defer s.h.recoverStream(s.m.name, TransportWebSocket, s.panicked)
	if s.failed() != nil {
		return
	}
	if err := s.writeFrames(batch); err != nil {
		s.writeFailed(err)
		return
	}
	for _, q := range batch {
		if q.response {
			s.sent++
			s.obs.MessageSent(len(q.data))
		}
	}
}

// writeFrames writes batch's frames through gorilla/websocket, in one
// write under the write deadline.
func (s *wsSession) writeFrames(batch []wsQueued) (err error) {
	s.bconn.hold()
	defer func() {
		if rerr := s.bconn.release(); err == nil {
			err = rerr
		}
	}()
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.h.cfg.writeTimeout)); err != nil {
		return err
	}
	for _, q := range batch {
		// A short message would grow (compress.go); a no-op when
		// permessage-deflate was not negotiated.
		s.conn.EnableWriteCompression(len(q.data) >= compressMinWS)
		if err := s.conn.WriteMessage(q.typ, q.data); err != nil {
			return err
		}
	}
	return nil
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
	// A receiver waiting for room sees the failure.
	s.out.mu.Lock()
	s.out.room.Broadcast()
	s.out.mu.Unlock()
}

// close ends the connection as RFC 6455 section 7 asks: the status frame
// after every queued data frame, then the close frame, then it waits for the peer's close frame (the
// reader returns when it arrives) for at most the pong timeout, and closes
// the TCP connection, which also ends a reader still waiting.
func (s *wsSession) close() {
	e := s.final
	s.queue(wsQueued{typ: websocket.TextMessage, data: encodeStatus(s.h.codec, e.st, s.h.responseMD.responseMetadata(e.trailers))}, false)
	s.flushOut()
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
