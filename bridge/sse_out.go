package bridge

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/status"
)

// The write side of an SSE response.
//
// The goroutine that receives the call (the producer) appends whole events
// to sseOut's pending bytes and goes back to RecvMsg at once. A writer,
// started only when there is something to write and none is running,
// writes everything pending in one write and one flush, again while more
// is pending, and exits when nothing is: events that arrive while a write
// is on the wire go out together in the next one, and a stream costs no
// goroutine of its own while it is quiet. The heartbeat is a timer, not a
// goroutine either.
//
// Over HTTP/1.1 the response takes the connection over (Hijack) before its
// first byte, so that net/http's goroutines and buffers for the connection
// go away: an idle stream is then one goroutine in RecvMsg plus grpc-go's
// own, and the connection's close is noticed by a shared poller
// (watchClose). The body is delimited by the connection's close, which
// HTTP/1.1 allows (RFC 9112 section 6.3) and EventSource expects anyway.
// Over HTTP/2 the ResponseWriter is used as is: its handler goroutine is
// the producer, and net/http has no per-stream reader to spare.

// sseBatchBytes bounds the events pending while a write is on the wire:
// the producer waits for the writer beyond it, which is how a slow browser
// slows the call (and, through gRPC flow control, the backend). One event
// larger than this is still taken whole.
const sseBatchBytes = 32 << 10

// sseBufPool lends the pending-bytes buffers to streams only while they
// have something to write, so that an idle stream holds none.
var sseBufPool = sync.Pool{New: func() any { return new([]byte) }}

func getSSEBuf() []byte { return (*sseBufPool.Get().(*[]byte))[:0] }

func putSSEBuf(b []byte) {
	if cap(b) == 0 || cap(b) > 2*sseBatchBytes {
		return // one huge event must not stay pooled
	}
	b = b[:0]
	sseBufPool.Put(&b)
}

// Why a stream was cut short from outside the call: the causes of its
// context.
// (errDraining and errMaxDurationLimit are shared with native gRPC.)
var (
	errPeerGone  = errors.New("client disconnected")
	errNotServed = errors.New("stream ended")
)

// writeError is the cause of a stream whose write to the browser failed.
type writeError struct{ err error }

func (e writeError) Error() string { return "write to client: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// sseOut is the write side of one SSE response. All of its fields are
// guarded by mu; the ResponseWriter or the connection is used only by the
// one writer that runs at a time (writing), or under mu before anything is
// written.
type sseOut struct {
	h    *Handler
	w    http.ResponseWriter // nil once hijacked
	rc   *http.ResponseController
	hdr  http.Header // the response's header fields
	conn net.Conn    // the hijacked connection; nil: write through w
	// unwatch stops watching conn for its close (watchClose).
	unwatch func()
	// fail ends the stream with a writeError after a failed write. Set
	// before the first write.
	fail context.CancelCauseFunc
	// inline: the producer writes what it added itself (flush), when it
	// has nothing more queued; otherwise each addition makes sure a writer
	// is on its way. Read by the producer only.
	inline bool

	mu        sync.Mutex
	room      sync.Cond // signalled when a write ends and when the writer stops
	pending   []byte
	committed bool // the 200 and the retry hint are pending or written
	closed    bool // the stream has ended: nothing more is added
	writing   bool // a writer is running
	err       error
	lastWrite time.Time // for the heartbeat
	heartbeat *time.Timer
}

func newSSEOut(h *Handler, w http.ResponseWriter) *sseOut {
	o := &sseOut{h: h, w: w, rc: http.NewResponseController(w), hdr: w.Header(), fail: func(error) {}, lastWrite: time.Now()}
	o.room.L = &o.mu
	return o
}

// hijack takes the HTTP/1.1 connection over from net/http. It reports
// false, and the stream goes on through w, when the ResponseWriter cannot
// be hijacked.
func (o *sseOut) hijack() bool {
	conn, brw, err := o.rc.Hijack()
	if err != nil {
		return false
	}
	// The deadlines the server set for the request do not apply to the
	// stream; each write sets its own.
	_ = conn.SetDeadline(time.Time{})
	_ = brw // a browser sends nothing more on an event stream's connection
	o.conn = conn
	// The ResponseWriter holds net/http's buffers for the connection; with
	// it gone, they go too.
	o.w, o.rc = nil, nil
	return true
}

// startHeartbeat sends a comment when nothing was written for the
// heartbeat interval: it keeps proxies from closing a quiet stream, and
// commits the 200 of a backend that is slow to answer, so that the
// browser's EventSource sees the stream as open.
func (o *sseOut) startHeartbeat() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.heartbeat = time.AfterFunc(o.h.cfg.heartbeatInterval, o.beat)
}

func (o *sseOut) beat() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	interval := o.h.cfg.heartbeatInterval
	if quiet := time.Since(o.lastWrite); quiet < interval && o.committed {
		o.heartbeat.Reset(interval - quiet)
		return
	}
	o.commitLocked()
	o.grow()
	o.pending = append(o.pending, ssePing...)
	o.startWriterLocked()
	o.heartbeat.Reset(interval)
}

// commitLocked starts the 200 response and puts the retry hint first,
// once.
func (o *sseOut) commitLocked() {
	if o.committed {
		return
	}
	o.committed = true
	hdr := o.hdr
	hdr.Set(headerContentType, contentTypeEventStream)
	hdr.Set(headerCacheControl, "no-cache")
	hdr.Set(headerAccelBuffering, "no")
	o.grow()
	if o.conn != nil {
		o.pending = appendResponseHead(o.pending, http.StatusOK, hdr)
		o.hdr = nil // written: an idle stream need not keep it
	} else {
		o.w.WriteHeader(http.StatusOK)
	}
	o.pending = appendRetry(o.pending, o.h.cfg.retryInterval)
	o.pending = append(o.pending, '\n')
}

// event appends one event. It waits while a write is on the wire and
// sseBatchBytes are pending already. It fails once a write has failed.
func (o *sseOut) event(id, event string, data []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.waitRoomLocked(); err != nil {
		return err
	}
	o.commitLocked()
	o.pending = appendEvent(o.pending, id, event, data)
	o.addedLocked()
	return nil
}

// frame appends an event framed already (a shared call's).
func (o *sseOut) frame(b []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.waitRoomLocked(); err != nil {
		return err
	}
	o.commitLocked()
	o.pending = append(o.pending, b...)
	o.addedLocked()
	return nil
}

// addedLocked starts a writer for what was just added, unless the
// producer writes inline.
func (o *sseOut) addedLocked() {
	if !o.inline {
		o.startWriterLocked()
	}
}

// grow gives the stream a pending buffer from the pool when it has none.
func (o *sseOut) grow() {
	if o.pending == nil {
		o.pending = getSSEBuf()
	}
}

func (o *sseOut) waitRoomLocked() error {
	for o.err == nil && !o.closed && o.writing && len(o.pending) >= sseBatchBytes {
		o.room.Wait()
	}
	switch {
	case o.err != nil:
		return o.err
	case o.closed:
		return errNotServed
	}
	o.grow()
	return nil
}

func (o *sseOut) startWriterLocked() {
	if o.writing || len(o.pending) == 0 || o.err != nil {
		return
	}
	o.writing = true
	go o.writeLoop()
}

// flush writes what is pending on the calling goroutine, unless a writer
// is running already, which then writes it.
func (o *sseOut) flush() {
	o.mu.Lock()
	if o.writing || len(o.pending) == 0 || o.err != nil {
		o.mu.Unlock()
		return
	}
	o.writing = true
	o.mu.Unlock()
	o.writeLoop()
}

// writeLoop is the writer: it runs with writing set, writes until nothing
// is pending, and then lends the buffer back, so a quiet stream holds
// none.
func (o *sseOut) writeLoop() {
	o.mu.Lock()
	var spare []byte
	for len(o.pending) > 0 && o.err == nil {
		batch := o.pending
		o.pending = spare
		o.mu.Unlock()
		err := o.write(batch)
		o.mu.Lock()
		o.lastWrite = time.Now()
		if err != nil {
			o.err = writeError{err}
			o.fail(o.err)
		}
		spare = batch[:0]
		if cap(spare) > 2*sseBatchBytes {
			spare = nil
		}
		o.room.Broadcast() // room for the producer
	}
	putSSEBuf(spare)
	if len(o.pending) == 0 {
		putSSEBuf(o.pending)
		o.pending = nil
	}
	o.writing = false
	o.room.Broadcast() // for close, which waits for the writer to stop
	o.mu.Unlock()
}

// write writes one batch and flushes it to the browser under the write
// deadline.
func (o *sseOut) write(b []byte) error {
	deadline := time.Now().Add(o.h.cfg.writeTimeout)
	if o.conn != nil {
		// A deadline left set on a connection does no harm: the next write
		// sets its own.
		if err := o.conn.SetWriteDeadline(deadline); err != nil {
			return err
		}
		_, err := o.conn.Write(b)
		return err
	}
	if err := o.rc.SetWriteDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := o.w.Write(b); err != nil {
		return err
	}
	if err := o.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	// Clear the deadline: over HTTP/2 a deadline left set resets the
	// stream when it passes, even with no write pending, which would cut
	// every stream quiet for longer than the write timeout.
	_ = o.rc.SetWriteDeadline(time.Time{})
	return nil
}

// final appends the stream's last bytes with fn, under the lock, and
// marks the stream closed: nothing is added after them. It does nothing
// once the stream is closed or a write has failed.
func (o *sseOut) final(fn func(o *sseOut)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.err != nil {
		o.closed = true
		return
	}
	o.closed = true
	if o.heartbeat != nil {
		o.heartbeat.Stop()
	}
	o.grow()
	fn(o)
}

// answerLocked answers with st's JSON and HTTP status instead of a stream,
// which must not be committed: no byte of the response is written yet.
func (o *sseOut) answerLocked(st *status.Status) {
	o.committed = true
	if o.conn == nil {
		o.h.writeStatus(o.w, st)
		return
	}
	resp := &bufferedResponse{hdr: o.hdr}
	o.h.writeStatus(resp, st)
	o.pending = resp.appendTo(o.pending)
}

// close writes what is left, on the calling goroutine, and ends the
// response: it waits for a running writer, then closes a hijacked
// connection. The stream may not be used afterwards.
func (o *sseOut) close() {
	o.mu.Lock()
	o.closed = true
	if o.heartbeat != nil {
		o.heartbeat.Stop() // a beat that runs anyway sees closed
	}
	for o.writing {
		o.room.Wait()
	}
	o.mu.Unlock()
	o.flush()
	if o.conn != nil {
		if o.unwatch != nil {
			o.unwatch() // before the close frees the descriptor for reuse
		}
		// Half-close first, so that the browser reads the last events
		// rather than a reset.
		if cw, ok := o.conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = o.conn.Close()
	}
}

// appendResponseHead appends an HTTP/1.1 response's status line and
// header fields for a hijacked connection: the response ends when the
// connection closes.
func appendResponseHead(dst []byte, code int, hdr http.Header) []byte {
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	hdr.Set("Connection", "close")
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(code)...)
	dst = append(dst, "\r\n"...)
	buf := bytes.NewBuffer(dst)
	_ = hdr.Write(buf) // sorted, with line breaks in values replaced
	return append(buf.Bytes(), "\r\n"...)
}

// bufferedResponse is an http.ResponseWriter that keeps the response, for
// writing it as bytes to a hijacked connection.
type bufferedResponse struct {
	hdr  http.Header
	code int
	body []byte
}

func (b *bufferedResponse) Header() http.Header { return b.hdr }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	b.body = append(b.body, p...)
	return len(p), nil
}

// appendTo appends the whole response, with its Content-Length.
func (b *bufferedResponse) appendTo(dst []byte) []byte {
	b.hdr.Set("Content-Length", strconv.Itoa(len(b.body)))
	dst = appendResponseHead(dst, b.code, b.hdr)
	return append(dst, b.body...)
}
