package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// waitLong bounds every wait for something that should happen at once, so
// that a broken coalescingConn fails its test instead of hanging it.
const waitLong = 5 * time.Second

// stillBlockedFor is how long a test watches a call that must stay blocked.
const stillBlockedFor = 100 * time.Millisecond

// gatedConn is the net.Conn under a coalescingConn in its unit tests: the
// peer's side of the socket, under the test's control. Each Write records
// its bytes; when the conn is gated, a Write then waits for the test to
// release it (release), as a write waits on a peer that does not read. A
// release carries the write's result: nil lets it through, an error fails
// it. A blocked Write also fails with os.ErrDeadlineExceeded when the
// write deadline passes and with net.ErrClosed when the conn is closed, as
// a socket's does. Only Write, SetWriteDeadline and Close are implemented.
type gatedConn struct {
	net.Conn // nil: any other method panics

	gated   bool
	entered chan []byte // when gated: each Write's bytes, as it starts to wait
	release chan error  // when gated: one Write's result, nil for success

	mu       sync.Mutex
	written  [][]byte      // the bytes of each Write that succeeded, in order
	attempts int           // Writes made, successful or not
	deadline time.Time     // the write deadline; zero for none
	changed  chan struct{} // closed and replaced when the deadline changes
	closes   int           // Close calls
	closedAt int           // len(written) at the first Close
	closed   chan struct{} // closed by the first Close
}

// newGatedConn returns a gatedConn, gated or not. The test's end closes
// it, so that a Write still blocked in it (a failed test's) ends.
func newGatedConn(t *testing.T, gated bool) *gatedConn {
	g := &gatedConn{
		gated:   gated,
		entered: make(chan []byte, 16),
		release: make(chan error),
		changed: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

func (g *gatedConn) Write(p []byte) (int, error) {
	b := bytes.Clone(p) // the coalescingConn reuses its buffers
	g.mu.Lock()
	g.attempts++
	g.mu.Unlock()
	if g.gated {
		g.entered <- b
		if err := g.wait(); err != nil {
			return 0, err
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.written = append(g.written, b)
	return len(p), nil
}

// wait waits for a release, the deadline or the close, and returns the
// write's result.
func (g *gatedConn) wait() error {
	for {
		g.mu.Lock()
		deadline, changed := g.deadline, g.changed
		g.mu.Unlock()
		var timer *time.Timer
		var expired <-chan time.Time
		if !deadline.IsZero() {
			timer = time.NewTimer(time.Until(deadline)) // a past deadline fires at once
			expired = timer.C
		}
		var err error
		done := true
		select {
		case err = <-g.release:
		case <-expired:
			err = os.ErrDeadlineExceeded
		case <-g.closed:
			err = net.ErrClosed
		case <-changed: // wait again, for the new deadline
			done = false
		}
		if timer != nil {
			timer.Stop()
		}
		if done {
			return err
		}
	}
}

func (g *gatedConn) SetWriteDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deadline = t
	close(g.changed)
	g.changed = make(chan struct{})
	return nil
}

func (g *gatedConn) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closes++
	if g.closes == 1 {
		g.closedAt = len(g.written)
		close(g.closed)
	}
	return nil
}

// state returns the bytes of the successful writes, how many writes were
// made, and, once closed, how many writes had succeeded before the close
// (-1 while open).
func (g *gatedConn) state() (written []string, attempts, closedAt int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, b := range g.written {
		written = append(written, string(b))
	}
	closedAt = -1
	if g.closes > 0 {
		closedAt = g.closedAt
	}
	return written, g.attempts, closedAt
}

// awaitEntered waits for the next gated Write to start, and returns its
// bytes.
func (g *gatedConn) awaitEntered(t *testing.T) string {
	t.Helper()
	return string(await(t, g.entered, "the next underlying write"))
}

// releaseOne ends the gated Write that is waiting with err (nil: it
// succeeds).
func (g *gatedConn) releaseOne(t *testing.T, err error) {
	t.Helper()
	select {
	case g.release <- err:
	case <-time.After(waitLong):
		t.Fatalf("no underlying write to release within %v", waitLong)
	}
}

// await returns what ch delivers, failing the test if it delivers nothing
// within waitLong.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLong):
		t.Fatalf("%s: nothing within %v", what, waitLong)
		panic("unreachable")
	}
}

// stillBlocked fails the test if ch delivers within stillBlockedFor.
func stillBlocked[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s returned (%v), want it blocked", what, v)
	case <-time.After(stillBlockedFor):
	}
}

// writeAsync calls c.Write(p) on a goroutine and returns a channel that
// gets its error, once it returns. A count other than io.Writer's (all of
// p without an error, none with one, here) becomes an error of its own.
func writeAsync(c *coalescingConn, p []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(p)
		switch {
		case err == nil && n != len(p):
			err = fmt.Errorf("wrote %d bytes of %d without an error", n, len(p))
		case err != nil && n != 0:
			err = fmt.Errorf("%v, with %d bytes reported written", err, n) // not %w: no longer the error the test expects
		}
		done <- err
	}()
	return done
}

// mustWrite writes s to c and fails the test unless the Write returns at
// once and without an error.
func mustWrite(t *testing.T, c *coalescingConn, s string) {
	t.Helper()
	if err := await(t, writeAsync(c, []byte(s)), fmt.Sprintf("Write(%.8q)", s)); err != nil {
		t.Fatalf("Write(%.8q): %v", s, err)
	}
}

// closeAsync calls c.Close on a goroutine and returns a channel that gets
// its error.
func closeAsync(c *coalescingConn) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	return done
}

// summary shortens the written strings for a failure message.
func summary(written []string) []string {
	out := make([]string, len(written))
	for i, s := range written {
		if len(s) > 12 {
			s = fmt.Sprintf("%s...(%d bytes)", s[:12], len(s))
		}
		out[i] = s
	}
	return out
}

func TestCoalescingConnWritesWhatArrivesDuringAWriteTogether(t *testing.T) {
	t.Parallel()
	g := newGatedConn(t, true)
	c := newCoalescingConn(g, g)

	mustWrite(t, c, "a")
	if got := g.awaitEntered(t); got != "a" {
		t.Fatalf("first underlying write %q, want %q", got, "a")
	}
	// "a" is on the wire (the peer has not taken it): these are held, and
	// their Writes return at once.
	mustWrite(t, c, "b")
	mustWrite(t, c, "c")
	g.releaseOne(t, nil)
	if got := g.awaitEntered(t); got != "bc" {
		t.Fatalf("second underlying write %q, want %q", got, "bc")
	}
	g.releaseOne(t, nil)

	if err := await(t, closeAsync(c), "Close"); err != nil {
		t.Fatal(err)
	}
	written, attempts, closedAt := g.state()
	if strings.Join(written, ",") != "a,bc" || attempts != 2 || closedAt != 2 {
		t.Fatalf("underlying writes %q (%d made), closed after %d; want [a bc], then the close", written, attempts, closedAt)
	}
	// The flusher has stopped, and the idle connection holds no buffer.
	c.mu.Lock()
	flushing, held := c.flushing, c.held
	c.mu.Unlock()
	if flushing || held != nil {
		t.Fatalf("after the last write: flushing %v, holding %d bytes (buffer %v); want neither", flushing, len(held), held != nil)
	}
}

func TestCoalescingConnBoundsWhatItHolds(t *testing.T) {
	t.Parallel()
	g := newGatedConn(t, true)
	c := newCoalescingConn(g, g)

	mustWrite(t, c, "a")
	g.awaitEntered(t)
	// With "a" on the wire: below the bound a Write is held at once, even
	// one that takes what is held to the bound exactly...
	big := strings.Repeat("0123456789", coalesceBytes/10+1)[:coalesceBytes-1]
	mustWrite(t, c, big)
	mustWrite(t, c, "y")
	// ...and at the bound the next one waits for the write on the wire, as
	// a write to a socket whose peer does not read would.
	z := writeAsync(c, []byte("z"))
	stillBlocked(t, z, `Write("z") with coalesceBytes held`)

	g.releaseOne(t, nil) // "a" is taken: what was held goes on the wire
	if got := g.awaitEntered(t); got != big+"y" {
		t.Fatalf("second underlying write: %d bytes, want the %d held", len(got), len(big)+1)
	}
	// The held bytes left with that write, so "z" has room while it is on
	// the wire.
	if err := await(t, z, `Write("z") after the write on the wire ended`); err != nil {
		t.Fatal(err)
	}
	g.releaseOne(t, nil)
	if got := g.awaitEntered(t); got != "z" {
		t.Fatalf("third underlying write %q, want %q", got, "z")
	}
	g.releaseOne(t, nil)

	if err := await(t, closeAsync(c), "Close"); err != nil {
		t.Fatal(err)
	}
	written, _, closedAt := g.state()
	if strings.Join(written, "") != "a"+big+"yz" || len(written) != 3 || closedAt != 3 {
		t.Fatalf("underlying writes %q, closed after %d; want a, the held %d bytes, z, in order, then the close",
			summary(written), closedAt, len(big)+1)
	}
}

func TestCoalescingConnFailedWriteFailsLaterWritesAndCloses(t *testing.T) {
	t.Parallel()
	errPeer := errors.New("connection reset by peer")
	g := newGatedConn(t, true)
	c := newCoalescingConn(g, g)

	mustWrite(t, c, "a")
	g.awaitEntered(t)
	mustWrite(t, c, strings.Repeat("x", coalesceBytes)) // held: at the bound
	blocked := writeAsync(c, []byte("b"))
	stillBlocked(t, blocked, `Write("b") with coalesceBytes held`)

	g.releaseOne(t, errPeer) // the write on the wire fails
	// The Write waiting for room gets the error rather than waiting on...
	if err := await(t, blocked, `Write("b") waiting when the write failed`); !errors.Is(err, errPeer) {
		t.Fatalf(`Write("b") waiting when the write failed: %v, want %v`, err, errPeer)
	}
	// ...the underlying conn is closed, so that the server's reader ends
	// too...
	await(t, g.closed, "the underlying conn's close")
	// ...and every later Write fails with it.
	for range 2 {
		if err := await(t, writeAsync(c, []byte("c")), `Write("c") after the failure`); !errors.Is(err, errPeer) {
			t.Fatalf(`Write("c") after the failure: %v, want %v`, err, errPeer)
		}
	}
	// What was held when the write failed is dropped, not written.
	if err := await(t, closeAsync(c), "Close"); err != nil {
		t.Fatal(err)
	}
	if written, attempts, _ := g.state(); len(written) != 0 || attempts != 1 {
		t.Fatalf("underlying writes %q (%d made), want only the failed one made", summary(written), attempts)
	}
}

func TestCoalescingConnCloseWritesWhatIsHeldFirst(t *testing.T) {
	t.Parallel()
	g := newGatedConn(t, true)
	c := newCoalescingConn(g, g)

	mustWrite(t, c, "a")
	g.awaitEntered(t)
	mustWrite(t, c, "GOAWAY") // the server's last frame, held behind "a"
	closed := closeAsync(c)
	stillBlocked(t, closed, "Close with a write on the wire and bytes held")
	g.releaseOne(t, nil)
	if got := g.awaitEntered(t); got != "GOAWAY" {
		t.Fatalf("underlying write %q, want the held %q", got, "GOAWAY")
	}
	g.releaseOne(t, nil)
	if err := await(t, closed, "Close once the held bytes were written"); err != nil {
		t.Fatal(err)
	}
	if written, _, closedAt := g.state(); strings.Join(written, ",") != "a,GOAWAY" || closedAt != 2 {
		t.Fatalf("underlying writes %q, closed after %d; want [a GOAWAY], then the close", written, closedAt)
	}
}

func TestCoalescingConnCloseGivesUpOnAPeerThatDoesNotRead(t *testing.T) {
	t.Parallel()
	g := newGatedConn(t, true)
	c := newCoalescingConn(g, g)

	mustWrite(t, c, "a")
	g.awaitEntered(t) // and never released: the peer takes nothing
	mustWrite(t, c, "GOAWAY")
	start := time.Now()
	if err := await(t, closeAsync(c), "Close with a peer that does not read"); err != nil {
		t.Fatal(err)
	}
	// Close waited for the write deadline it set, no longer.
	if took := time.Since(start); took < coalesceCloseWait-50*time.Millisecond || took > 3*time.Second {
		t.Fatalf("Close took %v, want about coalesceCloseWait (%v)", took, coalesceCloseWait)
	}
	written, attempts, closedAt := g.state()
	if closedAt != 0 || len(written) != 0 || attempts != 1 {
		t.Fatalf("underlying writes %q (%d made), closed after %d; want the one write, failed, and the conn closed",
			written, attempts, closedAt)
	}
	if err := await(t, writeAsync(c, []byte("late")), "Write after the timed-out Close"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write after the timed-out Close: %v, want %v", err, os.ErrDeadlineExceeded)
	}
}

// TestHTTP2StalledStreamDoesNotStopItsConnection serves, on one cleartext
// HTTP/2 connection, a stream whose client reads nothing (A) beside one
// it reads (B). Flow control is per stream: A's window fills and the
// bridge's writes to it block, but the connection's writes (coalesced,
// scheduled) must go on carrying B, and the write timeout must end A.
func TestHTTP2StalledStreamDoesNotStopItsConnection(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-write-timeout", "1s"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)

	client := priorKnowledgeClient(t)
	transport := client.Transport.(*http.Transport)
	// A small stream window: A stalls after its first 64 KiB.
	const window = 64 << 10
	transport.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: window}
	var dials atomic.Int32
	dialer := &net.Dialer{}
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a backstop: no request outlives the test
	defer cancel()
	open := func(path string) *http.Response {
		t.Helper()
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			if dials.Load() != 1 {
				t.Errorf("%s: %d connections dialled, want all requests on one", path, dials.Load())
			}
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/event-stream")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %d, want HTTP/2 200", path, resp.Proto, resp.StatusCode)
		}
		return resp
	}

	// A: as fast as the backend can, far more than a few seconds can carry;
	// its body is not read until it must have been ended.
	const countA = 100000
	a := open(fmt.Sprintf("/demo.v1.EchoService/Stream?count=%d&size=16384", countA))
	startA := time.Now()
	// B: a tick every 50 ms, read throughout.
	b := open("/demo.v1.TickerService/Watch?symbol=B&interval_ms=50")
	ticks := readEventsAsync(b.Body)
	defer ticks.stop()

	// B delivers all along: through A's stall, which begins once A's first
	// 64 KiB are out, and through the write timeout's reset of A, 1 s on.
	// Were the connection held up by A, B would stop for good (the reset
	// could not go out either).
	var n int
	var maxGap time.Duration
	last := startA
	for time.Since(startA) < 2500*time.Millisecond {
		ev := ticks.next(t, "B's next tick while A is stalled")
		if ev.Type != "message" {
			continue
		}
		n++
		maxGap = max(maxGap, ev.at.Sub(last))
		last = ev.at
	}
	if n < 15 || maxGap > 700*time.Millisecond {
		t.Fatalf("B: %d ticks in 2.5 s, longest gap %v; want a tick every 50 ms while A was stalled", n, maxGap)
	}

	// A was ended by the bridge: its body holds what its window let
	// through, then ends; it does not block.
	type result struct {
		events, bytes int
		err           error
	}
	done := make(chan result, 1)
	go func() {
		body := &countingReader{r: a.Body}
		r := bridgetest.NewSSEReader(body)
		var res result
		for {
			ev, err := r.Next()
			if err != nil {
				res.err = err
				break
			}
			if ev.Type == "message" {
				res.events++
			}
		}
		res.bytes = body.n
		done <- res
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(waitLong):
		_ = a.Body.Close() // ends the read
		<-done
		t.Fatalf("A's body still open %v after its window filled; want the write timeout (1 s) to have ended it", time.Since(startA))
	}
	reset := res.err != nil && strings.Contains(res.err.Error(), "INTERNAL_ERROR")
	if (!reset && !errors.Is(res.err, io.EOF)) || res.events >= countA || res.bytes > window {
		t.Fatalf("A: %d events, %d bytes, then %v; want at most its %d-byte window, then a reset or EOF",
			res.events, res.bytes, res.err, window)
	}
	t.Logf("A: %d events, %d bytes, then %v", res.events, res.bytes, res.err)

	// B goes on after A's end, on the same connection.
	for seen := 0; seen < 3; {
		if ticks.next(t, "B's next tick after A's end").Type == "message" {
			seen++
		}
	}
	if d := dials.Load(); d != 1 {
		t.Fatalf("%d connections dialled, want one for both streams", d)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// timedEvent is an event and when it arrived.
type timedEvent struct {
	bridgetest.Event
	at  time.Time
	err error
}

// eventStream reads an SSE body on a goroutine of its own.
type eventStream struct {
	events chan timedEvent
	quit   chan struct{}
	done   chan struct{}
	body   io.Closer
}

// readEventsAsync reads body's events on a goroutine until its end or
// stop.
func readEventsAsync(body io.ReadCloser) *eventStream {
	s := &eventStream{events: make(chan timedEvent), quit: make(chan struct{}), done: make(chan struct{}), body: body}
	go func() {
		defer close(s.done)
		r := bridgetest.NewSSEReader(body)
		for {
			ev, err := r.Next()
			select {
			case s.events <- timedEvent{Event: ev, at: time.Now(), err: err}:
			case <-s.quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

// next returns the next event, failing the test on an error or if none
// comes within waitLong.
func (s *eventStream) next(t *testing.T, what string) timedEvent {
	t.Helper()
	ev := await(t, s.events, what)
	if ev.err != nil {
		t.Fatalf("%s: %v", what, ev.err)
	}
	return ev
}

// stop closes the body and waits for the reading goroutine to end.
func (s *eventStream) stop() {
	close(s.quit)
	_ = s.body.Close()
	<-s.done
}

// Over TLS, a Close with a peer that does not read also gives up after
// about coalesceCloseWait: the flusher closes the socket after its failed
// write, not the TLS connection, whose Close would first try to send its
// close notice for 5 s more. It took 6 s when it did.
func TestCoalescingTLSConnCloseGivesUpOnAPeerThatDoesNotRead(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	lis := listenLoopback(t)
	defer lis.Close()
	clientDone, peerQuit := make(chan struct{}), make(chan struct{})
	go func() { // the peer: a TLS handshake, then it reads nothing
		defer close(clientDone)
		raw, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer raw.Close()
		_ = raw.(*net.TCPConn).SetReadBuffer(16 << 10)
		if err := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}).Handshake(); err != nil {
			t.Error(err)
			return
		}
		<-peerQuit
	}()
	defer func() { close(peerQuit); <-clientDone }()
	raw, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.(*net.TCPConn).SetWriteBuffer(16 << 10)
	tc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c := &coalescingTLSConn{newCoalescingConn(tc, raw), tc}
	chunk := make([]byte, 16<<10)
	for deadline := time.Now().Add(waitLong); ; {
		// Write until a Write waits: the flusher is stuck in the socket,
		// with coalesceBytes held.
		done := writeAsync(c.coalescingConn, chunk)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatal("writes never waited for the peer")
			}
			continue
		case <-time.After(200 * time.Millisecond):
		}
		start := time.Now()
		closed := closeAsync(c.coalescingConn)
		await(t, closed, "Close")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("Close took %v; want about coalesceCloseWait (%v)", took, coalesceCloseWait)
		}
		if err := await(t, done, "the waiting Write"); err == nil {
			t.Error("the Write waiting behind the stuck one succeeded; want an error")
		}
		// A Write after Close fails at once.
		if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Write after Close: %v; want an error", err)
		}
		return
	}
}
