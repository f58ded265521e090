package bridge

import (
	"context"
	"errors"
	"net/http"
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
// The bytes go to an sseWire: over HTTP/1.1 the connection taken over from
// net/http (takeover.go), whose close a shared poller notices
// (watchClose); over HTTP/2 the ResponseWriter as is, whose handler
// goroutine is then the producer, since net/http has no per-stream reader
// to spare there.

// sseBatchBytes bounds the events pending while a write is on the wire:
// the producer waits for the writer beyond it, which is how a slow browser
// slows the call (and, through gRPC flow control, the backend). One event
// larger than this is still taken whole.
const sseBatchBytes = 32 << 10

// sseBufPool lends the pending-bytes buffers to streams only while they
// have something to write, so that an idle stream holds none. A pool holds
// pointers (a slice put in an interface is an allocation of its own), and
// the pointers travel back in sseBufHolders while their buffers are out,
// so that neither a get nor a put allocates.
var (
	sseBufPool    = sync.Pool{New: func() any { return new([]byte) }}
	sseBufHolders = sync.Pool{New: func() any { return new([]byte) }}
)

func getSSEBuf() []byte {
	p := sseBufPool.Get().(*[]byte)
	b := (*p)[:0]
	*p = nil
	sseBufHolders.Put(p)
	return b
}

func putSSEBuf(b []byte) {
	if cap(b) == 0 || cap(b) > 2*sseBatchBytes {
		return // one huge event must not stay pooled
	}
	p := sseBufHolders.Get().(*[]byte)
	*p = b[:0]
	sseBufPool.Put(p)
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
// guarded by mu; the wire is written only by the one writer that runs at a
// time (writing), or under mu before anything is written.
type sseOut struct {
	h      *Handler
	method string // the stream's method, for a panic's log and metric
	wire   sseWire
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

// newSSEOut returns the write side of a response of method through w.
func newSSEOut(h *Handler, w http.ResponseWriter, method string) *sseOut {
	o := &sseOut{
		h:         h,
		method:    method,
		wire:      &responseWire{w: w, rc: http.NewResponseController(w)},
		fail:      func(error) {},
		lastWrite: time.Now(),
	}
	o.room.L = &o.mu
	return o
}

// hijack takes the HTTP/1.1 connection over from net/http (see takeover).
// It reports false, and the stream goes on through the ResponseWriter,
// when the ResponseWriter cannot be hijacked.
func (o *sseOut) hijack() bool {
	t, ok := hijack(o.wire.(*responseWire).w)
	if ok {
		// The ResponseWriter holds net/http's buffers for the connection;
		// with it gone, they go too.
		o.wire = t
	}
	return ok
}

// watch calls gone, once and on another goroutine, when the browser
// closes the connection: the poller's report for a connection taken over;
// nothing otherwise, since net/http then ends the request's context.
func (o *sseOut) watch(gone func()) { o.wire.watch(gone) }

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
	o.grow()
	o.pending = o.wire.commit(o.pending)
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
// deadline. A panic in the wire (a listener's or a middleware's code) ends
// the stream as a failed write whose cause is errPanicked, not the process.
func (o *sseOut) write(b []byte) (err error) {
	defer o.h.recoverStream(o.method, TransportSSE, func(*status.Status) { err = errPanicked })
	return o.wire.write(b, time.Now().Add(o.h.cfg.writeTimeout))
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
	o.pending = o.wire.answer(o.pending, func(w http.ResponseWriter) { o.h.writeStatus(w, st) })
}

// close writes what is left, on the calling goroutine, and ends the
// response: it waits for a running writer, then closes the wire (a
// connection taken over gets its lingering close). The stream may not be
// used afterwards.
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
	o.wire.close()
}
