package bridge_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

var sessionCarriers = []string{"websocket", "http"}

const (
	sEchoPath   = "/demo.v1.EchoService/Echo"
	sStreamPath = "/demo.v1.EchoService/Stream"
	sUnaryPath  = "/wstest.v1.TestService/Unary"
	sCollPath   = "/wstest.v1.TestService/Collect"
	sHoldPath   = "/wstest.v1.TestService/Hold"
)

func wantCode(t *testing.T, what string, st tStatusFrame, code codes.Code) {
	t.Helper()
	if st.Status.Code != code {
		t.Errorf("%s: status %v %q, want %v", what, st.Status.Code, st.Status.Message, code)
	}
}

// echoCall runs a bidi Echo call of n messages and checks every response
// once, in order.
func echoCall(t *testing.T, s *tSession, n int, tag string) {
	c := s.open(sEchoPath, "")
	for i := 1; i <= n; i++ {
		c.sendMsg(&demov1.EchoRequest{Text: fmt.Sprintf("%s-%d", tag, i)})
		var resp demov1.EchoResponse
		if !c.recv(&resp) {
			t.Errorf("%s: call ended before response %d", tag, i)
			return
		}
		if resp.GetSeq() != uint64(i) || resp.GetText() != fmt.Sprintf("%s-%d", tag, i) {
			t.Errorf("%s: response %d is seq %d %q", tag, i, resp.GetSeq(), resp.GetText())
			return
		}
	}
	c.halfClose()
	wantCode(t, tag, c.final(), codes.OK)
}

// TestSessionCallKinds runs a call of each kind, at once, on one session,
// over each carrier: unary with metadata, server-streaming, client-streaming
// and bidirectional, each ending with its status.
func TestSessionCallKinds(t *testing.T) {
	for _, carrier := range sessionCarriers {
		t.Run(carrier, func(t *testing.T) {
			env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{}))
			s := dialSession(t, carrier, env.replicas[0].url)
			var wg sync.WaitGroup
			wg.Add(4)
			go func() { // unary, with metadata from the OPEN frame
				defer wg.Done()
				c := s.open(sUnaryPath, `{"metadata":{"x-request-id":["r1"]}}`)
				c.sendMsg(newNote("hello"))
				got := newNote("")
				if !c.recv(got) || noteText(got) != "hello" || !strings.Contains(strings.Join(noteValues(got), ","), "x-request-id=r1") {
					t.Errorf("unary: got %v", got)
				}
				wantCode(t, "unary", c.final(), codes.OK)
			}()
			go func() { // server-streaming
				defer wg.Done()
				c := s.open(sStreamPath, "")
				c.sendMsg(&demov1.StreamRequest{Count: 5, Size: 3})
				for i := 1; i <= 5; i++ {
					var r demov1.EchoResponse
					if !c.recv(&r) || r.GetSeq() != uint64(i) || len(r.GetPayload()) != 3 {
						t.Errorf("stream: response %d: %v", i, &r)
					}
				}
				wantCode(t, "stream", c.final(), codes.OK)
			}()
			go func() { // client-streaming
				defer wg.Done()
				c := s.open(sCollPath, "")
				for _, w := range []string{"a", "b", "c"} {
					c.sendMsg(newNote(w))
				}
				c.halfClose()
				got := newNote("")
				if !c.recv(got) || noteText(got) != "a,b,c" || noteCount(got) != 3 {
					t.Errorf("collect: got %v", got)
				}
				wantCode(t, "collect", c.final(), codes.OK)
			}()
			go func() { // bidirectional
				defer wg.Done()
				echoCall(t, s, 5, "echo")
			}()
			wg.Wait()
		})
	}
}

// TestSessionCallErrors: what ends a call but not its session.
func TestSessionCallErrors(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{}))
	s := dialSession(t, "websocket", env.replicas[0].url)

	c := s.open("/demo.v1.Nope/Nothing", "")
	wantCode(t, "unknown method", c.final(), codes.NotFound)

	c = s.open(sUnaryPath, "")
	c.sendMsg(newNote("fail please"))
	st := c.final()
	wantCode(t, "backend error", st, codes.FailedPrecondition)
	if st.Status.Message != "fail please" {
		t.Errorf("backend error message %q", st.Status.Message)
	}

	c = s.open(sStreamPath, "")
	if err := s.send(tFrame{typ: tMessage, call: c.id, payload: []byte{0xff}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "undecodable message", c.final(), codes.InvalidArgument)

	c = s.open(sUnaryPath, "")
	// In one batch: a second message after the call has ended would be
	// ignored, as frames for an ended call are.
	one, _ := proto.Marshal(newNote("one"))
	if err := s.sendBatch(tFrame{typ: tMessage, call: c.id, payload: one}, tFrame{typ: tMessage, call: c.id, payload: one}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "second message of a unary call", c.final(), codes.InvalidArgument)

	c = s.open(sHoldPath, "")
	held := env.heldCall(t)
	c.cancel()
	wantCode(t, "cancelled", c.final(), codes.Canceled)
	wantCancelled(t, held)

	c = s.open(sUnaryPath, `{"metadata":{"grpc-timeout":["soon"]}}`)
	wantCode(t, "bad metadata", c.final(), codes.InvalidArgument)

	c = s.open(sHoldPath, `{"metadata":{"grpc-timeout":["50m"]}}`)
	wantCode(t, "OPEN's deadline", c.final(), codes.DeadlineExceeded)

	// The session is still up.
	echoCall(t, s, 2, "after")
}

// heldCall is the context of the next Hold call to start at the backend.
func (e *sessionEnv) heldCall(t *testing.T) context.Context {
	t.Helper()
	select {
	case ctx := <-e.test.held:
		return ctx
	case <-time.After(wsSafetyTimeout):
		t.Fatal("the Hold call did not reach the backend")
		return nil
	}
}

// TestSessionManyCalls runs 100 bidi calls at once on one session.
func TestSessionManyCalls(t *testing.T) {
	for _, carrier := range sessionCarriers {
		t.Run(carrier, func(t *testing.T) {
			env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{}))
			s := dialSession(t, carrier, env.replicas[0].url)
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					echoCall(t, s, 5, fmt.Sprintf("c%d", i))
				}()
			}
			wg.Wait()
			if got := env.replicas[0].metrics.get(env.replicas[0].metrics.started, carrierStarted(carrier)); got != 1 {
				t.Errorf("sessions started: %d, want 1", got)
			}
		})
	}
}

func carrierStarted(carrier string) string {
	if carrier == "http" {
		return bridge.SessionCarrierHTTP
	}
	return bridge.SessionCarrierWebSocket
}

// TestSessionStalledCall: a call whose consumer takes nothing stops at its
// window, and the other calls of the session run to the end meanwhile.
func TestSessionStalledCall(t *testing.T) {
	const window = 16 << 10
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{Window: window}))
	s := dialSession(t, "websocket", env.replicas[0].url)
	stalled := s.open(sStreamPath, "")
	stalled.noGrant = true
	stalled.sendMsg(&demov1.StreamRequest{Count: 10000, Size: 1000})

	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.open(sStreamPath, "")
			c.sendMsg(&demov1.StreamRequest{Count: 500, Size: 1000})
			for n := 1; n <= 500; n++ {
				var r demov1.EchoResponse
				if !c.recv(&r) || r.GetSeq() != uint64(n) {
					t.Errorf("call %d: response %d: %v", i, n, &r)
					return
				}
			}
			wantCode(t, "busy call", c.final(), codes.OK)
		}()
	}
	wg.Wait()
	// Each response is about 1 KB: the stalled call got its window's worth,
	// plus the one message that may overdraw it.
	if got, most := len(stalled.msgs), window/1000+1; got > most || got == 0 {
		t.Errorf("the stalled call got %d messages, want 1 to %d", got, most)
	}
	stalled.cancel()
	wantCode(t, "stalled call", stalled.final(), codes.Canceled)
}

// TestSessionLimits: calls per session and sessions per client.
func TestSessionLimits(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{MaxCalls: 2, MaxSessionsPerClient: 1}))
	base := env.replicas[0].url
	s := dialSession(t, "websocket", base)
	a, b := s.open(sHoldPath, ""), s.open(sHoldPath, "")
	env.heldCall(t)
	env.heldCall(t)
	c := s.open(sHoldPath, "")
	st := c.final()
	wantCode(t, "third call", st, codes.ResourceExhausted)
	if !strings.Contains(st.Status.Message, "limit of 2 calls") {
		t.Errorf("third call: message %q", st.Status.Message)
	}
	a.halfClose()
	wantCode(t, "first call", a.final(), codes.OK)
	d := s.open(sHoldPath, "") // room again
	env.heldCall(t)
	for _, c := range []*tCall{b, d} {
		c.halfClose()
		wantCode(t, "call", c.final(), codes.OK)
	}

	resp, err := http.Post(base+"/_bridge/session", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "limit of 1 sessions") {
		t.Errorf("second session: HTTP %d %s, want 429", resp.StatusCode, body)
	}
}

// TestSessionBytesInFlight: a client that acknowledges nothing gets no
// more than the session's bytes in flight, whatever its calls' windows.
func TestSessionBytesInFlight(t *testing.T) {
	const inFlight = 8 << 10
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{MaxBytesInFlight: inFlight}))
	s := dialSession(t, "websocket", env.replicas[0].url)
	s.mu.Lock()
	s.noAck = true
	s.mu.Unlock()
	calls := make([]*tCall, 4)
	for i := range calls {
		calls[i] = s.open(sStreamPath, "")
		calls[i].sendMsg(&demov1.StreamRequest{Count: 1000, Size: 1000})
	}
	time.Sleep(300 * time.Millisecond)
	got := 0
	for _, c := range calls {
		got += len(c.msgs)
	}
	// About 1 KB a response: the limit's worth, plus the one that may
	// start when the session is just below it.
	if most := inFlight/1000 + 1; got == 0 || got > most {
		t.Errorf("got %d responses unacknowledged, want 1 to %d", got, most)
	}
	for _, c := range calls {
		c.cancel()
	}
	s.mu.Lock()
	s.noAck = false
	ack := s.recvSeq
	s.mu.Unlock()
	_ = s.sendUnsequenced(tFrame{typ: tAck, payload: binary.AppendUvarint(nil, ack)})
	for _, c := range calls {
		wantCode(t, "call", c.final(), codes.Canceled)
	}
}

// TestSessionCutsUnderLoad cuts the downstream every 2 s (every 300 ms
// with -short) while calls stream both ways; every response arrives
// exactly once and in order, and every request reaches the backend once.
func TestSessionCutsUnderLoad(t *testing.T) {
	every, cuts := 2*time.Second, 3
	if testing.Short() {
		every, cuts = 300*time.Millisecond, 4
	}
	for _, carrier := range sessionCarriers {
		t.Run(carrier, func(t *testing.T) {
			env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{}))
			s := dialSession(t, carrier, env.replicas[0].url)
			stop := make(chan struct{})
			var cutter sync.WaitGroup
			cutter.Add(1)
			go func() {
				defer cutter.Done()
				for range cuts {
					select {
					case <-stop:
						return
					case <-time.After(every):
					}
					s.cut()
					s.resume()
				}
			}()
			total := int32(every.Milliseconds()) * int32(cuts+1) / 2 // one every 2 ms over the test
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Add(2)
				go func() {
					defer wg.Done()
					c := s.open(sStreamPath, "")
					c.sendMsg(&demov1.StreamRequest{Count: total / 4, Size: 100, IntervalMs: 8})
					for n := 1; n <= int(total/4); n++ {
						var r demov1.EchoResponse
						if !c.recv(&r) || r.GetSeq() != uint64(n) {
							t.Errorf("stream %d: response %d is %v", i, n, &r)
							return
						}
					}
					wantCode(t, "stream", c.final(), codes.OK)
				}()
				go func() {
					defer wg.Done()
					c := s.open(sEchoPath, "")
					for n := 1; n <= 200; n++ {
						c.sendMsg(&demov1.EchoRequest{Text: fmt.Sprint(n)})
						var r demov1.EchoResponse
						// The backend numbers what it got: a request lost or
						// taken twice would show in seq.
						if !c.recv(&r) || r.GetSeq() != uint64(n) || r.GetText() != fmt.Sprint(n) {
							t.Errorf("echo %d: response %d is %v", i, n, &r)
							return
						}
						time.Sleep(time.Duration(every.Milliseconds()*int64(cuts)/200) * time.Millisecond / 2)
					}
					c.halfClose()
					wantCode(t, "echo", c.final(), codes.OK)
				}()
			}
			wg.Wait()
			close(stop)
			cutter.Wait()
			if got := env.replicas[0].metrics.get(env.replicas[0].metrics.resumed, resumedCarrier(carrier)); got == 0 {
				t.Errorf("no downstream resume counted")
			}
		})
	}
}

func resumedCarrier(carrier string) string {
	if carrier == "http" {
		return bridge.SessionCarrierSSE
	}
	return bridge.SessionCarrierWebSocket
}

// TestSessionGracePeriod: without a downstream for the grace period, the
// session ends, its calls are cancelled at the backend, and its token
// gets 404.
func TestSessionGracePeriod(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{GracePeriod: 200 * time.Millisecond}))
	s := dialSession(t, "http", env.replicas[0].url)
	s.open(sHoldPath, "")
	held := env.heldCall(t)
	s.cut()
	wantCancelled(t, held)
	code, body := sessionGet(t, env.replicas[0].url, s.resumeQuery())
	if code != http.StatusNotFound {
		t.Errorf("resume after the grace period: HTTP %d %s, want 404", code, body)
	}
}

// sessionGet GETs the session path with query as a poll, and returns the
// status and body.
func sessionGet(t *testing.T, base, query string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/_bridge/session" + query + "&poll=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestSessionPolling: the downstream by long polling, as behind a proxy
// that buffers responses.
func TestSessionPolling(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{PollTimeout: 100 * time.Millisecond}))
	base := env.replicas[0].url
	s := dialSession(t, "http", base)
	s.cut() // the client gave up on the event stream
	c := s.open(sStreamPath, "")
	c.sendMsg(&demov1.StreamRequest{Count: 20, Size: 10, IntervalMs: 5})
	deadline := time.Now().Add(wsSafetyTimeout)
	for len(c.status) == 0 && time.Now().Before(deadline) {
		resp, err := http.Get(base + "/_bridge/session" + s.resumeQuery() + "&poll=1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("poll: HTTP %d %s", resp.StatusCode, b)
		}
		s.takeHello(b)
	}
	for n := 1; n <= 20; n++ {
		var r demov1.EchoResponse
		if !c.recv(&r) || r.GetSeq() != uint64(n) {
			t.Fatalf("response %d is %v", n, &r)
		}
	}
	wantCode(t, "polled call", c.final(), codes.OK)
}

// TestSessionTokens: tokens that are not the bridge's are refused.
func TestSessionTokens(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{
		Keys:        [][]byte{sessionKey, []byte("an-older-key-still-accepted-0123456789")},
		PollTimeout: 20 * time.Millisecond,
	}))
	rep := env.replicas[0]
	s := dialSession(t, "http", rep.url)
	id, owner := tokenParts(t, s.token)
	if owner != rep.addr {
		t.Errorf("token owner %q, want %q", owner, rep.addr)
	}
	later := time.Now().Add(time.Hour)
	// Forged: the same payload with one bit of the MAC changed.
	p64, m64, _ := strings.Cut(s.token, ".")
	sum, _ := base64.RawURLEncoding.DecodeString(m64)
	sum[0] ^= 1
	forged := p64 + "." + base64.RawURLEncoding.EncodeToString(sum)
	cases := []struct {
		name  string
		token string
		code  int
	}{
		{"valid", s.token, http.StatusOK},
		{"second key", signToken([]byte("an-older-key-still-accepted-0123456789"), id, later, owner), http.StatusOK},
		{"forged", forged, http.StatusForbidden},
		{"expired", signToken(sessionKey, id, time.Now().Add(-time.Second), owner), http.StatusForbidden},
		{"foreign key", signToken([]byte("some-other-deployment-key-0123456789"), id, later, owner), http.StatusForbidden},
		{"not a token", "hello", http.StatusBadRequest},
		{"unknown session", signToken(sessionKey, [16]byte{1}, later, owner), http.StatusNotFound},
	}
	for _, tc := range cases {
		code, body := sessionGet(t, rep.url, "?sid="+url.QueryEscape(tc.token)+"&ack=0")
		if code != tc.code {
			t.Errorf("%s: HTTP %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
}

// TestSessionReplicas: a session created on one replica, its requests
// spread over two without affinity: the other forwards to the owner.
func TestSessionReplicas(t *testing.T) {
	env := newSessionEnv(t, 2, sessionOpts(bridge.SessionOptions{}))
	a, b := env.replicas[0], env.replicas[1]
	s := dialSession(t, "http", a.url, b.url) // created on a, downstream through b
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			echoCall(t, s, 10, fmt.Sprintf("r%d", i))
		}()
	}
	wg.Wait()
	if got := b.metrics.get(b.metrics.fwds, bridge.ForwardOutcomeForwarded); got == 0 {
		t.Error("replica b forwarded nothing")
	}
	// A WebSocket reattach through b is forwarded too.
	s.cut()
	s.carrier = "websocket"
	s.rr = 1
	s.resume()
	echoCall(t, s, 3, "ws")
}

// TestSessionForwardOutsidePeers: a replica refuses to forward to an owner
// outside its peer set, whatever the token says.
func TestSessionForwardOutsidePeers(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{}))
	other := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{Peers: []string{"10.0.0.0/8"}}))
	a, b := env.replicas[0], other.replicas[0]
	s := dialSession(t, "http", a.url)
	code, body := sessionGet(t, b.url, s.resumeQuery())
	if code != http.StatusForbidden || !strings.Contains(body, "not a peer") {
		t.Errorf("resume through a replica without the owner as peer: HTTP %d %s, want 403", code, body)
	}
	if got := b.metrics.get(b.metrics.fwds, bridge.ForwardOutcomeRefused); got != 1 {
		t.Errorf("refused forwards: %d, want 1", got)
	}
	// And a request that claims to be forwarded is taken only from a peer.
	req, _ := http.NewRequest(http.MethodGet, b.url+"/_bridge/session"+s.resumeQuery(), nil)
	req.Header.Set("Grpc-Session-Forwarded", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("forwarded request from a non-peer: HTTP %d, want 403", resp.StatusCode)
	}
}

// TestSessionForgedForwardMark: a browser that sets Grpc-Session-Forwarded
// itself, through a proxy whose address is in the peer set, does not skip
// the owner's origin check; only a replica's mark makes a request
// forwarded, and forwarding between replicas still works.
func TestSessionForgedForwardMark(t *testing.T) {
	env := newSessionEnv(t, 2, sessionOpts(bridge.SessionOptions{}))
	a, b := env.replicas[0], env.replicas[1]
	s := dialSession(t, "http", a.url)
	for _, mark := range []string{"1", "forged", strings.Repeat("A", 43)} {
		req, _ := http.NewRequest(http.MethodGet, a.url+"/_bridge/session"+s.resumeQuery()+"&poll=1", nil)
		req.Header.Set("Grpc-Session-Forwarded", mark)
		req.Header.Set("Origin", "https://evil.example")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "not a replica's") {
			t.Errorf("mark %q from a peer address with another origin: HTTP %d %s, want 403", mark, resp.StatusCode, body)
		}
	}
	// A real forward, through b, still reaches the owner a.
	if code, body := sessionGet(t, b.url, s.resumeQuery()+"&poll=1"); code != http.StatusOK {
		t.Errorf("poll forwarded by a replica: HTTP %d %s, want 200", code, body)
	}
}

// TestSessionOwnerKilled: when the owner dies, the other replica answers
// 503 UNAVAILABLE for its sessions, so the client ends its calls with
// UNAVAILABLE.
func TestSessionOwnerKilled(t *testing.T) {
	env := newSessionEnv(t, 2, sessionOpts(bridge.SessionOptions{}))
	a, b := env.replicas[0], env.replicas[1]
	s := dialSession(t, "http", a.url, b.url)
	s.open(sHoldPath, "")
	env.heldCall(t)
	// Killed: connections dropped, nothing said to the client.
	a.srv.CloseClientConnections()
	a.srv.Close()
	s.cut()
	code, body := sessionGet(t, b.url, s.resumeQuery())
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code":14`) {
		t.Errorf("resume after the owner died: HTTP %d %s, want 503 UNAVAILABLE", code, body)
	}
	if got := b.metrics.get(b.metrics.fwds, bridge.ForwardOutcomeFailed); got == 0 {
		t.Error("no failed forward counted")
	}
}

// TestSessionDrain: on shutdown every call ends UNAVAILABLE, then the
// session's GOAWAY says so.
func TestSessionDrain(t *testing.T) {
	for _, carrier := range sessionCarriers {
		t.Run(carrier, func(t *testing.T) {
			env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{}))
			rep := env.replicas[0]
			s := dialSession(t, carrier, rep.url)
			c := s.open(sHoldPath, "")
			env.heldCall(t)
			done := make(chan struct{})
			go func() {
				defer close(done)
				ctx, cancel := context.WithTimeout(context.Background(), wsSafetyTimeout)
				defer cancel()
				if err := rep.h.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			}()
			st := c.final()
			wantCode(t, "held call", st, codes.Unavailable)
			select {
			case g := <-s.goaway:
				if !strings.Contains(string(g), `"code":14`) {
					t.Errorf("GOAWAY %s, want UNAVAILABLE", g)
				}
			case <-time.After(wsSafetyTimeout):
				t.Error("no GOAWAY")
			}
			<-done
		})
	}
}

// TestSessionProtocolViolation: a frame the protocol does not allow ends
// the session with a GOAWAY that names it.
func TestSessionProtocolViolation(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{}))
	s := dialSession(t, "websocket", env.replicas[0].url)
	c := s.open(sHoldPath, "")
	env.heldCall(t)
	if err := s.send(tFrame{typ: tHeaders, call: 1, payload: []byte(`{"headers":{}}`)}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "call of the broken session", c.final(), codes.Canceled)
	select {
	case g := <-s.goaway:
		if !strings.Contains(string(g), "HEADERS frame from the client") {
			t.Errorf("GOAWAY %s", g)
		}
	case <-time.After(wsSafetyTimeout):
		t.Error("no GOAWAY")
	}
}

// TestSessionOrigins: every session request passes the trust boundary's
// origin rules: another site's page can neither create a session nor use
// one, over either carrier; an allowed origin gets its CORS headers, and
// the preflight of its upstream POST passes.
func TestSessionOrigins(t *testing.T) {
	env := newSessionEnv(t, 1, func(addr string) []bridge.Option {
		return append(sessionOpts(bridge.SessionOptions{PollTimeout: 10 * time.Millisecond})(addr),
			bridge.WithAllowedOrigins("https://app.example"))
	})
	base := env.replicas[0].url
	s := dialSession(t, "http", base)
	do := func(method, query, origin string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+"/_bridge/session"+query, nil)
		req.Header.Set("Origin", origin)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, tc := range []struct{ name, method, query string }{
		{"create", http.MethodPost, ""},
		{"poll", http.MethodGet, s.resumeQuery() + "&poll=1"},
		{"upstream", http.MethodPost, "?sid=" + url.QueryEscape(s.token)},
	} {
		if resp := do(tc.method, tc.query, "https://evil.example", nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s from another site: HTTP %d, want 403", tc.name, resp.StatusCode)
		}
	}
	d := websocket.Dialer{Subprotocols: []string{sessionSubprotocol}, HandshakeTimeout: wsSafetyTimeout}
	_, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/_bridge/session", http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("WebSocket from another site: %v, want 403", err)
	}
	if resp := do(http.MethodGet, s.resumeQuery()+"&poll=1", "https://app.example", nil); resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Errorf("poll from an allowed origin: HTTP %d, ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	pre := do(http.MethodOptions, "?sid=x", "https://app.example", map[string]string{
		"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
	})
	if pre.StatusCode != http.StatusNoContent || !strings.Contains(strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers")), "content-type") {
		t.Errorf("preflight: HTTP %d, allow headers %q", pre.StatusCode, pre.Header.Get("Access-Control-Allow-Headers"))
	}
}

// TestSessionsOff: without WithSessions the session path is like any path
// that is no exposed method.
// TestSessionWildcardCarriesNoCredentials: a page that only "*" admits
// has neither cookie nor authorization forwarded on a session's calls,
// from the session's requests or from an OPEN's metadata, on either
// carrier; a page named on the list has both.
func TestSessionWildcardCarriesNoCredentials(t *testing.T) {
	env := newSessionEnv(t, 1, func(addr string) []bridge.Option {
		return append(sessionOpts(bridge.SessionOptions{})(addr),
			bridge.WithAllowedOrigins("*", "https://app.example"),
			bridge.WithRequestHeaders("cookie", "authorization", "x-request-id"))
	})
	for _, carrier := range sessionCarriers {
		for _, tc := range []struct {
			origin string
			keep   bool
		}{
			{"https://evil.example", false},
			{"https://app.example", true},
		} {
			t.Run(carrier+"/"+tc.origin, func(t *testing.T) {
				header := http.Header{"Origin": {tc.origin}, "Cookie": {"session=from-the-browser"}, "Authorization": {"Basic cached"}}
				s := dialSessionWith(t, carrier, header, env.replicas[0].url)
				for _, md := range []string{"", `{"metadata":{"cookie":["session=from-the-page"],"authorization":["Bearer t"],"x-request-id":["r1"]}}`} {
					c := s.open(sUnaryPath, md)
					c.sendMsg(newNote("hi"))
					got := newNote("")
					if !c.recv(got) {
						t.Fatalf("no answer (metadata %q)", md)
					}
					wantCode(t, "unary", c.final(), codes.OK)
					values := strings.Join(noteValues(got), ",")
					for _, key := range []string{"cookie=", "authorization="} {
						if has := strings.Contains(values, key); has != tc.keep {
							t.Errorf("metadata %q: backend saw %s = %v, want %v (values %s)", md, key, has, tc.keep, values)
						}
					}
					if md != "" && !strings.Contains(values, "x-request-id=r1") {
						t.Errorf("metadata %q: x-request-id dropped (values %s)", md, values)
					}
				}
			})
		}
	}
}

func TestSessionsOff(t *testing.T) {
	env := newWSEnv(t, nil)
	resp, err := http.Post("http"+strings.TrimPrefix(env.url, "ws")+"/_bridge/session", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"code":5`) {
		t.Errorf("HTTP %d %s, want 404 NOT_FOUND", resp.StatusCode, body)
	}
}

// TestSessionReattachReplaces: a new downstream takes over from the one
// before, on another carrier too; the old WebSocket closes with 4000. An
// acknowledgement of frames never sent is refused.
func TestSessionReattachReplaces(t *testing.T) {
	env := newSessionEnv(t, 1, sessionOpts(bridge.SessionOptions{PollTimeout: 10 * time.Millisecond}))
	base := env.replicas[0].url
	d := websocket.Dialer{Subprotocols: []string{sessionSubprotocol}, HandshakeTimeout: wsSafetyTimeout}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/_bridge/session", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, first, err := conn.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	frames, err := decFrames(first)
	if err != nil || frames[0].typ != tHello {
		t.Fatalf("first message: %v %v", frames, err)
	}
	sid := url.QueryEscape(decHello(frames[0].payload).token)
	if code, body := sessionGet(t, base, "?sid="+sid+"&ack=99"); code != http.StatusBadRequest || !strings.Contains(body, "acknowledgement of frame 99") {
		t.Errorf("ack beyond the last frame: HTTP %d %s, want 400", code, body)
	}
	if code, body := sessionGet(t, base, "?sid="+sid+"&ack=0"); code != http.StatusOK {
		t.Errorf("poll: HTTP %d %s", code, body)
	}
	_ = conn.SetReadDeadline(time.Now().Add(wsSafetyTimeout))
	_, _, err = conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4000 || ce.Text != "replaced" {
		t.Errorf("the replaced WebSocket ended with %v, want close 4000 replaced", err)
	}
	// The client is done with it.
	resp, err := http.Post(base+"/_bridge/session?sid="+sid, "application/octet-stream", bytes.NewReader(encFrame(nil, tFrame{typ: tGoaway})))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
