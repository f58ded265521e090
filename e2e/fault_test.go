package e2e

import (
	"fmt"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// restartableBackend is the demo backend on a loopback port that it keeps
// across restarts: stop kills every stream at once, as a crash does, and
// start serves again on the same port.
type restartableBackend struct {
	t    *testing.T
	addr string

	mu     sync.Mutex
	srv    *grpc.Server
	served chan struct{}
}

func newRestartableBackend(t *testing.T) *restartableBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &restartableBackend{t: t, addr: lis.Addr().String()}
	_ = lis.Close()
	t.Cleanup(b.stop)
	return b
}

func (b *restartableBackend) start() {
	b.t.Helper()
	var lis net.Listener
	var err error
	for range 100 {
		if lis, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	srv := grpc.NewServer()
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

func (b *restartableBackend) stop() {
	b.mu.Lock()
	srv, served := b.srv, b.served
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-served
	}
}

// newBridgeTo serves the bridge and the demo page in front of a backend
// at addr, reconnecting to it quickly after a restart.
func newBridgeTo(t *testing.T, addr string) *httptest.Server {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	h, err := bridge.NewHandler(
		bridge.WithBackend(conn),
		bridge.WithExpose("demo.v1.*"),
		bridge.WithRetryInterval(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	mux := pageMux()
	mux.Handle("/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// The backend crashes in the middle of the page's ticker stream and comes
// back: the page's EventSource resumes with Last-Event-ID and the page
// gets every tick exactly once.
func TestTickerResumesAfterBackendRestart(t *testing.T) {
	be := newRestartableBackend(t)
	be.start()
	srv := newBridgeTo(t, be.addr)
	browser := newBrowser(t)
	page := newTab(t, browser, srv.URL+"/?symbol=CRASH&interval_ms=40")

	page.wait(`window.demo.ticker.seqs.length >= 5`)
	be.stop()
	time.Sleep(500 * time.Millisecond) // reconnects meet the backend down
	be.start()
	var before int
	page.eval(`window.demo.ticker.seqs.length`, &before)
	page.wait(fmt.Sprintf(`window.demo.ticker.seqs.length >= %d`, before+10))

	var seqs []int
	page.eval(`window.demo.ticker.seqs`, &seqs)
	if !isContiguous(seqs) {
		t.Errorf("page received seqs %v; want 1, 2, 3, ... with no gap and no duplicate", seqs)
	}
	var log []string
	page.eval(`window.demo.ticker.log`, &log)
	if !contains(log, "reconnecting with Last-Event-ID") || !contains(log, "reconnected: resuming after #") {
		t.Errorf("ticker log %q: want a reconnect and a resume", log)
	}
}

// The backend is down when the page connects: the stream gets a transient
// error with a retry hint, the page keeps retrying, and succeeds once the
// backend is up.
func TestTickerWaitsForBackendDownAtConnect(t *testing.T) {
	be := newRestartableBackend(t) // not started
	srv := newBridgeTo(t, be.addr)
	browser := newBrowser(t)
	page := newTab(t, browser, srv.URL+"/?symbol=LATE&interval_ms=40")

	page.wait(`window.demo.ticker.log.some(l => l.includes("reconnecting") && l.includes("14"))`)
	var seqs []int
	page.eval(`window.demo.ticker.seqs`, &seqs)
	if len(seqs) != 0 {
		t.Fatalf("ticks %v with the backend down", seqs)
	}
	be.start()
	page.wait(`window.demo.ticker.seqs.length >= 5`)
	page.eval(`window.demo.ticker.seqs`, &seqs)
	if !isContiguous(seqs) {
		t.Errorf("page received seqs %v; want 1, 2, 3, ...", seqs)
	}
}

// The backend dies during a WebSocket call: the page's socket gets the
// status frame UNAVAILABLE and then close code 4014.
func TestWebSocketBackendDiesInPage(t *testing.T) {
	be := newRestartableBackend(t)
	be.start()
	srv := newBridgeTo(t, be.addr)
	browser := newBrowser(t)
	page := newTab(t, browser, srv.URL+"/?watch=0")

	page.eval(`(() => {
		const w = window.wsFault = {frames: [], close: null};
		const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/demo.v1.EchoService/Echo", "grpc-ws.v1");
		ws.binaryType = "arraybuffer";
		ws.onopen = () => ws.send(new Uint8Array([0x0a, 0x02, 0x68, 0x69])); // EchoRequest{text: "hi"}
		ws.onmessage = (e) => w.frames.push(typeof e.data === "string" ? e.data : "binary");
		ws.onclose = (e) => { w.close = e.code; };
		return true;
	})()`, nil)
	page.wait(`window.wsFault.frames.includes("binary")`)
	be.stop()
	page.wait(`window.wsFault.close !== null`)
	var got struct {
		Frames []string `json:"frames"`
		Close  int      `json:"close"`
	}
	page.eval(`window.wsFault`, &got)
	if got.Close != 4014 {
		t.Errorf("close code %d, want 4014", got.Close)
	}
	last := ""
	if n := len(got.Frames); n > 0 {
		last = got.Frames[n-1]
	}
	if !contains([]string{last}, `"status":{"code":14`) {
		t.Errorf("frames %q: want the UNAVAILABLE status frame last", got.Frames)
	}
}
