package bridge_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

const inspectMethod = "bridgetest.v1.InspectService/Inspect"

// sharedEnv is a bridge in front of a backend that counts its Inspect
// calls, with Inspect's SSE options replaced by sse.
type sharedEnv struct {
	url     string
	handler *bridge.Handler
	inspect *bridgetest.CountingInspectServer
}

func newSharedEnv(t *testing.T, sse bridge.SSEOptions, opts ...bridge.Option) *sharedEnv {
	t.Helper()
	inspect := bridgetest.NewCountingInspectServer()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		testv1.RegisterInspectServiceServer(s, inspect)
	})
	base := []bridge.Option{
		bridge.WithBackend(conn),
		bridge.WithExpose("demo.v1.*", "bridgetest.v1.*"),
		bridge.WithSSEOptions(inspectMethod, sse),
	}
	h, err := bridge.NewHandler(append(base, opts...)...)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &sharedEnv{url: srv.URL, handler: h, inspect: inspect}
}

// sharedCursor is Inspect's own SSE options, shared.
var sharedCursor = bridge.SSEOptions{CursorField: "cursor", ResumeField: "after", Shared: true}

// subscriber is one open event stream.
type subscriber struct {
	resp   *http.Response
	r      *bridgetest.SSEReader
	cancel context.CancelFunc
}

// open starts a GET of Inspect with the query and headers. The stream
// gives up after 30 s, so that a broken test fails rather than hangs.
func (e *sharedEnv) open(t *testing.T, query string, header http.Header) *subscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/"+inspectMethod+"?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", query, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		cancel()
		t.Fatalf("GET %s: status %d: %s", query, resp.StatusCode, b)
	}
	s := &subscriber{resp: resp, r: bridgetest.NewSSEReader(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	return s
}

// close leaves the stream.
func (s *subscriber) close() {
	s.cancel()
	_ = s.resp.Body.Close()
}

// next returns the next event that has a type.
func (s *subscriber) next(t *testing.T) bridgetest.Event {
	t.Helper()
	for {
		ev, err := s.r.Next()
		if err != nil {
			t.Fatalf("read event: %v", err)
		}
		if ev.Type != "" {
			return ev
		}
	}
}

// nextMessage returns the next message event, failing on any other
// event but headers.
func (s *subscriber) nextMessage(t *testing.T) bridgetest.Event {
	t.Helper()
	for {
		ev := s.next(t)
		switch ev.Type {
		case "message":
			return ev
		case "headers":
			continue
		default:
			t.Fatalf("event %+v, want a message", ev)
		}
	}
}

// rest reads the stream to its end.
func (s *subscriber) rest(t *testing.T) []bridgetest.Event {
	t.Helper()
	var out []bridgetest.Event
	for {
		ev, err := s.r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read events: %v", err)
		}
		out = append(out, ev)
	}
}

// waitEnded waits for the backend to report the end of a call.
func waitEnded(t *testing.T, inspect *bridgetest.CountingInspectServer) error {
	t.Helper()
	select {
	case err := <-inspect.Ended:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the backend call did not end")
		return nil
	}
}

func TestSharedStreamOneUpstreamCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		sse  bridge.SSEOptions
	}{
		{"cursor ids", sharedCursor},
		{"sequence ids", bridge.SSEOptions{Shared: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newSharedEnv(t, tc.sse)
			const query = "name=feed&count=1000000&interval_ms=5&response_headers[x-feed]=f"
			a := env.open(t, query, nil)
			if ev := a.next(t); ev.Type != "headers" {
				t.Fatalf("first event %+v, want headers", ev)
			}
			for range 3 {
				a.nextMessage(t)
			}
			// A late joiner gets the call's headers, then messages from
			// the next one on, with ids that continue.
			b := env.open(t, query, nil)
			if ev := b.next(t); ev.Type != "headers" || ev.Data != "{}" {
				t.Fatalf("late joiner's first event %+v, want the headers event", ev)
			}
			var fromB []bridgetest.Event
			for range 5 {
				fromB = append(fromB, b.nextMessage(t))
			}
			if n, _ := strconv.Atoi(fromB[0].ID); n < 4 {
				t.Fatalf("late joiner's first id %q, want the call's ids to continue after 3", fromB[0].ID)
			}
			// From the point both joined, both see the same events, byte
			// for byte.
			ev := a.nextMessage(t)
			for ev.ID != fromB[0].ID {
				ev = a.nextMessage(t)
			}
			for i, want := range fromB {
				if i > 0 {
					ev = a.nextMessage(t)
				}
				if ev.ID != want.ID || ev.Data != want.Data {
					t.Fatalf("event %d: first subscriber got %q %q, late joiner %q %q", i, ev.ID, ev.Data, want.ID, want.Data)
				}
			}
			if n := env.inspect.Calls(); n != 1 {
				t.Fatalf("the backend got %d calls, want 1", n)
			}
			// The shared call carries no per-request forwarding header.
			md := inspectResponse(t, fromB[0].Data).GetMetadata()
			if _, ok := md["x-forwarded-for"]; ok {
				t.Errorf("shared call metadata has x-forwarded-for: %v", md)
			}
		})
	}
}

func TestSharedStreamKeys(t *testing.T) {
	t.Parallel()
	const query = "name=feed&count=1000000&interval_ms=5"
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	for _, tc := range []struct {
		name      string
		sse       bridge.SSEOptions
		queryA    string
		queryB    string
		headerA   http.Header
		headerB   http.Header
		wantCalls int
	}{
		{"same request", sharedCursor, query, query, nil, nil, 1},
		{"same request, fields in another order", sharedCursor, query, "interval_ms=5&count=1000000&name=feed", nil, nil, 1},
		{"different request", sharedCursor, query, query + "&tags=x", nil, nil, 2},
		{"same credentials", sharedCursor, query, query, bearer("alice"), bearer("alice"), 1},
		{"different credentials", sharedCursor, query, query, bearer("alice"), bearer("bob"), 2},
		{"credentials and none", sharedCursor, query, query, bearer("alice"), nil, 2},
		{"per-request ids differ", sharedCursor, query, query,
			http.Header{"X-Request-Id": {"r1"}, "Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
			http.Header{"X-Request-Id": {"r2"}, "Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}, 1},
		{"not configured", bridge.SSEOptions{CursorField: "cursor", ResumeField: "after"}, query, query, nil, nil, 2},
		{"own deadline", sharedCursor, query, query, nil, http.Header{"Grpc-Timeout": {"1M"}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newSharedEnv(t, tc.sse)
			a := env.open(t, tc.queryA, tc.headerA)
			mdA := inspectResponse(t, a.nextMessage(t).Data).GetMetadata()
			b := env.open(t, tc.queryB, tc.headerB)
			mdB := inspectResponse(t, b.nextMessage(t).Data).GetMetadata()
			if n := env.inspect.Calls(); n != tc.wantCalls {
				t.Fatalf("the backend got %d calls, want %d", n, tc.wantCalls)
			}
			// Nobody sees another caller's credentials.
			if got, want := mdA["authorization"], tc.headerA.Get("Authorization"); got != want {
				t.Errorf("first caller's call has authorization %q, want %q", got, want)
			}
			if got, want := mdB["authorization"], tc.headerB.Get("Authorization"); got != want {
				t.Errorf("second caller's call has authorization %q, want %q", got, want)
			}
			if tc.wantCalls == 1 {
				for _, k := range []string{"x-request-id", "traceparent", "x-forwarded-for", "x-forwarded-host"} {
					if v, ok := mdB[k]; ok {
						t.Errorf("shared call carries %s = %q", k, v)
					}
				}
			}
		})
	}
}

// eventReader reads an event stream line by line, fast enough for big
// events (bridgetest.SSEReader reads byte by byte).
type eventReader struct{ r *bufio.Reader }

// next returns the next event's id, type and data; retry tells whether the
// block had a retry field.
func (e *eventReader) next() (id, typ, data string, retry bool, err error) {
	for {
		line, err := e.r.ReadSlice('\n')
		if err != nil {
			return "", "", "", false, err
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		if len(line) == 0 {
			if typ != "" {
				return id, typ, data, retry, nil
			}
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(": "))
		switch string(field) {
		case "id":
			id = string(value)
		case "event":
			typ = string(value)
		case "data":
			data = string(value)
		case "retry":
			retry = true
		}
	}
}

func TestSharedStreamDropsSlowSubscriber(t *testing.T) {
	t.Parallel()
	// A long write timeout: the slow client is dropped by the shared call
	// long before its own writes give up.
	env := newSharedEnv(t, bridge.SSEOptions{Shared: true}, bridge.WithWriteTimeout(time.Minute))
	// Messages of about 64 KiB fill the slow client's queue and the socket
	// buffers quickly.
	query := "name=feed&count=1000000&interval_ms=3&cursor_prefix=" + strings.Repeat("p", 32<<10)

	fast := env.open(t, query, nil)
	fr := &eventReader{r: bufio.NewReaderSize(fast.resp.Body, 1<<20)}
	firstID := ""
	for firstID == "" {
		id, typ, _, _, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		if typ == "message" {
			firstID = id
		}
	}

	// The slow client sends its request and reads nothing.
	conn, err := net.Dial("tcp", strings.TrimPrefix(env.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	httpReq, _ := http.NewRequest(http.MethodGet, env.url+"/"+inspectMethod+"?"+query, nil)
	if err := httpReq.Write(conn); err != nil {
		t.Fatal(err)
	}

	// The fast client gets every message, in order, with no gap, while
	// the slow one stalls.
	last, _ := strconv.Atoi(firstID)
	for range 400 {
		id, typ, _, _, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		if typ != "message" {
			t.Fatalf("fast subscriber got a %s event after id %d", typ, last)
		}
		if n, _ := strconv.Atoi(id); n != last+1 {
			t.Fatalf("fast subscriber got id %s after %d", id, last)
		}
		last++
	}
	if n := env.inspect.Calls(); n != 1 {
		t.Fatalf("the backend got %d calls, want 1", n)
	}

	// The slow client reads again: what was queued for it, then a retry
	// hint and RESOURCE_EXHAUSTED, and the end of the response.
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReaderSize(conn, 1<<20)
	resp, err := http.ReadResponse(br, httpReq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sr := &eventReader{r: bufio.NewReaderSize(resp.Body, 1<<20)}
	var lastType, lastData string
	var lastRetry bool
	got := 0
	for {
		_, typ, data, retry, err := sr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("slow client, after %d messages: %v", got, err)
		}
		if typ == "message" {
			got++
		}
		lastType, lastData, lastRetry = typ, data, retry
	}
	t.Logf("the slow client got %d messages before it was dropped", got)
	if lastType != "error" || !lastRetry {
		t.Fatalf("slow client's last event %q (retry hint %v), want an error with a retry hint", lastType, lastRetry)
	}
	if st := decodeStatus(t, lastData); st.Code != codes.ResourceExhausted {
		t.Fatalf("slow client's status %+v, want RESOURCE_EXHAUSTED", st)
	}

	// The fast client is still served.
	for range 3 {
		_, typ, _, _, err := fr.next()
		if err != nil || typ != "message" {
			t.Fatalf("fast subscriber after the drop: %q, %v", typ, err)
		}
	}
}

func TestSharedStreamLastSubscriberEndsCall(t *testing.T) {
	t.Parallel()
	env := newSharedEnv(t, sharedCursor)
	const query = "name=feed&count=1000000&interval_ms=5"
	a := env.open(t, query, nil)
	a.nextMessage(t)
	b := env.open(t, query, nil)
	b.nextMessage(t)

	// The subscriber that opened the call leaves: the call goes on.
	a.close()
	for range 5 {
		b.nextMessage(t)
	}
	select {
	case err := <-env.inspect.Ended:
		t.Fatalf("the call ended (%v) while a subscriber was left", err)
	default:
	}
	b.close()
	if err := waitEnded(t, env.inspect); !errors.Is(err, context.Canceled) {
		t.Fatalf("the call ended with %v, want context.Canceled", err)
	}
	if n := env.inspect.Calls(); n != 1 {
		t.Fatalf("the backend got %d calls, want 1", n)
	}
}

func TestSharedStreamResume(t *testing.T) {
	t.Parallel()

	t.Run("at the head", func(t *testing.T) {
		t.Parallel()
		env := newSharedEnv(t, sharedCursor)
		// One message, then a long pause: the call's last id is "1".
		const query = "name=feed&count=1000000&interval_ms=60000"
		a := env.open(t, query, nil)
		if id := a.nextMessage(t).ID; id != "1" {
			t.Fatalf("first id %q", id)
		}
		b := env.open(t, query, http.Header{"Last-Event-ID": {"1"}})
		if ev := b.next(t); ev.Type != "headers" {
			t.Fatalf("resumed subscriber's first event %+v, want headers", ev)
		}
		if n := env.inspect.Calls(); n != 1 {
			t.Fatalf("the backend got %d calls, want 1: a subscriber at the head shares", n)
		}
	})

	t.Run("behind", func(t *testing.T) {
		t.Parallel()
		env := newSharedEnv(t, sharedCursor)
		const query = "name=feed&count=1000000&interval_ms=5"
		a := env.open(t, query, nil)
		for id := ""; id != "5"; {
			id = a.nextMessage(t).ID
		}
		b := env.open(t, query, http.Header{"Last-Event-ID": {"2"}})
		ev := b.nextMessage(t)
		if ev.ID != "3" {
			t.Fatalf("resumed subscriber's first id %q, want 3", ev.ID)
		}
		if md := inspectResponse(t, ev.Data).GetMetadata(); md["last-event-id"] != "2" {
			t.Fatalf("resumed call metadata %v, want its own call with last-event-id 2", md)
		}
		if n := env.inspect.Calls(); n != 2 {
			t.Fatalf("the backend got %d calls, want 2: a subscriber behind has its own", n)
		}
	})

	t.Run("without a cursor field", func(t *testing.T) {
		t.Parallel()
		env := newSharedEnv(t, bridge.SSEOptions{Shared: true})
		const query = "name=feed&count=1000000&interval_ms=60000"
		a := env.open(t, query, nil)
		id := a.nextMessage(t).ID
		b := env.open(t, query, http.Header{"Last-Event-ID": {id}})
		b.nextMessage(t)
		if n := env.inspect.Calls(); n != 2 {
			t.Fatalf("the backend got %d calls, want 2: sequence ids name no message", n)
		}
	})
}

func TestSharedStreamEndReachesEverySubscriber(t *testing.T) {
	t.Parallel()
	env := newSharedEnv(t, sharedCursor, bridge.WithResponseMetadata("x-cost"))
	const query = "name=feed&count=20&interval_ms=20&response_trailers[x-cost]=3"
	a := env.open(t, query, nil)
	a.nextMessage(t)
	b := env.open(t, query, nil)
	b.nextMessage(t)
	for name, s := range map[string]*subscriber{"first": a, "second": b} {
		evs := s.rest(t)
		last := evs[len(evs)-1]
		if last.Type != "end" {
			t.Fatalf("%s subscriber's last event %+v, want end", name, last)
		}
		st := decodeStatus(t, last.Data)
		if st.Code != codes.OK || st.Trailers["x-cost"][0] != "3" {
			t.Fatalf("%s subscriber's end %+v", name, st)
		}
		if ev := lastOfType(t, evs, "message"); ev.ID != "20" {
			t.Fatalf("%s subscriber's last message id %q, want 20", name, ev.ID)
		}
	}
	// The next subscriber opens a new call, from the start.
	c := env.open(t, query, nil)
	if id := c.nextMessage(t).ID; id != "1" {
		t.Fatalf("new subscriber's first id %q, want 1", id)
	}
	if n := env.inspect.Calls(); n != 2 {
		t.Fatalf("the backend got %d calls, want 2", n)
	}
}

func TestSharedStreamErrorReachesEverySubscriber(t *testing.T) {
	t.Parallel()
	env := newSharedEnv(t, sharedCursor, bridge.WithRetryInterval(400*time.Millisecond))
	const query = "name=feed&count=5&interval_ms=50&fail_code=14"
	a := env.open(t, query, nil)
	a.nextMessage(t)
	b := env.open(t, query, nil)
	b.nextMessage(t)
	for name, s := range map[string]*subscriber{"first": a, "second": b} {
		evs := s.rest(t)
		last := evs[len(evs)-1]
		if last.Type != "error" || last.Retry != 400*time.Millisecond {
			t.Fatalf("%s subscriber's last event %+v, want an error with a retry hint", name, last)
		}
		if st := decodeStatus(t, last.Data); st.Code != codes.Unavailable {
			t.Fatalf("%s subscriber's status %+v, want UNAVAILABLE", name, st)
		}
	}
	if n := env.inspect.Calls(); n != 1 {
		t.Fatalf("the backend got %d calls, want 1", n)
	}
}

func TestSharedStreamDrain(t *testing.T) {
	t.Parallel()
	env := newSharedEnv(t, sharedCursor, bridge.WithRetryInterval(300*time.Millisecond))
	const query = "name=feed&count=1000000&interval_ms=5"
	a := env.open(t, query, nil)
	a.nextMessage(t)
	b := env.open(t, query, nil)
	b.nextMessage(t)
	done := make(chan error, 1)
	go func() { done <- env.handler.Shutdown(t.Context()) }()
	for name, s := range map[string]*subscriber{"first": a, "second": b} {
		evs := s.rest(t)
		last := evs[len(evs)-1]
		if last.Type != "" || last.Retry != 300*time.Millisecond {
			t.Fatalf("%s subscriber's last block %+v, want a lone retry hint", name, last)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := waitEnded(t, env.inspect); !errors.Is(err, context.Canceled) {
		t.Fatalf("the call ended with %v, want context.Canceled", err)
	}
}

func TestSharedOnlyForServerStreaming(t *testing.T) {
	t.Parallel()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {})
	for _, tc := range []struct {
		method string
		kind   string
	}{
		{"bridgetest.v1.InspectService/InspectOnce", "unary"},
		{"demo.v1.EchoService/Echo", "bidirectional streaming"},
	} {
		_, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*", "bridgetest.v1.*"),
			bridge.WithSSEOptions(tc.method, bridge.SSEOptions{Shared: true}))
		if err == nil || !strings.Contains(err.Error(), tc.method+": shared: only server-streaming methods can be shared, and this one is "+tc.kind) {
			t.Errorf("%s: NewHandler error %v, want a refusal of shared", tc.method, err)
		}
	}
}
