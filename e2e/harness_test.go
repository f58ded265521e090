package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
	"github.com/grpcbridge/grpcbridge/web"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// actionTimeout bounds every step that waits for the page.
const actionTimeout = 30 * time.Second

// requireChromium skips the test when there is no browser, unless
// BRIDGE_E2E=1 asks for the browser tests, in which case it fails.
func requireChromium(t *testing.T) {
	t.Helper()
	required := os.Getenv("BRIDGE_E2E") == "1"
	if _, err := os.Stat(chromiumPath); err != nil {
		if required {
			t.Fatalf("BRIDGE_E2E=1 but there is no browser: %v (apt-get install chromium)", err)
		}
		t.Skipf("browser tests skipped: %s not found (apt-get install chromium; BRIDGE_E2E=1 makes this an error)", chromiumPath)
	}
	if testing.Short() && !required {
		t.Skip("browser tests skipped in -short mode")
	}
}

// browser is the one Chromium that all tests share, each test in a
// browser context (a profile) of its own; started by the first test that
// needs it, stopped by TestMain.
var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

// sharedBrowser starts the browser, once: headless, with a fresh profile in
// a temporary directory that chromedp removes when it stops.
func sharedBrowser() (context.Context, error) {
	browser.once.Do(func() {
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
			chromedp.ExecPath(chromiumPath),
			chromedp.Headless,
			chromedp.NoSandbox,
			chromedp.NoFirstRun,
			chromedp.Flag("disable-gpu", true),
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.Flag("disable-background-timer-throttling", true),
			chromedp.Flag("disable-renderer-backgrounding", true),
		)
		ctx, cancel := chromedp.NewContext(allocCtx)
		browser.ctx = ctx
		browser.cancel = func() {
			cancel()
			cancelAlloc()
		}
		// The first run starts the browser; it must not have a timeout, which
		// would stop the browser with it, so the wait is bounded here.
		started := make(chan error, 1)
		go func() { started <- chromedp.Do(ctx) }()
		select {
		case browser.err = <-started:
		case <-time.After(actionTimeout):
			browser.cancel()
			<-started
			browser.err = fmt.Errorf("no answer in %v", actionTimeout)
		}
		if browser.err != nil {
			browser.err = fmt.Errorf("start %s: %w", chromiumPath, browser.err)
		}
	})
	return browser.ctx, browser.err
}

// stopBrowser stops the shared browser, if a test started it, and waits
// for it to exit.
func stopBrowser() {
	if browser.ctx == nil {
		return
	}
	stopCtx, stop := context.WithTimeout(browser.ctx, 10*time.Second)
	defer stop()
	_ = chromedp.Cancel(stopCtx)
	browser.cancel()
}

// newBrowser returns a browser context of its own for the test: its tabs
// share cookies and caches with each other and with no other test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	requireChromium(t)
	root, err := sharedBrowser()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := chromedp.NewContext(root, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("new browser context: %v", err)
	}
	t.Cleanup(func() { closeTarget(ctx, cancel) })
	return ctx
}

// closeTarget closes a tab and waits until it is gone, so that its
// connections to the test's servers are closed before the servers are.
func closeTarget(ctx context.Context, cancel context.CancelFunc) {
	stopCtx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	_ = chromedp.Cancel(stopCtx)
	cancel()
}

// tab is one page of the browser.
type tab struct {
	t   *testing.T
	ctx context.Context
}

// newTab opens a tab on url and waits until the page has loaded.
func newTab(t *testing.T, browser context.Context, url string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	if err := chromedp.Do(ctx); err != nil { // opens the tab, without a timeout
		cancel()
		t.Fatalf("open tab: %v", err)
	}
	t.Cleanup(func() { closeTarget(ctx, cancel) })
	p := &tab{t: t, ctx: ctx}
	p.do(chromedp.Navigate(url))
	p.wait(`window.demo !== undefined`)
	return p
}

func (p *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into out.
func (p *tab) eval(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			p.t.Fatalf("evaluate %s: %v (%s)", expr, err, raw)
		}
	}
}

// wait waits until the JavaScript expression is truthy.
func (p *tab) wait(expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, actionTimeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(actionTimeout)))
	if err != nil {
		var log []string
		p.evalQuiet(`window.demo ? window.demo.ticker.log : []`, &log)
		p.t.Fatalf("waiting for %s: %v (ticker log: %q)", expr, err, log)
	}
}

func (p *tab) evalQuiet(expr string, out any) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr)); err == nil {
		_ = json.Unmarshal(raw, out)
	}
}

// click clicks the element with the id, as a user would.
func (p *tab) click(id string) {
	p.t.Helper()
	p.eval(`document.getElementById(`+jsString(id)+`).click()`, nil)
}

// setValue sets the value of an input or select.
func (p *tab) setValue(id, value string) {
	p.t.Helper()
	p.eval(`document.getElementById(`+jsString(id)+`).value = `+jsString(value), nil)
}

// text returns the text of the element with the id.
func (p *tab) text(id string) string {
	p.t.Helper()
	var s string
	p.eval(`document.getElementById(`+jsString(id)+`).textContent`, &s)
	return s
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// newBridge serves the bridge in front of an in-memory demo backend, and the
// demo page at / as cmd/bridge -demo does, on a loopback address. wrap, when
// not nil, wraps the whole handler.
func newBridge(t *testing.T, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	return newBridgeWith(t, bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) }), wrap)
}

// newBridgeWith is newBridge in front of conn, with opts after the
// harness's own options.
func newBridgeWith(t *testing.T, conn grpc.ClientConnInterface, wrap func(http.Handler) http.Handler, opts ...bridge.Option) *httptest.Server {
	t.Helper()
	h, err := bridge.NewHandler(append([]bridge.Option{
		bridge.WithBackend(conn),
		bridge.WithExpose("demo.v1.*"),
		bridge.WithRetryInterval(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	mux := pageMux()
	mux.Handle("/", h)
	var handler http.Handler = mux
	if wrap != nil {
		handler = wrap(handler)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv
}

// pageMux serves the demo page and its assets as cmd/bridge's routes does.
func pageMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", http.FileServerFS(web.Dist))
	mux.Handle("GET /static/", http.StripPrefix("/static", http.FileServerFS(web.Dist)))
	return mux
}

// requestLog records the requests for one path: their headers, queries and
// answer status.
type requestLog struct {
	mu   sync.Mutex
	reqs []loggedRequest
}

type loggedRequest struct {
	header http.Header
	query  string
	status int
}

func (l *requestLog) add(r *http.Request) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, loggedRequest{header: r.Header.Clone(), query: r.URL.RawQuery})
	return len(l.reqs) - 1
}

func (l *requestLog) setStatus(i, code int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reqs[i].status == 0 {
		l.reqs[i].status = code
	}
}

func (l *requestLog) all() []loggedRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedRequest(nil), l.reqs...)
}

// logRequests records the requests for path in l, with the status of each
// answer; WebSocket upgrades keep working (Hijack passes through).
func logRequests(path string, l *requestLog) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				next.ServeHTTP(w, r)
				return
			}
			i := l.add(r)
			next.ServeHTTP(&statusWriter{ResponseWriter: w, set: func(code int) { l.setStatus(i, code) }}, r)
		})
	}
}

// statusWriter reports the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	set func(int)
}

func (w *statusWriter) WriteHeader(code int) {
	w.set(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.set(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack is for gorilla/websocket, which asserts http.Hijacker rather than
// using a ResponseController.
// A successful upgrade is recorded as 101.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.set(http.StatusSwitchingProtocols)
	}
	return c, rw, err
}

var errCut = errors.New("connection cut by the test")

// cutWriter passes an event stream through until it has written after
// events, then writes the first bytes of the next event and closes the TCP
// connection under the handler: a connection that drops mid-event.
type cutWriter struct {
	http.ResponseWriter
	after  int
	events int
	cut    bool
	onCut  func()
}

func (w *cutWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *cutWriter) Write(p []byte) (int, error) {
	return w.pass(p, w.ResponseWriter.Write, func() {
		rc := http.NewResponseController(w.ResponseWriter)
		_ = rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			_ = conn.Close()
		}
	})
}

// Hijack hands out the connection with the same cut: over HTTP/1.1 the
// bridge writes an event stream to the connection itself.
func (w *cutWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := &cutConn{Conn: conn}
	c.write = func(p []byte) (int, error) {
		return w.pass(p, conn.Write, func() { _ = conn.Close() })
	}
	return c, brw, nil
}

// pass writes p with write until the cut, where it writes the first bytes
// of the event and calls cut.
func (w *cutWriter) pass(p []byte, write func([]byte) (int, error), cut func()) (int, error) {
	if w.cut {
		return 0, errCut
	}
	for i := 0; i < len(p); i++ {
		if (i == 0 || p[i-1] == '\n') && bytes.HasPrefix(p[i:], []byte("id: ")) {
			w.events++
			if w.events > w.after {
				w.cut = true
				partial := min(len(p), i+len("id: ")+2)
				_, _ = write(p[:partial])
				cut()
				w.onCut()
				return 0, errCut
			}
		}
	}
	return write(p)
}

// cutConn is a hijacked connection whose writes go through a cutWriter.
type cutConn struct {
	net.Conn
	write func([]byte) (int, error)
}

func (c *cutConn) Write(p []byte) (int, error) { return c.write(p) }

// isContiguous reports whether seqs is 1, 2, ..., len(seqs).
func isContiguous(seqs []int) bool {
	for i, s := range seqs {
		if s != i+1 {
			return false
		}
	}
	return true
}

func contains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
