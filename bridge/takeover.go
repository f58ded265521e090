package bridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

// sseWire is where the bytes of one SSE response go: net/http's
// ResponseWriter (responseWire), or an HTTP/1.1 connection taken over from
// net/http (takeover). sseOut calls commit, answer and watch under its
// lock before the first write, write from its one writer at a time, and
// close once, after the last write.
type sseWire interface {
	// commit starts the response as a 200 event stream, with the header
	// fields set so far, and returns dst with whatever must go out before
	// the stream's first bytes appended.
	commit(dst []byte) []byte
	// answer answers with what respond writes instead of a stream, and
	// returns dst with whatever must be written for it appended.
	answer(dst []byte, respond func(http.ResponseWriter)) []byte
	// watch calls gone, once and on another goroutine, when the browser
	// closes the connection.
	watch(gone func())
	// write writes b and flushes it to the browser by deadline.
	write(b []byte, deadline time.Time) error
	// close ends the response.
	close()
}

var (
	_ sseWire = (*responseWire)(nil)
	_ sseWire = (*takeover)(nil)
)

// setEventStreamHeader sets the header fields of an event stream.
func setEventStreamHeader(hdr http.Header) {
	hdr.Set(headerContentType, contentTypeEventStream)
	hdr.Set(headerCacheControl, "no-cache")
	hdr.Set(headerAccelBuffering, "no")
}

// responseWire writes through net/http's ResponseWriter: over HTTP/2, and
// over HTTP/1.1 when the connection cannot be taken over. net/http
// notices the browser's close (the request's context ends) and ends the
// response when the handler returns, with its own lingering close.
type responseWire struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (r *responseWire) commit(dst []byte) []byte {
	setEventStreamHeader(r.w.Header())
	r.w.WriteHeader(http.StatusOK)
	return dst
}

func (r *responseWire) answer(dst []byte, respond func(http.ResponseWriter)) []byte {
	respond(r.w) // buffered by net/http until the handler returns or flushes
	return dst
}

func (r *responseWire) watch(func()) {} // the request's context ends instead

func (r *responseWire) write(b []byte, deadline time.Time) error {
	if err := r.rc.SetWriteDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := r.w.Write(b); err != nil {
		return err
	}
	if err := r.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	// Clear the deadline: over HTTP/2 a deadline left set resets the
	// stream when it passes, even with no write pending, which would cut
	// every stream quiet for longer than the write timeout.
	_ = r.rc.SetWriteDeadline(time.Time{})
	return nil
}

func (r *responseWire) close() {}

// The HTTP/1.1 takeover.
//
// Over HTTP/1.1 an event stream takes its connection over from net/http
// (Hijack) before its first byte, so that net/http's goroutines and
// buffers for the connection go away: an idle stream is then one
// goroutine in RecvMsg plus grpc-go's own. The body is delimited by the
// connection's close, which HTTP/1.1 allows (RFC 9112 section 6.3) and
// EventSource expects anyway.
//
// With net/http gone, the takeover does what net/http would do for the
// connection:
//   - It reads what the client sends after its request and discards it: a
//     stray CRLF, which RFC 9112 section 2.2 asks servers to tolerate, or a
//     pipelined request, which the response's "Connection: close" leaves
//     unanswered (RFC 9112 section 9.3.2). Unread bytes make Linux answer
//     the close with a RST, which makes the client drop the stream's last
//     events unread. The shared close watcher does the reading (watchClose),
//     so it costs an idle stream no goroutine. What net/http's reader had
//     buffered already (the hijack's bufio.Reader) was read off the socket
//     and is simply let go.
//   - It closes with a lingering close: a half-close (FIN) first, then it
//     reads and discards until the client closes its side or
//     lingerTimeout passes, and only then closes the socket. net/http's
//     closeWriteAndWait half-closes and sleeps as long; reading instead
//     (RFC 9112 section 9.6: read until the client's close) ends the wait
//     as soon as the client has closed, which a browser does at once.

// lingerTimeout bounds the lingering close: net/http's rstAvoidanceDelay.
const lingerTimeout = 500 * time.Millisecond

// takeover is an HTTP/1.1 connection taken over from net/http for one
// event stream.
type takeover struct {
	conn net.Conn
	hdr  http.Header // the response's header fields, until they are written
	// unwatch stops watching conn for its close (watchClose).
	unwatch func()
}

// hijack takes the connection of w over from net/http. It reports false
// when w cannot be hijacked.
func hijack(w http.ResponseWriter) (*takeover, bool) {
	hdr := w.Header() // before the hijack, which forgets it
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, false
	}
	// The deadlines the server set for the request do not apply to the
	// stream; each write sets its own.
	_ = conn.SetDeadline(time.Time{})
	return &takeover{conn: conn, hdr: hdr}, true
}

func (t *takeover) commit(dst []byte) []byte {
	setEventStreamHeader(t.hdr)
	dst = appendResponseHead(dst, http.StatusOK, t.hdr)
	t.hdr = nil // written: an idle stream need not keep it
	return dst
}

func (t *takeover) answer(dst []byte, respond func(http.ResponseWriter)) []byte {
	resp := &bufferedResponse{hdr: t.hdr}
	respond(resp)
	t.hdr = nil
	return resp.appendTo(dst)
}

func (t *takeover) watch(gone func()) { t.unwatch = watchClose(t.conn, gone) }

func (t *takeover) write(b []byte, deadline time.Time) error {
	// A deadline left set on a connection does no harm: the next write
	// sets its own.
	if err := t.conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := t.conn.Write(b)
	return err
}

// close ends the response with a lingering close.
func (t *takeover) close() {
	if t.unwatch != nil {
		t.unwatch() // before the close frees the descriptor for reuse
	}
	tcp := t.conn
	if tc, ok := tcp.(*tls.Conn); ok {
		_ = tc.CloseWrite() // close_notify; the TCP half-close follows
		tcp = tc.NetConn()  // what the client sends now is discarded unread
	}
	if cw, ok := tcp.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		discardUntilClosed(tcp, time.Now().Add(lingerTimeout))
	}
	_ = t.conn.Close()
}

// discardUntilClosed reads and discards what c receives until the peer
// closes (or resets) it, or until deadline.
func discardUntilClosed(c net.Conn, deadline time.Time) {
	if c.SetReadDeadline(deadline) != nil {
		return
	}
	buf := make([]byte, 2048)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// appendResponseHead appends an HTTP/1.1 response's status line and
// header fields for a connection taken over: the response ends when the
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
// writing it as bytes to a connection taken over.
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
