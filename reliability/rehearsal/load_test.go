package rehearsal

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// --- phases and what they explain ------------------------------------------

// Classes of abnormal endings that a phase explains. A stream or call cut
// in a phase that does not explain how it ended fails the run.
const (
	drain    = 1 << iota // WebSocket status UNAVAILABLE, close 1001: a bridge draining
	refused              // a WebSocket handshake refused (503 from a draining bridge, the ingress's 502)
	backendX             // status UNAVAILABLE with close 4014: a backend gone or cut
	abrupt               // no status frame, or an SSE connection broken: a process killed, a connection reset
)

// phase is one step of the script, from its start to the next one's (so
// its settling time is its own), with what it saw. Every client goroutine
// records into it: mu guards the counters; name, explain and start are set
// before it is shared, end by the script once it is no longer current.
type phase struct {
	name    string
	explain int // the classes above
	start   time.Time
	end     time.Time

	mu          sync.Mutex
	events      int64
	gaps        int64 // ticks missing
	dups        int64 // ticks seen twice
	reconnects  int64 // SSE connections after a follower's first
	cuts        int64 // SSE streams that ended or broke (the resume is timed from here)
	resumes     []time.Duration
	silence     time.Duration  // the longest time a follower went without a tick
	silent5     int64          // followers that went 5 s or more without one
	wsEnds      map[string]int // "kind status/close" -> calls
	wsMessages  int64          // WebSocket replies checked
	lostAtCut   int64          // chat messages sent and not echoed before the call was cut
	errors      map[string]int // kind -> count
	unexplained []string       // the first ones, for the report
	nUnexpl     int
}

// recorder holds the phases; the current one takes every observation.
type recorder struct {
	mu     sync.Mutex
	phases []*phase
	cur    atomic.Pointer[phase]
}

func (r *recorder) begin(name string, explain int) *phase {
	p := &phase{name: name, explain: explain, start: time.Now(), wsEnds: map[string]int{}, errors: map[string]int{}}
	r.mu.Lock()
	if n := len(r.phases); n > 0 {
		r.phases[n-1].end = p.start
	}
	r.phases = append(r.phases, p)
	r.mu.Unlock()
	r.cur.Store(p)
	return p
}

func (r *recorder) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.phases); n > 0 {
		r.phases[n-1].end = time.Now()
	}
}

func (r *recorder) now() *phase { return r.cur.Load() }

func (p *phase) add(f func(p *phase)) {
	p.mu.Lock()
	f(p)
	p.mu.Unlock()
}

// fail records an unexplained event: the run fails.
func (p *phase) fail(kind, detail string) {
	p.add(func(p *phase) {
		p.errors[kind]++
		p.nUnexpl++
		if len(p.unexplained) < 20 {
			p.unexplained = append(p.unexplained, kind+": "+detail)
		}
	})
}

// errored records an error of kind, explained if the phase explains class.
func (p *phase) errored(class int, kind, detail string) {
	if p.explain&class == 0 {
		p.fail(kind, detail)
		return
	}
	p.add(func(p *phase) { p.errors[kind]++ })
}

// errKind names an error as the report counts it.
func errKind(err error) string {
	s := err.Error()
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case strings.Contains(s, "stream error"):
		return "HTTP/2 stream reset"
	case strings.Contains(s, "GOAWAY"):
		return "HTTP/2 GOAWAY"
	case strings.Contains(s, "timeout"), strings.Contains(s, "deadline"):
		return "timeout"
	case strings.Contains(s, "tls"):
		return "TLS"
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// --- clients -----------------------------------------------------------------

// clientIP is the loopback source address of simulated browser n: each has
// its own, as browsers behind an ingress do, so that the bridges' per-client
// stream limit (deploy config: 64) applies to each.
func clientIP(n int) net.IP { return net.IPv4(127, 3, byte(n/250), byte(n%250+1)) }

func dialer(n int) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: clientIP(n)}, Timeout: 10 * time.Second}
}

// browser is an HTTP client of its own (its own TLS connection, HTTP/2 by
// ALPN, so its EventSources share it as a browser's tab does).
func browser(n int, roots *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         dialer(n).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: ingressHost},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: -1,
		DisableCompression:  true,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
}

const baseURL = "https://" + ingressHost + ":8443"

// --- SSE followers -----------------------------------------------------------

// follower is a browser's EventSource on the ticker, following the WHATWG
// rules: on a stream that ends or breaks, or on a network error, it waits the
// reconnection time (the last retry field) and reconnects with Last-Event-ID;
// a non-200 answer or another content type fails it for good, as it does
// EventSource (and the bridge's client library), so the run fails too. It
// checks every tick: ids contiguous from 1, each once. Its own goroutine
// owns it; the script reads only dead, seqA and tickA.
type follower struct {
	id     int
	client *http.Client
	rec    *recorder
	base   string // the ingress's URL; "" is baseURL

	last     uint64 // last tick seq
	lastID   string
	retry    time.Duration
	connects int
	cutAt    time.Time // when the current stream was cut; zero while streaming
	cutIn    *phase
	dead     atomic.Bool
	seqA     atomic.Uint64 // last, for the script
	tickA    atomic.Int64  // when the last tick came, Unix nanoseconds
}

func (f *follower) lastSeq() uint64     { return f.seqA.Load() }
func (f *follower) lastTick() time.Time { return time.Unix(0, f.tickA.Load()) }

func (f *follower) run(ctx context.Context) {
	f.retry = 3 * time.Second // the WHATWG default, until a retry field comes
	for ctx.Err() == nil {
		f.once(ctx)
		if f.dead.Load() || ctx.Err() != nil {
			return
		}
		// A little jitter, as browsers' timers have: without it thousands
		// of followers cut at once would reconnect in the same millisecond.
		d := f.retry + time.Duration(rand.Int64N(int64(f.retry/10)+1))
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}

func (f *follower) cut(p *phase, kind string, err error) {
	if f.cutAt.IsZero() {
		f.cutAt, f.cutIn = time.Now(), p
		p.add(func(p *phase) { p.cuts++ })
	}
	detail := fmt.Sprintf("SSE %d: %s", f.id, kind)
	if err != nil {
		detail += ": " + err.Error()
	}
	p.errored(abrupt|drain|backendX|refused, "SSE "+kind, detail)
}

func (f *follower) once(ctx context.Context) {
	base := f.base
	if base == "" {
		base = baseURL
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/demo.v1.TickerService/Watch?symbol=R%d&interval_ms=1000", base, f.id), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("Origin", origin)
	if f.lastID != "" {
		req.Header.Set("Last-Event-ID", f.lastID)
	}
	f.connects++
	if f.connects > 1 {
		f.rec.now().add(func(p *phase) { p.reconnects++ })
	}
	resp, err := f.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			f.cut(f.rec.now(), "connect: "+errKind(err), err)
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		f.rec.now().fail(fmt.Sprintf("SSE HTTP %d", resp.StatusCode), fmt.Sprintf("SSE %d: %s %q: %s", f.id, resp.Status, resp.Header.Get("Content-Type"), body))
		f.dead.Store(true)
		return
	}
	rd := bridgetest.NewSSEReader(resp.Body)
	transient := false // an error event came: the end that follows is its
	for {
		ev, err := rd.Next()
		if err != nil {
			if ctx.Err() == nil && !transient {
				f.cut(f.rec.now(), "stream ended: "+errKind(err), nil)
			}
			return
		}
		if ev.Retry > 0 {
			f.retry = ev.Retry
		}
		p := f.rec.now()
		switch ev.Type {
		case "message":
			var tk struct {
				Seq string `json:"seq"`
			}
			seq, perr := uint64(0), json.Unmarshal([]byte(ev.Data), &tk)
			if perr == nil {
				seq, perr = strconv.ParseUint(tk.Seq, 10, 64)
			}
			if perr != nil {
				p.fail("SSE bad message", fmt.Sprintf("SSE %d: %q: %v", f.id, ev.Data, perr))
				continue
			}
			if ev.HasID {
				f.lastID = ev.ID
			}
			if !f.cutAt.IsZero() {
				d := time.Since(f.cutAt)
				f.cutIn.add(func(c *phase) { c.resumes = append(c.resumes, d) })
				f.cutAt = time.Time{}
			}
			switch {
			case seq == f.last+1:
				p.add(func(p *phase) { p.events++ })
			case seq <= f.last:
				p.add(func(p *phase) { p.events++; p.dups++ })
				p.fail("SSE duplicate", fmt.Sprintf("SSE %d: tick %d after %d", f.id, seq, f.last))
			default:
				missing := int64(seq - f.last - 1)
				p.add(func(p *phase) { p.events++; p.gaps += missing })
				p.fail("SSE gap", fmt.Sprintf("SSE %d: tick %d after %d", f.id, seq, f.last))
			}
			f.last = max(f.last, seq)
			f.seqA.Store(f.last)
			now := time.Now()
			if prev := f.tickA.Swap(now.UnixNano()); prev != 0 {
				if d := now.Sub(time.Unix(0, prev)); d > 1500*time.Millisecond { // ticks come every second
					p.add(func(p *phase) {
						p.silence = max(p.silence, d)
						if d >= 5*time.Second {
							p.silent5++
						}
					})
				}
			}
		case "error":
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal([]byte(ev.Data), &st)
			if st.Code != 14 {
				p.fail("SSE final error event", fmt.Sprintf("SSE %d: %s", f.id, ev.Data))
				f.dead.Store(true)
				return
			}
			// A transient error: the bridge ends the stream, and the
			// follower resumes.
			f.cut(p, "error event UNAVAILABLE", errors.New(st.Message))
			transient = true
		case "end":
			p.fail("SSE end event", fmt.Sprintf("SSE %d: the infinite ticker ended: %s", f.id, ev.Data))
			f.dead.Store(true)
			return
		}
	}
}

// --- WebSocket clients ---------------------------------------------------------

// wsClient is a browser's WebSocket, calling Echo (kind "echo": calls of
// ten round trips, then a half-close, which must end with status OK and
// close 1000) or Chat (kind "chat": one call held until the run ends, a
// message a second to a room of its own, each echoed back once) again and
// again: a call that ends is reopened a second later, as the client library
// lets an application do.
type wsClient struct {
	id    int
	kind  string
	roots *x509.CertPool
	rec   *recorder
	calls int
}

// wsDialer dials WebSockets from browser n's address, over HTTP/1.1 (the
// ingresses, like browsers, do not carry WebSockets over HTTP/2).
func wsDialer(n int, roots *x509.CertPool) *websocket.Dialer {
	return &websocket.Dialer{
		NetDialContext:   dialer(n).DialContext,
		TLSClientConfig:  &tls.Config{RootCAs: roots, ServerName: ingressHost, NextProtos: []string{"http/1.1"}},
		Subprotocols:     []string{"grpc-ws.v1"},
		HandshakeTimeout: 15 * time.Second,
	}
}

func (c *wsClient) run(ctx context.Context, stopSending <-chan struct{}) {
	path := "/demo.v1.EchoService/Echo"
	if c.kind == "chat" {
		path = "/demo.v1.ChatService/Chat"
	}
	d := wsDialer(1000+c.id/8, c.roots)
	for ctx.Err() == nil {
		hdr := http.Header{"Origin": {origin}}
		conn, resp, err := d.DialContext(ctx, "wss://"+ingressHost+":8443"+path, hdr)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			kind := "WebSocket handshake: " + errKind(err)
			if resp != nil {
				kind = fmt.Sprintf("WebSocket handshake HTTP %d", resp.StatusCode)
			}
			c.rec.now().errored(refused|abrupt, kind, fmt.Sprintf("%s %d: %v", c.kind, c.id, err))
		} else {
			c.calls++
			if c.kind == "chat" {
				c.chat(ctx, conn, stopSending)
			} else {
				c.echo(ctx, conn, stopSending)
			}
			_ = conn.Close()
		}
		select {
		case <-time.After(time.Second + time.Duration(rand.Int64N(int64(time.Second)))):
		case <-ctx.Done():
		case <-stopSending:
			return
		}
	}
}

// wsEnd is how a call ended.
type wsEnd struct {
	status    int // -1: no status frame
	closeCode int // 1006: no close frame
	err       error
}

func (e wsEnd) String() string {
	st := "no status"
	if e.status >= 0 {
		st = "status " + strconv.Itoa(e.status)
	}
	return fmt.Sprintf("%s, close %d", st, e.closeCode)
}

// record checks how a call ended against the phase.
func (c *wsClient) record(e wsEnd, normal bool) {
	p := c.rec.now()
	p.add(func(p *phase) { p.wsEnds[c.kind+": "+e.String()]++ })
	detail := fmt.Sprintf("%s %d call %d: %s", c.kind, c.id, c.calls, e)
	if e.err != nil {
		detail += ": " + e.err.Error()
	}
	switch {
	case normal && e.status == 0 && e.closeCode == websocket.CloseNormalClosure:
	case e.status == 14 && e.closeCode == websocket.CloseGoingAway:
		p.errored(drain, "WebSocket drained (14/1001)", detail)
	case e.status == 14 && e.closeCode == 4014:
		p.errored(backendX, "WebSocket backend unavailable (14/4014)", detail)
	case e.status < 0:
		p.errored(abrupt, "WebSocket cut without a status frame", detail)
	default:
		p.fail("WebSocket unexpected end", detail)
	}
}

// frame reads one frame: a binary message, or a status (a status frame).
type frame struct {
	msg    []byte
	status int // -1 unless a status frame
	end    *wsEnd
}

func readFrame(conn *websocket.Conn) frame {
	for {
		_ = conn.SetReadDeadline(time.Now().Add(90 * time.Second))
		typ, data, err := conn.ReadMessage()
		if err != nil {
			e := wsEnd{status: -1, closeCode: websocket.CloseAbnormalClosure, err: err}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				e.closeCode, e.err = ce.Code, nil
			}
			return frame{status: -1, end: &e}
		}
		if typ == websocket.BinaryMessage {
			return frame{msg: data, status: -1}
		}
		var ctl struct {
			Status *struct {
				Code int `json:"code"`
			} `json:"status"`
		}
		if json.Unmarshal(data, &ctl) == nil && ctl.Status != nil {
			return frame{status: ctl.Status.Code}
		}
		// headers frame: read on
	}
}

// finish reads the rest of a call after its status frame: the close.
func finish(conn *websocket.Conn, status int) wsEnd {
	f := readFrame(conn)
	if f.end == nil {
		return wsEnd{status: status, closeCode: -2, err: errors.New("a frame after the status frame")}
	}
	f.end.status = status
	return *f.end
}

// echo runs calls of ten round trips each, then half-closes.
func (c *wsClient) echo(ctx context.Context, conn *websocket.Conn, stopSending <-chan struct{}) {
	const roundTrips = 10
	for k := 1; k <= roundTrips; k++ {
		text := fmt.Sprintf("%d:%d:%d", c.id, c.calls, k)
		b, _ := proto.Marshal(&demov1.EchoRequest{Text: text})
		if err := conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
			c.record(c.endAfterWriteError(conn, err), false)
			return
		}
		f := readFrame(conn)
		switch {
		case f.end != nil:
			c.record(*f.end, false)
			return
		case f.status >= 0:
			c.record(finish(conn, f.status), false)
			return
		}
		var resp demov1.EchoResponse
		if err := proto.Unmarshal(f.msg, &resp); err != nil || resp.GetText() != text || resp.GetSeq() != uint64(k) {
			c.rec.now().fail("WebSocket wrong echo", fmt.Sprintf("echo %d: got %q seq %d, want %q seq %d (%v)", c.id, resp.GetText(), resp.GetSeq(), text, k, err))
			return
		}
		c.rec.now().add(func(p *phase) { p.wsMessages++ })
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		case <-stopSending:
			k = roundTrips // half-close now
		}
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"end":true}`)); err != nil {
		c.record(c.endAfterWriteError(conn, err), false)
		return
	}
	f := readFrame(conn)
	switch {
	case f.end != nil:
		c.record(*f.end, false)
	case f.status >= 0:
		c.record(finish(conn, f.status), true)
	default:
		c.rec.now().fail("WebSocket extra message", fmt.Sprintf("echo %d: a message after the half-close", c.id))
	}
}

// endAfterWriteError reads what the bridge said before the connection
// broke, if anything.
func (c *wsClient) endAfterWriteError(conn *websocket.Conn, err error) wsEnd {
	f := readFrame(conn)
	if f.status >= 0 {
		return finish(conn, f.status)
	}
	if f.end != nil {
		return *f.end
	}
	return wsEnd{status: -1, closeCode: websocket.CloseAbnormalClosure, err: err}
}

// chat holds one call: a message a second to its own room, each of which
// must come back once and in order; it leaves (close 1000) when the run
// stops sending, after the last replies.
func (c *wsClient) chat(ctx context.Context, conn *websocket.Conn, stopSending <-chan struct{}) {
	room := fmt.Sprintf("room-%d", c.id)
	var mu sync.Mutex
	var pending []string // sent, not yet echoed, in order
	ended := make(chan wsEnd, 1)
	go func() {
		for {
			f := readFrame(conn)
			if f.end != nil {
				ended <- *f.end
				return
			}
			if f.status >= 0 {
				ended <- finish(conn, f.status)
				return
			}
			var m demov1.ChatMessage
			if err := proto.Unmarshal(f.msg, &m); err != nil {
				c.rec.now().fail("WebSocket bad chat message", err.Error())
				continue
			}
			mu.Lock()
			ok := len(pending) > 0 && pending[0] == m.GetText()
			if ok {
				pending = pending[1:]
			}
			mu.Unlock()
			if !ok {
				c.rec.now().fail("WebSocket chat message out of order or twice", fmt.Sprintf("chat %d: %q", c.id, m.GetText()))
				continue
			}
			c.rec.now().add(func(p *phase) { p.wsMessages++ })
		}
	}()
	lost := func() {
		mu.Lock()
		n := int64(len(pending))
		mu.Unlock()
		if n > 0 {
			c.rec.now().add(func(p *phase) { p.lostAtCut += n })
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for k := 1; ; k++ {
		select {
		case e := <-ended:
			lost()
			c.record(e, false)
			return
		case <-ctx.Done():
			return
		case <-stopSending:
			// Wait for the last replies, then leave.
			if !waitUntil(10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(pending) == 0 }) {
				mu.Lock()
				c.rec.now().fail("WebSocket chat message not echoed", fmt.Sprintf("chat %d: %d pending at the end: %v", c.id, len(pending), pending))
				mu.Unlock()
			}
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
			}
			return
		case <-tick.C:
		}
		text := fmt.Sprintf("%d:%d:%d", c.id, c.calls, k)
		b, _ := proto.Marshal(&demov1.ChatMessage{Room: room, User: strconv.Itoa(c.id), Text: text})
		mu.Lock()
		pending = append(pending, text)
		mu.Unlock()
		if err := conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
			mu.Lock()
			pending = pending[:len(pending)-1] // never sent
			mu.Unlock()
			var e wsEnd
			select {
			case e = <-ended:
			case <-time.After(15 * time.Second):
				e = wsEnd{status: -1, closeCode: websocket.CloseAbnormalClosure, err: err}
			}
			lost()
			c.record(e, false)
			return
		}
	}
}

// percentile of sorted durations.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
