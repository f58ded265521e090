package bridge

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// The connection under a WebSocket's gorilla/websocket Conn, which lets
// the session's writer send the frames of several messages in one
// write(2). gorilla/websocket frames each message and writes it to its
// net.Conn at once; under load that is one system call per message, about
// half of the bridge's CPU in a pipelined echo. gorilla stays the framer
// (and the compressor); batchConn only decides when its bytes reach the
// socket.

// batchFlushBytes bounds what a batch gathers before it is written: what
// was gathered goes out before a write that would take it over the bound,
// and a write larger than the bound goes out on its own, without a copy.
const batchFlushBytes = 64 << 10

// batchConn is a net.Conn that, between hold and release, gathers the
// writes made to it (gorilla's data frames, and any control frame written
// meanwhile) and writes them together at release, under the deadline of
// the last SetWriteDeadline. Outside a batch it is the connection itself.
// The socket's own write lock keeps each write whole when a control frame
// from another goroutine is written at the same moment as a batch.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	holding  bool
	buf      []byte    // gathered while holding; lent by batchBufPool
	deadline time.Time // the write deadline asked for while holding
}

// batchBufPool lends gather buffers to connections only while they hold a
// batch, so an idle WebSocket holds none.
var batchBufPool = sync.Pool{New: func() any { return new([]byte) }}

// hold starts a batch.
func (c *batchConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.buf = (*batchBufPool.Get().(*[]byte))[:0]
	c.mu.Unlock()
}

// release ends the batch, writing what it gathered in one write under its
// deadline. It reports the first error of the batch's writes.
func (c *batchConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.holding = false
	if cap(c.buf) <= 2*batchFlushBytes {
		b := c.buf[:0]
		batchBufPool.Put(&b)
	}
	c.buf = nil
	return err
}

// flushLocked writes what is gathered. The lock is held across the write:
// a control frame from another goroutine waits for it, as it would wait
// for the socket's write lock.
func (c *batchConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
		return err
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// Write gathers p while a batch is held, and writes it otherwise.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > batchFlushBytes {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > batchFlushBytes {
			// The batch's deadline: flushLocked sets it only when it
			// had something to write.
			if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
				return 0, err
			}
			return c.Conn.Write(p)
		}
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// SetWriteDeadline sets the deadline of the next write: while a batch is
// held, of its write at release, so that gorilla's deadline for each frame
// costs no timer update.
func (c *batchConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.deadline = t
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines; a held batch's write takes t too.
func (c *batchConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

// batchHijacker is a ResponseWriter whose Hijack hands gorilla's upgrader
// a batchConn, the one it keeps in conn.
type batchHijacker struct {
	http.ResponseWriter
	conn *batchConn
}

// Hijack takes the connection over from net/http, as the ResponseWriter's
// own Hijack does, and wraps it.
func (w *batchHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &batchConn{Conn: nc}
	return w.conn, rw, nil
}

// Unwrap lets http.ResponseController reach the ResponseWriter.
func (w *batchHijacker) Unwrap() http.ResponseWriter { return w.ResponseWriter }
