package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// The trust boundary in a real browser (docs/reliability.md, "Trust
// boundary"). The user has a cookie for the bridge's origin, and the
// bridge forwards cookies (the request-header allow-list names it). A page
// on a second origin, another port of the same host (so the same site, and
// Chromium attaches the cookie to its requests), tries everything a page
// can do without the bridge's consent: <img> to a mutation over GET, at the
// method's path and at its annotated one; fetch in no-cors and cors mode;
// EventSource with credentials; a WebSocket. Every attempt is refused
// before any backend call: the backend sees nothing, and a Chat stream
// open in the room from the bridge's own page never gets the attacker's
// posts. The same actions from the bridge's own page work, with the
// cookie, but for the GETs of the mutation, which post nothing from there
// either.
func TestTrustCrossOriginPageRefused(t *testing.T) {
	backend := &recordingConn{ClientConnInterface: bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })}
	var hits hitLog
	bridgeSrv := newBridgeWith(t, backend, hits.record, bridge.WithRequestHeaders("cookie", "x-request-id"))
	attackerSrv := newPageServer(t) // another port: another origin, the same site
	browser := newBrowser(t)

	// The user's page on the bridge's origin: a cookie, and a Chat stream
	// in the room the attacker posts to.
	home := newTab(t, browser, bridgeSrv.URL+"/?watch=0&room=trust&user=alice")
	home.eval(`document.cookie = "session=secret; path=/"`, nil)
	home.click("chat-join-button")
	home.wait(`window.demo.chat.joined`)
	before := len(backend.all())
	hits.reset()

	attacker := newTab(t, browser, attackerSrv.URL+"/?watch=0")
	got := runAttempts(attacker, bridgeSrv.URL, "mallory")
	want := map[string]string{
		"imgPost":         "error",
		"imgAnnotated":    "error",
		"noCorsPost":      "opaque 0",
		"noCorsAnnotated": "opaque 0",
		"corsPost":        "rejected TypeError",
		"corsAnnotated":   "rejected TypeError",
		"corsQuote":       "rejected TypeError",
		"eventSource":     "error, readyState 2",
		"webSocket":       "error, close 1006",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("attacker's %s: %q; want %q", k, got[k], w)
		}
	}
	if calls := backend.all()[before:]; len(calls) != 0 {
		t.Errorf("the attacker's page reached the backend: %v", calls)
	}
	attacks := hits.all()
	t.Logf("the attacker's requests: %v", attacks)
	if len(attacks) < len(want) {
		t.Errorf("the bridge saw %d requests from the attacker's page, want at least %d: %v", len(attacks), len(want), attacks)
	}
	withCookie := 0
	for _, h := range attacks {
		if h.status != http.StatusForbidden && h.status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s (Origin %q, Sec-Fetch-Site %q): HTTP %d; want 403 or 405, before the backend", h.method, h.path, h.origin, h.site, h.status)
		}
		if h.cookie {
			withCookie++
		}
	}
	if withCookie == 0 {
		t.Errorf("no request of the attacker's page carried the user's cookie, so the test shows nothing: %v", attacks)
	}

	// The same actions from the bridge's own origin.
	got = runAttempts(home, "", "alice")
	want = map[string]string{
		"imgPost":       "error", // a mutation never runs over GET, whoever asks
		"imgAnnotated":  "error",
		"corsPost":      "basic 200",
		"corsAnnotated": "basic 200",
		"corsQuote":     "basic 200",
		"eventSource":   "message",
		"webSocket":     "open",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("own page's %s: %q; want %q", k, got[k], w)
		}
	}
	home.wait(`["cors", "cors-annotated"].every(t => window.demo.chat.messages.some(m => m.user === "alice" && m.text === t))`)
	// The posts over GET would have come before those.
	var unwanted []any
	home.eval(`window.demo.chat.messages.filter(m => m.user === "mallory" || m.text.startsWith("img"))`, &unwanted)
	if len(unwanted) != 0 {
		t.Errorf("the Chat stream got posts it must not: %v", unwanted)
	}
	// Every call, from the join of the Chat on, came from the own page.
	seen := map[string]bool{}
	for _, c := range backend.all() {
		if c.cookie != "session=secret" {
			t.Errorf("%s from the own page reached the backend with cookie %q; want session=secret", c.method, c.cookie)
		}
		seen[c.method] = true
	}
	for _, m := range []string{"/demo.v1.ChatService/Post", "/demo.v1.TickerService/Quote", "/demo.v1.TickerService/Watch", "/demo.v1.ChatService/Chat"} {
		if !seen[m] {
			t.Errorf("the own page's actions did not reach %s; backend calls %v", m, backend.all())
		}
	}
}

// runAttempts runs each action against the bridge at base ("" for the
// page's own origin) from page and returns how each ended, as the page
// saw it. user names the poster of the chat messages it tries to send.
func runAttempts(p *tab, base, user string) map[string]string {
	p.t.Helper()
	p.eval(`window.trust = undefined; (async () => {
		const B = `+jsString(base)+`, user = `+jsString(user)+`;
		const wsBase = (B || location.origin).replace(/^http/, "ws");
		const post = (text) => JSON.stringify({room: "trust", user, text});
		const r = {};
		const timeout = (res, what) => setTimeout(() => res("timeout " + what()), 10000);
		const img = (src) => new Promise(res => {
			const i = new Image();
			i.onload = () => res("load");
			i.onerror = () => res("error");
			i.src = src;
		});
		const f = async (url, opts) => {
			try {
				const resp = await fetch(url, {credentials: "include", ...opts});
				return resp.type + " " + resp.status;
			} catch (e) {
				return "rejected " + e.name;
			}
		};
		r.imgPost = await img(B + "/demo.v1.ChatService/Post?room=trust&user=" + user + "&text=img");
		r.imgAnnotated = await img(B + "/v1/rooms/trust/messages?user=" + user + "&text=img-annotated");
		r.noCorsPost = await f(B + "/demo.v1.ChatService/Post", {method: "POST", mode: "no-cors", body: post("no-cors")});
		r.noCorsAnnotated = await f(B + "/v1/rooms/trust/messages", {method: "POST", mode: "no-cors", body: post("no-cors-annotated")});
		const json = {"Content-Type": "application/json"};
		r.corsPost = await f(B + "/demo.v1.ChatService/Post", {method: "POST", mode: "cors", headers: json, body: post("cors")});
		r.corsAnnotated = await f(B + "/v1/rooms/trust/messages", {method: "POST", mode: "cors", headers: json, body: post("cors-annotated")});
		r.corsQuote = await f(B + "/demo.v1.TickerService/Quote?symbol=ACME", {mode: "cors"});
		r.eventSource = await new Promise(res => {
			const es = new EventSource(B + "/demo.v1.TickerService/Watch?symbol=ACME&interval_ms=20", {withCredentials: true});
			const done = (s) => { es.close(); res(s); };
			es.onmessage = () => done("message");
			es.onerror = () => done("error, readyState " + es.readyState);
			timeout(done, () => "readyState " + es.readyState);
		});
		r.webSocket = await new Promise(res => {
			const seen = [];
			const ws = new WebSocket(wsBase + "/demo.v1.ChatService/Chat", "grpc-ws.v1");
			ws.onopen = () => { seen.push("open"); ws.close(); res(seen.join(", ")); };
			ws.onerror = () => seen.push("error");
			ws.onclose = (e) => { seen.push("close " + e.code); res(seen.join(", ")); };
			timeout(res, () => seen.join(", "));
		});
		window.trust = r;
	})(), true`, nil)
	p.wait(`window.trust !== undefined`)
	var got map[string]string
	p.eval(`window.trust`, &got)
	return got
}

// recordingConn is the bridge's backend connection, recording every call
// the bridge opens and the cookie it forwards.
type recordingConn struct {
	grpc.ClientConnInterface
	mu    sync.Mutex
	calls []backendCall
}

type backendCall struct {
	method string
	cookie string
}

func (c *recordingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c.record(ctx, method)
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}

func (c *recordingConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.record(ctx, method)
	return c.ClientConnInterface.NewStream(ctx, desc, method, opts...)
}

func (c *recordingConn) record(ctx context.Context, method string) {
	md, _ := metadata.FromOutgoingContext(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, backendCall{method: method, cookie: strings.Join(md.Get("cookie"), "; ")})
}

func (c *recordingConn) all() []backendCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// hitLog records the requests for the bridge's methods (not the page and
// its assets): the headers that tell where they came from, and the status
// of each answer.
type hitLog struct {
	mu   sync.Mutex
	hits []*hit
}

type hit struct {
	method, path, origin, site string
	cookie                     bool
	status                     int
}

func (h hit) String() string {
	return fmt.Sprintf("%s %s origin=%q site=%q cookie=%v: %d", h.method, h.path, h.origin, h.site, h.cookie, h.status)
}

func (l *hitLog) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/static/") {
			next.ServeHTTP(w, r)
			return
		}
		h := &hit{method: r.Method, path: r.URL.Path, origin: r.Header.Get("Origin"), site: r.Header.Get("Sec-Fetch-Site"),
			cookie: strings.Contains(r.Header.Get("Cookie"), "session=secret")}
		l.mu.Lock()
		l.hits = append(l.hits, h)
		l.mu.Unlock()
		next.ServeHTTP(&statusWriter{ResponseWriter: w, set: func(code int) {
			l.mu.Lock()
			defer l.mu.Unlock()
			if h.status == 0 {
				h.status = code
			}
		}}, r)
	})
}

func (l *hitLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hits = nil
}

func (l *hitLog) all() []hit {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]hit, len(l.hits))
	for i, h := range l.hits {
		out[i] = *h
	}
	return out
}
