package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// The demo page's session (grpc-session.v1) in Chromium: behind a proxy
// that refuses WebSockets and speaks HTTP/1.1 only, with two replicas that
// it balances round robin without affinity, so that requests for a session
// reach the replica that does not own it and are forwarded.

// sessionPathE2E is the session endpoint.
const sessionPathE2E = "/_bridge/session"

// newReplicas serves n bridges in front of one demo backend (so that chat
// rooms span them), with sessions on, one key, and each other as peers.
func newReplicas(t *testing.T, n int) []*httptest.Server {
	t.Helper()
	backend := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	key := bytes.Repeat([]byte("e2e session key "), 2)
	srvs := make([]*httptest.Server, n)
	for i := range srvs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		h, err := bridge.NewHandler(
			bridge.WithBackend(backend),
			bridge.WithExpose("demo.v1.*"),
			bridge.WithRetryInterval(100*time.Millisecond),
			bridge.WithSessions(bridge.SessionOptions{
				Keys:          [][]byte{key},
				AdvertiseAddr: l.Addr().String(),
				Peers:         []string{"127.0.0.1/32"},
			}),
		)
		if err != nil {
			t.Fatal(err)
		}
		mux := pageMux()
		mux.Handle("/", h)
		srv := httptest.NewUnstartedServer(mux)
		_ = srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		t.Cleanup(srv.Close)
		srvs[i] = srv
	}
	return srvs
}

// sessionProxy is the proxy in front of the replicas: HTTP/1.1 only, it
// refuses Upgrade, balances each request to the next replica, counts the
// requests in flight per session, and can cut the event streams or hold
// every response until it ends (buffer).
type sessionProxy struct {
	*httptest.Server
	rp       *httputil.ReverseProxy
	tr       *http.Transport
	backends []*url.URL
	next     atomic.Uint64

	mu       sync.Mutex
	refused  int                    // upgrades refused
	inFlight map[string]int         // per session id
	maxIn    map[string]int         // the most in flight at once, per session id
	replicas map[string]map[int]int // requests per session id per replica
	streams  map[*http.Request]context.CancelFunc
	cuts     int
	all      int  // requests of any path in flight
	counting bool // maxAll is being recorded
	maxAll   int  // the most requests of any path in flight while counting
}

func newSessionProxy(t *testing.T, replicas []*httptest.Server, buffer bool) *sessionProxy {
	t.Helper()
	p := &sessionProxy{
		tr:       &http.Transport{ForceAttemptHTTP2: false, DisableCompression: true},
		inFlight: map[string]int{},
		maxIn:    map[string]int{},
		replicas: map[string]map[int]int{},
		streams:  map[*http.Request]context.CancelFunc{},
	}
	for _, r := range replicas {
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatal(err)
		}
		p.backends = append(p.backends, u)
	}
	p.rp = &httputil.ReverseProxy{
		Transport: p.tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			i := pr.In.Context().Value(replicaKey{}).(int)
			pr.SetURL(p.backends[i])
			pr.Out.Host = pr.In.Host // the page's origin stays the bridge's
		},
		FlushInterval: -1,
		ErrorLog:      nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	if buffer {
		// A proxy that holds every response until it ends.
		p.rp.FlushInterval = 0
		p.rp.ModifyResponse = func(res *http.Response) error {
			b, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil {
				return err
			}
			res.Body = io.NopCloser(bytes.NewReader(b))
			res.ContentLength = int64(len(b))
			res.Header.Del("Content-Length")
			return nil
		}
	}
	p.Server = httptest.NewServer(p) // HTTP/1.1: no TLS, no h2c
	t.Cleanup(func() {
		p.Server.Close()
		p.tr.CloseIdleConnections()
	})
	return p
}

type replicaKey struct{}

func (p *sessionProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "" {
		p.mu.Lock()
		p.refused++
		p.mu.Unlock()
		http.Error(w, "this proxy does not pass Upgrade", http.StatusForbidden)
		return
	}
	p.mu.Lock()
	p.all++
	if p.counting {
		p.maxAll = max(p.maxAll, p.all)
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.all--
		p.mu.Unlock()
	}()
	replica := int(p.next.Add(1) % uint64(len(p.backends)))
	ctx, cancel := context.WithCancel(context.WithValue(r.Context(), replicaKey{}, replica))
	defer cancel()
	r = r.WithContext(ctx)
	if r.URL.Path == sessionPathE2E {
		id := sessionIDOf(r.URL.Query().Get("sid"))
		stream := r.Method == http.MethodGet && id != "" && r.URL.Query().Get("poll") == ""
		p.mu.Lock()
		if id != "" {
			p.inFlight[id]++
			p.maxIn[id] = max(p.maxIn[id], p.inFlight[id])
			if p.replicas[id] == nil {
				p.replicas[id] = map[int]int{}
			}
			p.replicas[id][replica]++
		}
		if stream {
			p.streams[r] = cancel
		}
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			if id != "" {
				p.inFlight[id]--
			}
			delete(p.streams, r)
			p.mu.Unlock()
		}()
	}
	p.rp.ServeHTTP(w, r)
}

// count starts recording the most requests in flight at once, of any
// path: an HTTP/1.1 connection carries one at a time, so that is the
// connections the pages need.
func (p *sessionProxy) count() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counting = true
	p.maxAll = p.all
}

// cut ends every event stream in flight, as a proxy that limits the
// length of responses does, and returns how many it cut.
func (p *sessionProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for r, cancel := range p.streams {
		cancel()
		delete(p.streams, r)
		n++
	}
	p.cuts += n
	return n
}

// sessionIDOf is the session id inside a token (docs/protocol.md,
// "Replicas"): the bytes after the version of the payload before the
// dot; "" when there is no token.
func sessionIDOf(sid string) string {
	if sid == "" {
		return ""
	}
	enc, _, _ := strings.Cut(sid, ".")
	payload, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(payload) < 17 {
		return sid
	}
	return hex.EncodeToString(payload[1:17])
}

type proxyStats struct {
	maxAll   int
	refused  int
	maxIn    map[string]int
	replicas map[string]map[int]int
	cuts     int
}

func (p *sessionProxy) stats() proxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := proxyStats{maxAll: p.maxAll, refused: p.refused, cuts: p.cuts, maxIn: map[string]int{}, replicas: map[string]map[int]int{}}
	for k, v := range p.maxIn {
		st.maxIn[k] = v
	}
	for k, v := range p.replicas {
		st.replicas[k] = map[int]int{}
		for i, n := range v {
			st.replicas[k][i] = n
		}
	}
	return st
}

// boardSymbols are the demo page's eight tickers.
var boardSymbols = []string{"AAPL", "AMZN", "GOOG", "META", "MSFT", "NFLX", "NVDA", "TSLA"}

// sessionPage opens the demo page at base and joins the chat room as user.
func sessionPage(t *testing.T, base, user string) *tab {
	t.Helper()
	p := newTab(t, newBrowser(t), base+"/?interval_ms=100&room=session-e2e&user="+user)
	p.click("chat-join-button")
	p.wait(`window.demo.chat.joined`)
	return p
}

// tickCounts waits until every ticker of the page has at least n ticks
// more than before (nil: than zero), and checks that each ticker's ticks
// are 1, 2, 3, ... with no gap and no duplicate.
func tickCounts(t *testing.T, p *tab, before map[string]int, n int) map[string]int {
	t.Helper()
	conds := []string{`window.demo.ticker.seqs.length >= ` + fmt.Sprint(before["ACME"]+n)}
	for _, s := range boardSymbols {
		conds = append(conds, fmt.Sprintf(`(window.demo.tickers[%q] || []).length >= %d`, s, before[s]+n))
	}
	p.wait(strings.Join(conds, " && "))
	var all map[string][]int
	p.eval(`({...window.demo.tickers, ACME: window.demo.ticker.seqs})`, &all)
	counts := map[string]int{}
	for s, seqs := range all {
		if !isContiguous(seqs) {
			t.Errorf("ticker %s received seqs %v; want 1, 2, 3, ... with no gap and no duplicate", s, seqs)
		}
		counts[s] = len(seqs)
	}
	return counts
}

// say posts text to the chat from one page and waits for it on another.
func say(t *testing.T, from, to *tab, text string) {
	t.Helper()
	from.setValue("chat-text", text)
	from.click("chat-send-button")
	to.wait(`window.demo.chat.messages.some(m => m.text === ` + jsString(text) + `)`)
}

// echo sends text on the page's echo call and waits for it to come back.
func echo(p *tab, text string) {
	p.t.Helper()
	p.setValue("echo-text", text)
	p.click("echo-send")
	p.wait(`window.demo.echo.replies.includes(` + jsString(text) + `)`)
}

// Behind a proxy that refuses Upgrade and speaks HTTP/1.1 only, in front
// of two replicas without affinity: the page falls back to the event
// stream and POSTs, runs a chat with another page, an echo and nine
// tickers in one session with at most two requests in flight, and goes
// on without a gap after the proxy cuts the event streams.
func TestSessionFallbackBehindProxy(t *testing.T) {
	replicas := newReplicas(t, 2)
	proxy := newSessionProxy(t, replicas, false)
	ada := sessionPage(t, proxy.URL, "ada")
	bob := sessionPage(t, proxy.URL, "bob")
	for _, p := range []*tab{ada, bob} {
		p.wait(`window.demo.session.carrier === "sse"`)
	}
	var log []string
	ada.eval(`window.demo.session.log`, &log)
	if !contains(log, "falling back") {
		t.Errorf("session log %q: want the fallback from the WebSocket shown", log)
	}

	// From here on, the pages have loaded: what is in flight is theirs.
	proxy.count()
	say(t, ada, bob, "hello from ada")
	say(t, bob, ada, "hello from bob")
	echo(ada, "echo one")
	counts := tickCounts(t, ada, nil, 10)

	cut := proxy.cut()
	if cut < 2 {
		t.Errorf("the proxy cut %d event streams; want one per page", cut)
	}
	ada.wait(`window.demo.session.resumes >= 1 && window.demo.session.state === "open"`)
	bob.wait(`window.demo.session.resumes >= 1 && window.demo.session.state === "open"`)
	tickCounts(t, ada, counts, 10)
	say(t, bob, ada, "after the cut")
	echo(ada, "echo two")

	var carrier string
	ada.eval(`window.demo.session.carrier`, &carrier)
	if carrier != "sse" {
		t.Errorf("carrier after the cut %q; want sse (the choice lasts the page's lifetime)", carrier)
	}
	st := proxy.stats()
	ada.eval(`window.demo.session.log`, &log)
	t.Logf("proxy: %+v; ada's session log: %q", st, log)
	if st.refused < 2 {
		t.Errorf("the proxy refused %d upgrades; want the WebSocket tried once per page", st.refused)
	}
	if st.maxAll > 4 {
		t.Errorf("%d requests in flight at once through the proxy; want at most 4, two per page", st.maxAll)
	}
	if len(st.maxIn) < 2 {
		t.Errorf("requests seen for %d sessions; want 2 (one per page)", len(st.maxIn))
	}
	forwarded := false
	for id, n := range st.maxIn {
		if n > 2 {
			t.Errorf("session %s had %d requests in flight at once; want at most 2 (the event stream and one POST)", id, n)
		}
		forwarded = forwarded || len(st.replicas[id]) == 2
	}
	if !forwarded {
		t.Errorf("requests per session per replica %v: want a session reached through both replicas (forwarded)", st.replicas)
	}
}

// Without the proxy, the same page has a WebSocket session.
func TestSessionWebSocketDirect(t *testing.T) {
	replicas := newReplicas(t, 1)
	p := sessionPage(t, replicas[0].URL, "cyd")
	p.wait(`window.demo.session.carrier === "websocket"`)
	echo(p, "over a websocket")
	counts := tickCounts(t, p, nil, 5)
	// A cut WebSocket reattaches as a WebSocket, and nothing is lost.
	p.click("session-cut")
	p.wait(`window.demo.session.resumes >= 1 && window.demo.session.state === "open"`)
	tickCounts(t, p, counts, 5)
	var carrier string
	p.eval(`window.demo.session.carrier`, &carrier)
	if carrier != "websocket" {
		t.Errorf("carrier after the cut %q; want websocket", carrier)
	}

	// The page's "Block WebSockets" switch reloads it with ws=0: the
	// client skips the WebSocket, and the same bridge serves the fallback.
	p.click("session-block-ws")
	blocked := newTab(t, newBrowser(t), replicas[0].URL+"/?interval_ms=100&ws=0")
	var search string
	p.evalQuiet(`location.search`, &search)
	if !strings.Contains(search, "ws=0") {
		t.Errorf("after the switch the page is at %q; want ws=0 in the query", search)
	}
	blocked.wait(`window.demo.session.carrier === "sse"`)
	echo(blocked, "without a websocket")
	tickCounts(t, blocked, nil, 5)
}

// Behind a proxy that holds responses until they end, the event stream
// shows nothing: the page polls, and the chat between two pages works.
func TestSessionPollingBehindBufferingProxy(t *testing.T) {
	replicas := newReplicas(t, 2)
	proxy := newSessionProxy(t, replicas, true)
	ada := sessionPage(t, proxy.URL, "ada")
	bob := sessionPage(t, proxy.URL, "bob")
	for _, p := range []*tab{ada, bob} {
		p.wait(`window.demo.session.carrier === "poll"`)
	}
	say(t, ada, bob, "polled hello")
	say(t, bob, ada, "polled answer")
	tickCounts(t, ada, nil, 5)
	for id, n := range proxy.stats().maxIn {
		if n > 2 {
			t.Errorf("session %s had %d requests in flight at once; want at most 2", id, n)
		}
	}
}
