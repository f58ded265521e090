package main

import (
	"errors"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// msgTLSOnly is the refusal of a client that speaks cleartext HTTP/2 (a
// gRPC client with insecure credentials, grpcurl -plaintext) to the TLS
// port. It says what to change, and names no address.
const msgTLSOnly = "this port speaks TLS: connect with TLS"

const (
	// h2Preface is as much of the HTTP/2 client connection preface (RFC
	// 9113, section 3.4) as it takes to tell it from TLS, whose records
	// start with 0x16, and from HTTP/1, whose methods are no "PRI".
	h2Preface = "PRI * HTTP/2.0"
	// refusalIdleTimeout closes a refused connection this long after its
	// last request: a gRPC client keeps its connection, and every call on
	// it would get the refusal again, so there is no point holding it.
	refusalIdleTimeout = time.Second
	// refusalMaxAge closes a refused connection this long after the
	// sniff, however busy: a client that keeps calling must not hold it,
	// and a shutdown that waits for it, forever.
	refusalMaxAge = 10 * time.Second
)

// errCleartextHTTP2 ends the TLS handshake of a refused connection;
// http.Server logs it as the handshake error.
var errCleartextHTTP2 = errors.New("client sent cleartext HTTP/2 to the TLS port (answered UNAVAILABLE: " + msgTLSOnly + ")")

// tlsSniffListener is the TLS port's TCP listener, under crypto/tls (it
// is what [http.Server.ServeTLS] wraps). Its connections look at the
// client's first bytes before the TLS handshake consumes them: a client
// that opens cleartext HTTP/2, as a gRPC client without TLS does, is
// answered by refusal, a cleartext HTTP/2 server whose every answer is
// UNAVAILABLE [msgTLSOnly]; everything else goes to crypto/tls as before.
// Without this, such a client sees only a closed connection ("error
// reading server preface: EOF"). HTTP/1 needs nothing here: net/http
// already answers the common methods on a TLS port with "400 Client sent
// an HTTP request to an HTTPS server".
//
// Accept does no I/O: the sniff is in the connection's first Read (see
// [sniffConn]), so a client that sends nothing holds only its own
// connection, never the accept loop.
type tlsSniffListener struct {
	net.Listener
	refusal *http.Server
}

// newTLSSniffListener wraps l; the refusal server logs to errorLog.
func newTLSSniffListener(l net.Listener, errorLog *log.Logger) *tlsSniffListener {
	refusal := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// 400 for a client that is not gRPC, as net/http answers HTTP/1.
			writeUnavailable(w, r, msgTLSOnly, http.StatusBadRequest)
		}),
		ReadHeaderTimeout: refusalMaxAge,
		IdleTimeout:       refusalIdleTimeout,
		ErrorLog:          errorLog,
		Protocols:         new(http.Protocols),
	}
	refusal.Protocols.SetUnencryptedHTTP2(true) // and nothing else
	return &tlsSniffListener{Listener: l, refusal: refusal}
}

// Accept returns the next connection, unread.
func (l *tlsSniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{replayConn: replayConn{Conn: c}, refusal: l.refusal}, nil
}

// replayConn is a net.Conn whose reads return replay first: bytes already
// read from Conn.
type replayConn struct {
	net.Conn
	replay []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// sniffConn is a connection of a [tlsSniffListener]. Its first Read is the
// TLS handshake's, made in the goroutine http.Server runs the connection
// in, under the server's TLS handshake timeout (ReadHeaderTimeout), which
// bounds a client that sends its first bytes slowly or never, as it
// bounds a slow handshake. That Read sniffs: TLS (and anything but the
// HTTP/2 preface) is replayed to crypto/tls; the preface is served by the
// refusal server, and the Read then fails the handshake.
//
// Read is for one goroutine at a time (crypto/tls serialises its reads);
// Close and the other methods are the connection's, safe at any time.
type sniffConn struct {
	replayConn
	refusal *http.Server
	sniffed bool
}

func (c *sniffConn) Read(p []byte) (int, error) {
	if !c.sniffed {
		c.sniffed = true
		if c.sniff() {
			c.refuse()
			return 0, errCleartextHTTP2
		}
	}
	return c.replayConn.Read(p)
}

// sniff reads the client's first bytes into c.replay, at most
// len(h2Preface) and only while they can still be the preface, and
// reports whether they are. A TLS ClientHello or an HTTP/1 request
// differs at its first byte, so telling it costs the one read the
// handshake would have made. A read error ends the sniff: the connection
// returns it again to the next read, after the replay.
func (c *sniffConn) sniff() bool {
	buf := make([]byte, len(h2Preface))
	n := 0
	for n < len(buf) && strings.HasPrefix(h2Preface, string(buf[:n])) {
		m, err := c.Conn.Read(buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	c.replay = buf[:n]
	return string(c.replay) == h2Preface
}

// refuse serves the connection, preface and all, with c.refusal until the
// client, the idle timeout, refusalMaxAge or c.Close closes it. c stays
// the TLS server's connection meanwhile (in its handshake), so that
// server's Shutdown and Close reach it as they reach any other.
func (c *sniffConn) refuse() {
	rc := &refusedConn{replayConn: replayConn{Conn: c.Conn, replay: c.replay}, closed: make(chan struct{})}
	c.replay = nil
	t := time.AfterFunc(refusalMaxAge, func() { _ = rc.Close() })
	defer t.Stop()
	// Serve returns when the connection is closed (see oneConnListener).
	_ = c.refusal.Serve(&oneConnListener{conn: rc})
}

// refusedConn is a connection handed to the refusal server. closed is
// closed with it.
type refusedConn struct {
	replayConn
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *refusedConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// oneConnListener gives [http.Server.Serve] one connection, then holds
// Serve's next Accept until that connection is closed, so that Serve
// returns when the connection is done. Serve calls Accept from one
// goroutine.
type oneConnListener struct {
	conn     *refusedConn
	accepted bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.accepted {
		l.accepted = true
		return l.conn, nil
	}
	<-l.conn.closed
	return nil, net.ErrClosed
}

// Close does nothing: the connection closes itself, and unblocks Accept.
func (l *oneConnListener) Close() error { return nil }

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }
