package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

const (
	tickerPath = "/demo.v1.TickerService/Watch"
	echoPath   = "/demo.v1.EchoService/Echo"
	streamPath = "/demo.v1.EchoService/Stream"
	subproto   = "grpc-ws.v1"

	// testTimeout bounds every wait of the suite that has no tighter bound.
	testTimeout = 60 * time.Second
)

// --- binaries ---------------------------------------------------------

var binaries struct {
	mu   sync.Mutex
	dir  string
	path map[string]string
}

// buildBinary builds a command of this module (./cmd/bridge, ./cmd/demo)
// once per test binary and returns its path.
func buildBinary(t testing.TB, pkg string) string {
	t.Helper()
	binaries.mu.Lock()
	defer binaries.mu.Unlock()
	if p, ok := binaries.path[pkg]; ok {
		return p
	}
	if binaries.dir == "" {
		dir, err := os.MkdirTemp("", "reliability-bin-")
		if err != nil {
			t.Fatal(err)
		}
		binaries.dir, binaries.path = dir, map[string]string{}
	}
	out := filepath.Join(binaries.dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "github.com/grpcbridge/grpcbridge/"+strings.TrimPrefix(pkg, "./"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	binaries.path[pkg] = out
	return out
}

func removeBinaries() {
	if binaries.dir != "" {
		_ = os.RemoveAll(binaries.dir)
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// proc is a process of the suite: a bridge or a demo backend.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startProc starts bin and waits until addr accepts TCP connections. The
// process is killed when the test ends, if it is still running.
func startProc(t testing.TB, addr, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before listening on %s: %v\n%s", bin, addr, p.err, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %v\n%s", bin, addr, err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) signal(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
}

// kill kills the process (SIGKILL: no goodbye to its peers) and waits for it.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// wait waits up to d for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) (int, error) {
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) {
			return ee.ExitCode(), nil
		}
		if p.err != nil {
			return -1, p.err
		}
		return 0, nil
	case <-time.After(d):
		return -1, fmt.Errorf("still running after %v", d)
	}
}

// startDemoProc runs cmd/demo on addr.
func startDemoProc(t testing.TB, addr string) *proc {
	t.Helper()
	return startProc(t, addr, buildBinary(t, "./cmd/demo"), "-addr", addr)
}

// --- in-process backend -------------------------------------------------

// backend is the demo backend in this process on a loopback TCP port that
// it keeps across restarts, so that a bridge dialing it reconnects.
type backend struct {
	t    testing.TB
	addr string
	opts []grpc.ServerOption // of every server start runs (interceptors)

	mu     sync.Mutex
	srv    *grpc.Server
	served chan struct{}
}

// newBackend returns a backend on a free port, not started.
func newBackend(t testing.TB) *backend {
	b := &backend{t: t, addr: freeAddr(t)}
	t.Cleanup(b.stop)
	return b
}

// start serves the demo services on the backend's address.
func (b *backend) start() {
	b.t.Helper()
	var lis net.Listener
	var err error
	for range 100 { // the port of a stopped server may take a moment to free
		if lis, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("backend listen %s: %v", b.addr, err)
	}
	srv := grpc.NewServer(b.opts...)
	demo.Register(srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	b.mu.Lock()
	b.srv, b.served = srv, served
	b.mu.Unlock()
}

// stop kills the backend: every open stream fails at once, as when the
// process dies.
func (b *backend) stop() {
	b.mu.Lock()
	srv, served := b.srv, b.served
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-served
	}
}

// dialFast connects to a backend address with a short reconnect backoff,
// so that a restarted backend is found within a fraction of a second.
func dialFast(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// --- in-process bridge ---------------------------------------------------

// panicLog collects the http.Server's error log, where a handler panic
// would appear ("http: panic serving ...").
type panicLog struct{ buf lockedBuffer }

func (l *panicLog) check(t testing.TB) {
	t.Helper()
	if s := l.buf.String(); strings.Contains(s, "panic") {
		t.Errorf("the server logged a panic:\n%s", s)
	}
}

// newBridge serves a bridge for conn on a loopback port. It fails the test
// if a handler panicked.
func newBridge(t testing.TB, conn grpc.ClientConnInterface, opts ...bridge.Option) (*httptest.Server, *bridge.Handler) {
	t.Helper()
	h, err := bridge.NewHandler(append([]bridge.Option{
		bridge.WithBackend(conn),
		bridge.WithExpose("demo.v1.*"),
		bridge.WithRetryInterval(50 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	pl := &panicLog{}
	srv.Config.ErrorLog = log.New(&pl.buf, "", 0)
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		pl.check(t)
	})
	return srv, h
}

// newMemBridge is newBridge in front of an in-memory demo backend.
func newMemBridge(t testing.TB, opts ...bridge.Option) (*httptest.Server, *bridge.Handler) {
	t.Helper()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	return newBridge(t, conn, opts...)
}

// newHTTPClient returns a client without connection reuse limits, closed
// when the test ends.
func newHTTPClient(t testing.TB) *http.Client {
	tr := &http.Transport{
		MaxIdleConnsPerHost: -1,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// --- SSE client ----------------------------------------------------------

// status is a google.rpc.Status in JSON.
type status struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

// tick is the JSON of a demo.v1.Tick, as far as the suite reads it.
type tick struct {
	Symbol string `json:"symbol"`
	Seq    string `json:"seq"`
}

// follower is a Server-Sent Events client that follows the WHATWG
// specification as EventSource does, plus the bridge's contract (as the
// browser client library does): it reconnects after the retry time with
// Last-Event-ID when the stream ends or breaks or ends with a transient
// error event, moves to the next URL of its list on each reconnect
// (a load balancer's failover), stops at an end event, and fails on a
// non-200 answer or a final error event.
type follower struct {
	bases []string // bridge base URLs, tried in turn
	path  string   // path and query

	mu         sync.Mutex
	lastID     string
	seqs       []uint64
	connects   int
	transient  []status // transient error events seen
	hints      int      // retry fields seen after the first one of a response
	retryDelay time.Duration
}

func newFollower(path string, bases ...string) *follower {
	return &follower{bases: bases, path: path, retryDelay: 3 * time.Second}
}

func (f *follower) received() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.seqs...)
}

func (f *follower) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seqs)
}

// run follows the stream until it ends, fails, or until holds for the
// received ticks (then it stops and returns nil), or ctx ends.
func (f *follower) run(ctx context.Context, client *http.Client, until func(n int) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for attempt := 0; ; attempt++ {
		done, err := f.once(ctx, client, f.bases[attempt%len(f.bases)], until)
		if done || err != nil {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s after %d ticks and %d connections: %w", f.path, f.count(), f.connects, ctx.Err())
		}
		select {
		case <-time.After(f.retryDelay):
		case <-ctx.Done():
		}
	}
}

var errStop = errors.New("enough ticks")

// once makes one connection. It reports done when the stream ended for good.
func (f *follower) once(ctx context.Context, client *http.Client, base string, until func(n int) bool) (bool, error) {
	connCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(connCtx, http.MethodGet, base+f.path, nil)
	if err != nil {
		return true, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	f.mu.Lock()
	if f.lastID != "" {
		req.Header.Set("Last-Event-ID", f.lastID)
	}
	f.connects++
	f.mu.Unlock()
	resp, err := client.Do(req)
	if err != nil {
		return false, nil // network error: reconnect
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return true, fmt.Errorf("%s: HTTP %d: %s", f.path, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return true, fmt.Errorf("%s: Content-Type %q", f.path, ct)
	}
	rd := bridgetest.NewSSEReader(resp.Body)
	blocks := 0
	for {
		ev, err := rd.Next()
		if err != nil {
			if context.Cause(connCtx) == errStop {
				return true, nil
			}
			return false, nil // the stream ended or broke: reconnect
		}
		blocks++
		if ev.Retry > 0 {
			f.mu.Lock()
			f.retryDelay = ev.Retry
			if blocks > 1 {
				f.hints++
			}
			f.mu.Unlock()
		}
		switch ev.Type {
		case "message":
			var tk tick
			if err := json.Unmarshal([]byte(ev.Data), &tk); err != nil {
				return true, fmt.Errorf("%s: message %q: %v", f.path, ev.Data, err)
			}
			seq, err := strconv.ParseUint(tk.Seq, 10, 64)
			if err != nil {
				return true, fmt.Errorf("%s: message %q: %v", f.path, ev.Data, err)
			}
			f.mu.Lock()
			f.lastID = ev.ID
			f.seqs = append(f.seqs, seq)
			n := len(f.seqs)
			f.mu.Unlock()
			if until != nil && until(n) {
				cancel(errStop)
				return true, nil
			}
		case "end":
			return true, nil
		case "error":
			var st status
			if err := json.Unmarshal([]byte(ev.Data), &st); err != nil {
				return true, fmt.Errorf("%s: error event %q: %v", f.path, ev.Data, err)
			}
			if st.Code != 14 && st.Code != 10 {
				return true, fmt.Errorf("%s: final error event %+v", f.path, st)
			}
			f.mu.Lock()
			f.transient = append(f.transient, st)
			f.mu.Unlock()
		}
	}
}

// checkContiguous fails unless seqs is first, first+1, ...: every tick
// exactly once, no gap, no duplicate.
func checkContiguous(t testing.TB, what string, seqs []uint64, first uint64) {
	t.Helper()
	for i, s := range seqs {
		if s != first+uint64(i) {
			t.Errorf("%s: tick %d is seq %d, want %d (all: %v)", what, i, s, first+uint64(i), seqs)
			return
		}
	}
}

// --- WebSocket client ------------------------------------------------------

// wsDial opens a grpc-ws.v1 WebSocket to base+path.
func wsDial(ctx context.Context, base, path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: []string{subproto}, HandshakeTimeout: 10 * time.Second}
	return d.DialContext(ctx, "ws"+strings.TrimPrefix(base, "http")+path, hdr)
}

// wsFinal is how a WebSocket call ended: the status frame, if any, and the
// close code.
type wsFinal struct {
	st        *status
	closeCode int
	messages  [][]byte
	err       error // a read error other than a close frame
}

// wsReadToEnd reads frames until the close frame (or an error), keeping
// the binary messages and the status frame.
func wsReadToEnd(c *websocket.Conn, deadline time.Time) wsFinal {
	var fin wsFinal
	_ = c.SetReadDeadline(deadline)
	for {
		typ, data, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				fin.closeCode = ce.Code
			} else {
				fin.err = err
			}
			return fin
		}
		switch typ {
		case websocket.BinaryMessage:
			fin.messages = append(fin.messages, data)
		case websocket.TextMessage:
			var ctl struct {
				Status *status `json:"status"`
			}
			if json.Unmarshal(data, &ctl) == nil && ctl.Status != nil {
				fin.st = ctl.Status
			}
		}
	}
}

// newLogger is a log.Logger writing to l.
func newLogger(l *panicLog) *log.Logger { return log.New(&l.buf, "", 0) }

// startProcNoWait starts bin without waiting for it to listen.
func startProcNoWait(t testing.TB, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}
