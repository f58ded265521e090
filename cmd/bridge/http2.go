package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// The public and gRPC ports' HTTP/2: golang.org/x/net/http2's server, with
// two changes from how net/http runs its own copy of it.
//
// The write scheduler is x/net's random one. net/http's copy is fixed to
// the round-robin scheduler, which visits every open stream of a
// connection each time it looks for a frame to write: with 100 event
// streams on a connection that was the largest single cost of a fan-out
// (22% of the bridge's CPU in make bench's 4h2). The random scheduler
// visits only the streams with frames queued.
//
// The connection under the server coalesces its writes (coalescingConn).
// The server flushes whenever it has no frame left to write, and the
// frames of a fan-out arrive one stream's handler at a time, so each
// event of each stream was a write(2) of its own, as over HTTP/1.1 with a
// connection per stream: 0.97 write(2) per delivery in 4h2. The streams
// of one connection now share the writes that their events overlap.

// configureHTTP2 sets up srv's HTTP/2 (h2 by ALPN and h2c with prior
// knowledge, as its Protocols allow). Graceful shutdown is x/net's: it
// registers with srv's Shutdown.
func configureHTTP2(srv *http.Server) error {
	h2 := &http2.Server{
		NewWriteScheduler: func() http2.WriteScheduler { return http2.NewRandomWriteScheduler() },
	}
	if err := http2.ConfigureServer(srv, h2); err != nil {
		return err
	}
	// ConfigureServer's entries, with the connection coalescing.
	srv.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		serveHTTP2(h2, hs, &coalescingTLSConn{newCoalescingConn(c, c.NetConn()), c}, h, false)
	}
	// net/http hands over a cleartext HTTP/2 connection (its preface read)
	// inside a tls.Conn that only carries it.
	srv.TLSNextProto[nextProtoUnencryptedHTTP2] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		carrier, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			if hs.ErrorLog != nil {
				hs.ErrorLog.Print("http2: unexpected TLS connection in the cleartext hand-off")
			}
			_ = c.Close()
			return
		}
		nc := carrier.UnencryptedNetConn()
		serveHTTP2(h2, hs, newCoalescingConn(nc, nc), h, true)
	}
	return nil
}

// nextProtoUnencryptedHTTP2 is the TLSNextProto key under which net/http
// hands over cleartext HTTP/2 connections (Protocols.UnencryptedHTTP2).
const nextProtoUnencryptedHTTP2 = "unencrypted_http2"

// serveHTTP2 serves one HTTP/2 connection, as ConfigureServer's entries
// do: with the connection's base context, which net/http passes on
// through the handler.
func serveHTTP2(h2 *http2.Server, hs *http.Server, c net.Conn, h http.Handler, sawPreface bool) {
	var ctx context.Context
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		ctx = bc.BaseContext()
	}
	h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs, SawClientPreface: sawPreface})
}

// coalesceBytes bounds what a connection holds while a write is on the
// wire: the server's next write waits beyond it, as it would wait on the
// socket, so a client that does not read still stops the server.
const coalesceBytes = 64 << 10

// coalesceCloseWait bounds how long Close waits for what is held to be
// written (the server's last frames: a GOAWAY, an RST_STREAM).
const coalesceCloseWait = time.Second

// coalescingBufPool lends the held bytes' buffers to connections only while
// they hold some, so an idle connection holds none.
var coalescingBufPool = sync.Pool{New: func() any { return new([]byte) }}

// coalescingConn is a connection whose writes return once their bytes are
// held; a flusher goroutine, started only when there is something to
// write and none is running, writes everything held in one write(2),
// again while more is held, and exits when nothing is. Writes that arrive
// while one is on the wire go out together in the next. A failed write
// fails every write after it, and closes the socket, so that the server's
// reader ends the connection too.
type coalescingConn struct {
	net.Conn
	// raw is the socket under Conn: Conn itself in cleartext, the TLS
	// connection's socket under TLS, closed as is after a failed write (a
	// tls.Conn's Close would first try to send its close notice, for 5 s
	// more, to a peer that does not read).
	raw net.Conn

	mu       sync.Mutex
	room     sync.Cond // signalled when a write ends and when the flusher stops
	held     []byte
	flushing bool
	closed   bool
	err      error
}

// newCoalescingConn returns the coalescingConn of c, whose socket is raw.
func newCoalescingConn(c, raw net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c, raw: raw}
	cc.room.L = &cc.mu
	return cc
}

// Write holds p for the flusher. It waits while a write is on the wire and
// coalesceBytes are held already.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closed && c.flushing && len(c.held) >= coalesceBytes {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closed:
		return 0, net.ErrClosed
	}
	if c.held == nil {
		c.held = (*coalescingBufPool.Get().(*[]byte))[:0]
	}
	c.held = append(c.held, p...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	return len(p), nil
}

// flush is the flusher: it runs with flushing set, and writes until
// nothing is held.
func (c *coalescingConn) flush() {
	c.mu.Lock()
	var spare []byte
	for len(c.held) > 0 && c.err == nil {
		b := c.held
		c.held = spare
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		if err != nil {
			_ = c.raw.Close()
		}
		c.mu.Lock()
		if err != nil {
			c.err = err
		}
		spare = b[:0]
		c.room.Broadcast()
	}
	for _, b := range [][]byte{spare, c.held} {
		if b != nil && cap(b) <= 2*coalesceBytes {
			b = b[:0]
			coalescingBufPool.Put(&b)
		}
	}
	c.held = nil
	c.flushing = false
	c.room.Broadcast()
	c.mu.Unlock()
}

// Close writes what is held, for at most coalesceCloseWait, and closes the
// connection. Writes after it fail.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.flushing {
		_ = c.raw.SetWriteDeadline(time.Now().Add(coalesceCloseWait))
		for c.flushing {
			c.room.Wait()
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// coalescingTLSConn is a coalescingConn over TLS: the server reads the
// connection's TLS state (the client's ALPN, r.TLS) through it.
type coalescingTLSConn struct {
	*coalescingConn
	tls *tls.Conn
}

// ConnectionState is the TLS connection's.
func (c *coalescingTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }
