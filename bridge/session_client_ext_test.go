package bridge_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// A grpc-session.v1 client written from docs/protocol.md alone (it shares
// no code with the bridge), for the session tests.

const sessionSubprotocol = "grpc-session.v1"

var sessionKey = []byte("0123456789abcdef0123456789abcdef-test-key")

// Frame types, as docs/protocol.md numbers them.
const (
	tOpen      = 0x01
	tMessage   = 0x02
	tHalfClose = 0x03
	tCancel    = 0x04
	tHeaders   = 0x05
	tStatus    = 0x06
	tWindow    = 0x07
	tAck       = 0x08
	tPing      = 0x09
	tPong      = 0x0a
	tGoaway    = 0x0b
	tHello     = 0x0c
)

type tFrame struct {
	typ       byte
	seq, call uint64
	payload   []byte
}

func encFrame(dst []byte, f tFrame) []byte {
	dst = append(dst, f.typ, 0)
	dst = binary.AppendUvarint(dst, f.seq)
	dst = binary.AppendUvarint(dst, f.call)
	dst = binary.AppendUvarint(dst, uint64(len(f.payload)))
	return append(dst, f.payload...)
}

func decFrames(b []byte) ([]tFrame, error) {
	var out []tFrame
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("short frame")
		}
		f := tFrame{typ: b[0]}
		b = b[2:]
		var vals [3]uint64
		for i := range vals {
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, errors.New("bad varint")
			}
			vals[i], b = v, b[n:]
		}
		f.seq, f.call = vals[0], vals[1]
		if vals[2] > uint64(len(b)) {
			return nil, errors.New("short payload")
		}
		f.payload, b = b[:vals[2]], b[vals[2]:]
		out = append(out, f)
	}
	return out, nil
}

type tHelloFrame struct {
	token                                    string
	ack, maxCalls, window, maxMessage, grace uint64
}

func decHello(p []byte) tHelloFrame {
	n, used := binary.Uvarint(p)
	h := tHelloFrame{token: string(p[used : used+int(n)])}
	p = p[used+int(n):]
	for _, v := range []*uint64{&h.ack, &h.maxCalls, &h.window, &h.maxMessage, &h.grace} {
		x, used := binary.Uvarint(p)
		*v, p = x, p[used:]
	}
	return h
}

type tStatusFrame struct {
	Status struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
	} `json:"status"`
	Trailers map[string][]string `json:"trailers"`
}

// sessionEnv is a bridge with sessions behind a test server, or several
// (replicas) sharing one backend.
type sessionEnv struct {
	replicas []*sessionReplica
	test     *wsTestService
}

type sessionReplica struct {
	srv     *httptest.Server
	url     string // http://127.0.0.1:port
	addr    string
	h       *bridge.Handler
	metrics *sessionCounter
	active  *sync.WaitGroup
}

// newSessionEnv starts n replicas; each gets the options that opts makes
// for its advertised address.
func newSessionEnv(t *testing.T, n int, opts func(addr string) []bridge.Option) *sessionEnv {
	t.Helper()
	svc := &wsTestService{held: make(chan context.Context, 256)}
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		s.RegisterService(&wsTestServiceDesc, svc)
	})
	env := &sessionEnv{test: svc}
	for range n {
		env.replicas = append(env.replicas, startReplica(t, conn, opts))
	}
	return env
}

func startReplica(t *testing.T, conn grpc.ClientConnInterface, opts func(addr string) []bridge.Option) *sessionReplica {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rep := &sessionReplica{addr: lis.Addr().String(), metrics: newSessionCounter(), active: new(sync.WaitGroup)}
	all := append([]bridge.Option{
		bridge.WithBackend(conn),
		bridge.WithFiles(wsFiles()),
		bridge.WithExpose("demo.v1.*", "wstest.v1.*"),
		bridge.WithMetrics(rep.metrics),
	}, opts(rep.addr)...)
	if rep.h, err = bridge.NewHandler(all...); err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	rep.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep.active.Add(1)
		defer rep.active.Done()
		rep.h.ServeHTTP(w, r)
	}))
	rep.srv.Listener = lis
	rep.srv.Start()
	rep.url = rep.srv.URL
	t.Cleanup(rep.stop)
	return rep
}

// stop ends the replica as a killed process would, then waits for its
// handlers and sessions.
func (rep *sessionReplica) stop() {
	rep.srv.CloseClientConnections()
	rep.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wsSafetyTimeout)
	defer cancel()
	_ = rep.h.Shutdown(ctx)
	rep.active.Wait()
}

func sessionOpts(o bridge.SessionOptions) func(string) []bridge.Option {
	return func(addr string) []bridge.Option {
		if o.Keys == nil {
			o.Keys = [][]byte{sessionKey}
		}
		o.AdvertiseAddr = addr
		if o.Peers == nil {
			o.Peers = []string{"127.0.0.1/32"}
		}
		return []bridge.Option{bridge.WithSessions(o)}
	}
}

// sessionCounter is a Metrics with SessionMetrics that counts.
type sessionCounter struct {
	mu                                       sync.Mutex
	started, ended, resumed, fwds, fallbacks map[string]int
	calls                                    int
}

func newSessionCounter() *sessionCounter {
	return &sessionCounter{started: map[string]int{}, ended: map[string]int{}, resumed: map[string]int{}, fwds: map[string]int{}, fallbacks: map[string]int{}}
}

func (m *sessionCounter) StreamStarted(string, string, bool) bridge.StreamObserver {
	return nopObserver{}
}
func (m *sessionCounter) SessionStarted(c string)   { m.inc(m.started, c) }
func (m *sessionCounter) SessionResumed(c string)   { m.inc(m.resumed, c) }
func (m *sessionCounter) SessionForwarded(o string) { m.inc(m.fwds, o) }
func (m *sessionCounter) SessionFellBack(r string)  { m.inc(m.fallbacks, r) }
func (m *sessionCounter) SessionEnded(c string, calls int) {
	m.mu.Lock()
	m.calls += calls
	m.mu.Unlock()
	m.inc(m.ended, c)
}

func (m *sessionCounter) inc(to map[string]int, k string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	to[k]++
}

func (m *sessionCounter) get(from map[string]int, k string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return from[k]
}

type nopObserver struct{}

func (nopObserver) MessageSent(int)                   {}
func (nopObserver) MessageReceived(int)               {}
func (nopObserver) StreamEnded(codes.Code, int, bool) {}

// tSession is one client session.
type tSession struct {
	t       testing.TB
	carrier string   // "websocket" or "http"
	bases   []string // http://host:port of the replicas, taken in turn per request
	rr      int

	mu       sync.Mutex
	hello    tHelloFrame
	token    string
	nextCall uint64
	sendSeq  uint64
	unacked  []tFrame // upstream, until the bridge acknowledges them
	recvSeq  uint64   // downstream taken
	calls    map[uint64]*tCall
	goaway   chan []byte
	lost     chan struct{} // the downstream ended
	ws       *websocket.Conn
	wsMu     sync.Mutex // one WebSocket writer
	body     io.Closer  // the event stream's body
	postMu   sync.Mutex // one upstream POST at a time
	seqMu    sync.Mutex // sequenced frames go out in order
	readers  sync.WaitGroup
	received int  // frames taken, for tests that count
	noAck    bool // acknowledge nothing: a client that does not keep up
	// header goes with every request of the session, as a browser sends
	// its Origin and cookies; nil for none.
	header http.Header
}

// tCall is one call of a tSession.
type tCall struct {
	s       *tSession
	id      uint64
	headers chan map[string][]string
	msgs    chan []byte
	status  chan tStatusFrame
	window  int64 // upstream
	noGrant bool  // a stalled consumer: grants nothing
}

// dialSession opens a session over carrier, to bases ("http://host:port")
// in turn, as a load balancer without affinity would.
func dialSession(t testing.TB, carrier string, bases ...string) *tSession {
	t.Helper()
	return dialSessionWith(t, carrier, nil, bases...)
}

// dialSessionWith is dialSession with header on every request of the
// session.
func dialSessionWith(t testing.TB, carrier string, header http.Header, bases ...string) *tSession {
	t.Helper()
	s := &tSession{t: t, carrier: carrier, bases: bases, calls: map[uint64]*tCall{}, goaway: make(chan []byte, 1), header: header}
	if carrier == "websocket" {
		s.attachWS("")
	} else {
		resp, err := s.do(http.MethodPost, s.pick()+"/_bridge/session", "", nil)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("create: HTTP %d %s", resp.StatusCode, body)
		}
		frames, err := decFrames(body)
		if err != nil || len(frames) != 1 || frames[0].typ != tHello {
			t.Fatalf("create: want one HELLO, got %v %v", frames, err)
		}
		s.hello = decHello(frames[0].payload)
		s.token = s.hello.token
		s.attachSSE()
	}
	t.Cleanup(s.close)
	return s
}

// close sends GOAWAY and lets go of the downstream.
func (s *tSession) close() {
	_ = s.sendUnsequenced(tFrame{typ: tGoaway})
	s.cut()
	s.readers.Wait()
}

// cut ends the downstream as a proxy would.
func (s *tSession) cut() {
	s.mu.Lock()
	ws, body := s.ws, s.body
	s.mu.Unlock()
	if ws != nil {
		_ = ws.Close()
	}
	if body != nil {
		_ = body.Close()
	}
	s.readers.Wait()
}

// pick is the replica of the next request.
func (s *tSession) pick() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bases[s.rr%len(s.bases)]
	s.rr++
	return b
}

func (s *tSession) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(s.pick(), "http") + "/_bridge/session" + query
}

func (s *tSession) resumeQuery() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "?sid=" + url.QueryEscape(s.token) + "&ack=" + strconv.FormatUint(s.recvSeq, 10)
}

// attachWS opens the WebSocket (query "" for a new session) and reads
// until it ends.
func (s *tSession) attachWS(query string) {
	d := websocket.Dialer{Subprotocols: []string{sessionSubprotocol}, HandshakeTimeout: wsSafetyTimeout}
	conn, resp, err := d.Dial(s.wsURL(query), s.header.Clone())
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			s.t.Fatalf("dial: %v: HTTP %d %s", err, resp.StatusCode, body)
		}
		s.t.Fatalf("dial: %v", err)
	}
	_, first, err := conn.ReadMessage()
	if err != nil {
		s.t.Fatalf("read HELLO: %v", err)
	}
	s.takeHello(first)
	s.mu.Lock()
	s.ws = conn
	s.lost = make(chan struct{})
	lost := s.lost
	s.mu.Unlock()
	s.resend()
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		defer close(lost)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			s.onBatch(data)
		}
	}()
}

// takeHello reads the first batch: HELLO, maybe more.
func (s *tSession) takeHello(batch []byte) {
	frames, err := decFrames(batch)
	if err != nil || len(frames) == 0 || frames[0].typ != tHello {
		s.t.Errorf("want HELLO first, got %v %v", frames, err)
		return
	}
	h := decHello(frames[0].payload)
	s.mu.Lock()
	s.hello, s.token = h, h.token
	s.ackedLocked(h.ack)
	s.mu.Unlock()
	s.onFrames(frames[1:])
}

// attachSSE opens the event stream and reads it until it ends.
func (s *tSession) attachSSE() {
	resp, err := s.do(http.MethodGet, s.pick()+"/_bridge/session"+s.resumeQuery(), "", nil)
	if err != nil {
		s.t.Fatalf("downstream: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.t.Fatalf("downstream: HTTP %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	rd := bridgetest.NewSSEReader(resp.Body)
	first := true
	for first {
		ev, err := rd.Next()
		if err != nil {
			s.t.Fatalf("downstream: %v", err)
		}
		if ev.Type != "message" {
			continue // the retry hint
		}
		b, err := base64.StdEncoding.DecodeString(ev.Data)
		if err != nil {
			s.t.Fatalf("event data not base64: %v", err)
		}
		s.takeHello(b)
		first = false
	}
	s.mu.Lock()
	s.body = resp.Body
	s.lost = make(chan struct{})
	lost := s.lost
	s.mu.Unlock()
	s.resend()
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		defer close(lost)
		defer resp.Body.Close()
		for {
			ev, err := rd.Next()
			if err != nil {
				return
			}
			if ev.Type != "message" {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(ev.Data)
			if err != nil {
				s.t.Errorf("event data not base64: %v", err)
				return
			}
			s.onBatch(b)
		}
	}()
}

// resume reattaches the downstream over the session's carrier.
func (s *tSession) resume() {
	if s.carrier == "websocket" {
		s.attachWS(s.resumeQuery())
	} else {
		s.attachSSE()
	}
}

func (s *tSession) onBatch(b []byte) {
	frames, err := decFrames(b)
	if err != nil {
		s.t.Errorf("downstream frames: %v", err)
		return
	}
	s.onFrames(frames)
}

func (s *tSession) onFrames(frames []tFrame) {
	took := false
	for _, f := range frames {
		switch f.typ {
		case tAck:
			ack, _ := binary.Uvarint(f.payload)
			s.mu.Lock()
			s.ackedLocked(ack)
			s.mu.Unlock()
			continue
		case tGoaway:
			s.t.Logf("GOAWAY %s", f.payload)
			select {
			case s.goaway <- f.payload:
			default:
			}
			continue
		case tPong, tHello:
			continue
		}
		s.mu.Lock()
		if f.seq <= s.recvSeq {
			s.mu.Unlock()
			continue // resent
		}
		if f.seq != s.recvSeq+1 {
			s.mu.Unlock()
			s.t.Errorf("downstream gap: frame %d after %d", f.seq, s.recvSeq)
			return
		}
		s.recvSeq = f.seq
		s.received++
		c := s.calls[f.call]
		if c != nil && f.typ == tWindow {
			inc, _ := binary.Uvarint(f.payload)
			c.window += int64(inc)
		}
		s.mu.Unlock()
		took = true
		if c == nil {
			continue
		}
		switch f.typ {
		case tHeaders:
			var hf struct {
				Headers map[string][]string `json:"headers"`
			}
			_ = json.Unmarshal(f.payload, &hf)
			c.headers <- hf.Headers
		case tMessage:
			c.msgs <- bytes.Clone(f.payload)
		case tStatus:
			var st tStatusFrame
			if err := json.Unmarshal(f.payload, &st); err != nil {
				s.t.Errorf("STATUS: %v", err)
			}
			c.status <- st
		}
	}
	s.mu.Lock()
	noAck := s.noAck
	s.mu.Unlock()
	if took && !noAck {
		s.mu.Lock()
		ack := s.recvSeq
		s.mu.Unlock()
		_ = s.sendUnsequenced(tFrame{typ: tAck, payload: binary.AppendUvarint(nil, ack)})
	}
}

func (s *tSession) ackedLocked(ack uint64) {
	for len(s.unacked) > 0 && s.unacked[0].seq <= ack {
		s.unacked = s.unacked[1:]
	}
}

// send sends a sequenced frame, kept until acknowledged.
// Frames go out in seq order: a frame ahead of one not sent yet would be
// a gap, which the bridge discards.
func (s *tSession) send(f tFrame) error {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	return s.sendLocked(f)
}

func (s *tSession) sendLocked(f tFrame) error {
	s.mu.Lock()
	s.sendSeq++
	f.seq = s.sendSeq
	s.unacked = append(s.unacked, f)
	s.mu.Unlock()
	return s.transmit(encFrame(nil, f))
}

// sendBatch sends sequenced frames in one WebSocket message or POST.
func (s *tSession) sendBatch(frames ...tFrame) error {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	var b []byte
	s.mu.Lock()
	for _, f := range frames {
		s.sendSeq++
		f.seq = s.sendSeq
		s.unacked = append(s.unacked, f)
		b = encFrame(b, f)
	}
	s.mu.Unlock()
	return s.transmit(b)
}

func (s *tSession) sendUnsequenced(f tFrame) error { return s.transmit(encFrame(nil, f)) }

// resend sends what the bridge has not acknowledged, after a reattach.
func (s *tSession) resend() {
	s.mu.Lock()
	var b []byte
	for _, f := range s.unacked {
		b = encFrame(b, f)
	}
	s.mu.Unlock()
	if len(b) > 0 {
		_ = s.transmit(b)
	}
}

func (s *tSession) transmit(b []byte) error {
	if s.carrier == "websocket" {
		s.mu.Lock()
		ws := s.ws
		s.mu.Unlock()
		s.wsMu.Lock()
		defer s.wsMu.Unlock()
		// During a cut a write fails; what is not acknowledged is sent
		// again after the reattach.
		_ = ws.WriteMessage(websocket.BinaryMessage, b)
		return nil
	}
	s.postMu.Lock()
	defer s.postMu.Unlock()
	s.mu.Lock()
	token := s.token
	s.mu.Unlock()
	resp, err := s.do(http.MethodPost, s.pick()+"/_bridge/session?sid="+url.QueryEscape(token), "application/octet-stream", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST: HTTP %d %s", resp.StatusCode, body)
	}
	frames, err := decFrames(body)
	if err != nil || len(frames) != 1 || frames[0].typ != tAck {
		return fmt.Errorf("POST answer: want an ACK, got %v %v", frames, err)
	}
	s.onFrames(frames)
	return nil
}

// do sends one request of the session, with its header.
func (s *tSession) do(method, url, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range s.header {
		req.Header[k] = vs
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return http.DefaultClient.Do(req)
}

// open starts a call of path with the metadata JSON md ("" for none).
func (s *tSession) open(path, md string) *tCall {
	// Ids grow in the order of the OPEN frames.
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	s.mu.Lock()
	s.nextCall++
	c := &tCall{s: s, id: s.nextCall, headers: make(chan map[string][]string, 1), msgs: make(chan []byte, 4096),
		status: make(chan tStatusFrame, 1), window: int64(s.hello.window)}
	s.calls[c.id] = c
	s.mu.Unlock()
	p := binary.AppendUvarint(nil, 0)
	p = binary.AppendUvarint(p, uint64(len(path)))
	p = append(append(p, path...), md...)
	if err := s.sendLocked(tFrame{typ: tOpen, call: c.id, payload: p}); err != nil {
		s.t.Fatalf("OPEN: %v", err)
	}
	return c
}

func (c *tCall) sendMsg(m proto.Message) {
	b, err := proto.Marshal(m)
	if err != nil {
		c.s.t.Fatal(err)
	}
	c.s.mu.Lock()
	c.window -= int64(len(b))
	c.s.mu.Unlock()
	if err := c.s.send(tFrame{typ: tMessage, call: c.id, payload: b}); err != nil {
		c.s.t.Errorf("MESSAGE: %v", err)
	}
}

func (c *tCall) halfClose() {
	if err := c.s.send(tFrame{typ: tHalfClose, call: c.id}); err != nil {
		c.s.t.Errorf("HALF_CLOSE: %v", err)
	}
}

func (c *tCall) cancel() {
	if err := c.s.send(tFrame{typ: tCancel, call: c.id}); err != nil {
		c.s.t.Errorf("CANCEL: %v", err)
	}
}

// recv returns the next message, granting its window back unless the
// call is a stalled consumer; false at the status.
func (c *tCall) recv(m proto.Message) bool {
	var b []byte
	select { // messages come before the status, which waits in its own channel
	case b = <-c.msgs:
	default:
	}
	if b == nil {
		select {
		case b = <-c.msgs:
		case st := <-c.status:
			select {
			case b = <-c.msgs: // it came before the status after all
				c.status <- st
			default:
				c.status <- st
				return false
			}
		case <-time.After(wsSafetyTimeout):
			c.s.t.Errorf("call %d: no message or status in time", c.id)
			return false
		}
	}
	{
		if err := proto.Unmarshal(b, m); err != nil {
			c.s.t.Errorf("response: %v", err)
		}
		if !c.noGrant {
			_ = c.s.send(tFrame{typ: tWindow, call: c.id, payload: binary.AppendUvarint(nil, uint64(len(b)))})
		}
		return true
	}
}

// final waits for the status, after any messages.
func (c *tCall) final() tStatusFrame {
	timeout := time.After(wsSafetyTimeout)
	for {
		select {
		case <-c.msgs:
		case st := <-c.status:
			c.status <- st
			return st
		case <-timeout:
			c.s.t.Errorf("call %d: no status in time", c.id)
			return tStatusFrame{}
		}
	}
}

// signToken makes a token as docs/protocol.md describes it.
func signToken(key []byte, id [16]byte, expiry time.Time, owner string) string {
	payload := append([]byte{1}, id[:]...)
	payload = binary.BigEndian.AppendUint64(payload, uint64(expiry.Unix()))
	payload = append(payload, owner...)
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// tokenParts splits a token into its session id and owner.
func tokenParts(t testing.TB, token string) ([16]byte, string) {
	t.Helper()
	p64, _, _ := strings.Cut(token, ".")
	p, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil || len(p) < 25 || p[0] != 1 {
		t.Fatalf("token %q does not parse as documented: %v", token, err)
	}
	var id [16]byte
	copy(id[:], p[1:17])
	return id, string(p[25:])
}
