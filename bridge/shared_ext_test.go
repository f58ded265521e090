package bridge_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
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
	conn := newInspectBackend(t, inspect)
	env := newSharedBridge(t, conn, sse, opts...)
	env.inspect = inspect
	return env
}

// newInspectBackend is a backend of the demo services and of inspect.
func newInspectBackend(t *testing.T, inspect testv1.InspectServiceServer) *grpc.ClientConn {
	t.Helper()
	return bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		testv1.RegisterInspectServiceServer(s, inspect)
	})
}

// newSharedBridge is a bridge in front of conn (the env's inspect is
// left nil), with Inspect's SSE options replaced by sse.
func newSharedBridge(t *testing.T, conn grpc.ClientConnInterface, sse bridge.SSEOptions, opts ...bridge.Option) *sharedEnv {
	t.Helper()
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
	return &sharedEnv{url: srv.URL, handler: h}
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

	t.Run("behind, inside the replay window", func(t *testing.T) {
		t.Parallel()
		env := newSharedEnv(t, sharedCursor)
		const query = "name=feed&count=1000000&interval_ms=5"
		a := env.open(t, query, nil)
		for id := ""; id != "5"; {
			id = a.nextMessage(t).ID
		}
		b := env.open(t, query, http.Header{"Last-Event-ID": {"2"}})
		for want := 3; want <= 8; want++ {
			ev := b.nextMessage(t)
			if ev.ID != strconv.Itoa(want) {
				t.Fatalf("resumed subscriber got id %q, want %d: the events after its id, then the live ones", ev.ID, want)
			}
			if md := inspectResponse(t, ev.Data).GetMetadata(); md["last-event-id"] != "" {
				t.Fatalf("resumed subscriber's event from a call with last-event-id %q, want the shared call's", md["last-event-id"])
			}
		}
		if n := env.inspect.Calls(); n != 1 {
			t.Fatalf("the backend got %d calls, want 1: a subscriber inside the window shares", n)
		}
	})

	t.Run("no live call", func(t *testing.T) {
		t.Parallel()
		env := newSharedEnv(t, sharedCursor)
		const query = "name=feed&count=1000000&interval_ms=5"
		// The first subscriber opens a shared call resumed at its id; the
		// next one at the same id joins it from the start.
		a := env.open(t, query, http.Header{"Last-Event-ID": {"40"}})
		ev := a.nextMessage(t)
		if md := inspectResponse(t, ev.Data).GetMetadata(); ev.ID != "41" || md["last-event-id"] != "40" {
			t.Fatalf("first event %q from a call with last-event-id %q, want 41 from a call resumed at 40", ev.ID, md["last-event-id"])
		}
		b := env.open(t, query, http.Header{"Last-Event-ID": {"40"}})
		for want := 41; want <= 45; want++ {
			if ev := b.nextMessage(t); ev.ID != strconv.Itoa(want) {
				t.Fatalf("second subscriber got id %q, want %d", ev.ID, want)
			}
		}
		if n := env.inspect.Calls(); n != 1 {
			t.Fatalf("the backend got %d calls, want 1", n)
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

// follower is a subscriber that reconnects as EventSource does: when its
// stream is handed off (it ends after a lone retry hint) it opens it again
// with its Last-Event-ID. It checks that its message ids are contiguous:
// it misses nothing and sees nothing twice. A follower is used by one
// goroutine at a time and reports problems as errors, so that it can run
// on its own goroutine.
type follower struct {
	name     string
	target   string // the method's path and query
	last     uint64 // the id of the last message; 0 before the first
	handOffs int
	body     io.ReadCloser
	r        *bridgetest.SSEReader
}

// connect opens the stream at the bridge at base, resuming after the last
// message when there was one.
func (f *follower) connect(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+f.target, nil)
	if err != nil {
		return err
	}
	if f.last != 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(f.last, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return fmt.Errorf("%s: status %d: %s", f.name, resp.StatusCode, b)
	}
	f.body, f.r = resp.Body, bridgetest.NewSSEReader(resp.Body)
	return nil
}

// read reads n messages, or fewer when the stream is handed off first:
// then it reports true, and the follower must connect again.
func (f *follower) read(n int) (handedOff bool, err error) {
	retryLast := false // the last block was a lone retry hint
	for got := 0; got < n; {
		ev, err := f.r.Next()
		if errors.Is(err, io.EOF) {
			f.close()
			if !retryLast {
				return false, fmt.Errorf("%s: the stream ended after id %d without a hand-off", f.name, f.last)
			}
			f.handOffs++
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("%s: after id %d: %w", f.name, f.last, err)
		}
		retryLast = ev.Type == "" && ev.Retry > 0
		switch ev.Type {
		case "message":
			id, err := strconv.ParseUint(ev.ID, 10, 64)
			if err != nil || (f.last != 0 && id != f.last+1) {
				return false, fmt.Errorf("%s: id %q after %d, want %d", f.name, ev.ID, f.last, f.last+1)
			}
			f.last = id
			got++
		case "", "headers":
		default:
			return false, fmt.Errorf("%s: %s event %s after id %d", f.name, ev.Type, ev.Data, f.last)
		}
	}
	return false, nil
}

func (f *follower) close() {
	if f.body != nil {
		_ = f.body.Close()
	}
}

// openFollowers connects n followers of target (a method's path and
// query) to the bridge at base, one after the other.
func openFollowers(t *testing.T, ctx context.Context, base, target string, n int) []*follower {
	t.Helper()
	fs := make([]*follower, n)
	for i := range fs {
		fs[i] = &follower{name: fmt.Sprintf("subscriber %d", i), target: target}
		t.Cleanup(fs[i].close)
		if err := fs[i].connect(ctx, base); err != nil {
			t.Fatal(err)
		}
	}
	return fs
}

// reloadedSchema is the schema of the demo and bridgetest services as a
// reload (SIGHUP, schema_refresh) delivers it: new descriptors of the same
// files, after edit changes inspect.proto's.
func reloadedSchema(t *testing.T, edit func(*descriptorpb.FileDescriptorProto)) *protoregistry.Files {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	for _, p := range []string{"demo/v1/ticker.proto", "demo/v1/chat.proto", "demo/v1/echo.proto", "bridgetest/v1/inspect.proto"} {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(p)
		if err != nil {
			t.Fatal(err)
		}
		fdp := protodesc.ToFileDescriptorProto(fd)
		if p == "bridgetest/v1/inspect.proto" && edit != nil {
			edit(fdp)
		}
		set.File = append(set.File, fdp)
	}
	files, err := bridge.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestSharedStreamAcrossSchemaReload(t *testing.T) {
	t.Parallel()
	const subs = 8
	env := newSharedEnv(t, sharedCursor)
	const query = "/" + inspectMethod + "?name=feed&count=1000000&interval_ms=5"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fs := openFollowers(t, ctx, env.url, query, subs)
	for _, f := range fs {
		if _, err := f.read(2); err != nil {
			t.Fatal(err)
		}
	}

	// A reload of the same schema, then each subscriber reconnects in turn
	// with its Last-Event-ID (as after a drop or its maximum duration): it
	// rejoins the call that is live, with the events it missed.
	if err := env.handler.UpdateFiles(reloadedSchema(t, nil)); err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		f.close()
		if err := f.connect(ctx, env.url); err != nil {
			t.Fatal(err)
		}
		if _, err := f.read(3); err != nil {
			t.Fatal(err)
		}
	}
	late := openFollowers(t, ctx, env.url, query, 1)[0]
	if _, err := late.read(3); err != nil {
		t.Fatal(err)
	}
	if n := env.inspect.Calls(); n != 1 {
		t.Fatalf("the backend got %d calls across the reload, want 1", n)
	}

	// A reload that changes the method's response gets a new hub: a new
	// stream opens a call of its own, and the streams of the old call go on.
	extra := &descriptorpb.FieldDescriptorProto{
		Name: proto.String("extra"), Number: proto.Int32(99), JsonName: proto.String("extra"),
		Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
	}
	changed := reloadedSchema(t, func(fdp *descriptorpb.FileDescriptorProto) {
		for _, m := range fdp.MessageType {
			if m.GetName() == "InspectResponse" {
				m.Field = append(m.Field, extra)
			}
		}
	})
	if err := env.handler.UpdateFiles(changed); err != nil {
		t.Fatal(err)
	}
	fresh := openFollowers(t, ctx, env.url, query, 1)[0]
	if _, err := fresh.read(1); err != nil {
		t.Fatal(err)
	}
	if fresh.last != 1 {
		t.Fatalf("a stream after a changing reload starts at id %d, want 1 (a new call)", fresh.last)
	}
	for _, f := range fs {
		if _, err := f.read(2); err != nil {
			t.Fatal(err)
		}
	}
	if n := env.inspect.Calls(); n != 2 {
		t.Fatalf("the backend got %d calls, want 2: the old call, and one for the changed method", n)
	}
}

func TestSharedStreamAcrossMaxStreamDuration(t *testing.T) {
	t.Parallel()
	const subs = 8
	var opened atomic.Int64
	env := newSharedEnv(t, sharedCursor,
		bridge.WithMaxStreamDuration(2*time.Second),
		// Stream k ends (k mod 8)/8 of the spread (a tenth of 2 s) early:
		// the subscribers' hand-offs come one at a time, 25 ms apart, as
		// the random jitter spreads them in production.
		bridge.WithStreamJitter(func(spread time.Duration) time.Duration {
			return spread * time.Duration(opened.Add(1)%subs) / subs
		}))
	const query = "/" + inspectMethod + "?name=feed&count=1000000&interval_ms=5"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fs := openFollowers(t, ctx, env.url, query, subs)
	var g errgroup.Group
	for _, f := range fs {
		// Each subscriber reads until its stream reaches its maximum
		// duration, reconnects, and reads on a little.
		g.Go(func() error {
			for {
				handedOff, err := f.read(10)
				switch {
				case err != nil:
					return err
				case handedOff:
					if err := f.connect(ctx, env.url); err != nil {
						return err
					}
				case f.handOffs > 0:
					return nil
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := env.inspect.Calls(); n != 1 {
		t.Fatalf("the backend got %d calls across %d hand-offs, want 1", n, subs)
	}
}

func TestSharedStreamAcrossDrain(t *testing.T) {
	t.Parallel()
	const subs = 8
	inspect := bridgetest.NewCountingInspectServer()
	conn := newInspectBackend(t, inspect)
	a := newSharedBridge(t, conn, sharedCursor)
	b := newSharedBridge(t, conn, sharedCursor)
	const query = "/" + inspectMethod + "?name=feed&count=1000000&interval_ms=5"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fs := openFollowers(t, ctx, a.url, query, subs)
	for _, f := range fs {
		if _, err := f.read(3); err != nil {
			t.Fatal(err)
		}
	}

	// Bridge A drains: every subscriber is handed off after the same last
	// event, so all of them resume from the same id.
	done := make(chan error, 1)
	go func() { done <- a.handler.Shutdown(ctx) }()
	for _, f := range fs {
		if handedOff, err := f.read(1 << 30); err != nil || !handedOff {
			t.Fatalf("%s at the drain: handed off %v, %v", f.name, handedOff, err)
		}
		if f.last != fs[0].last {
			t.Fatalf("%s was handed off after id %d, %s after %d: want the same event", f.name, f.last, fs[0].name, fs[0].last)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	// They resume at bridge B, where the first one opens a shared call at
	// its id and the others join it.
	for _, f := range fs {
		if err := f.connect(ctx, b.url); err != nil {
			t.Fatal(err)
		}
		if _, err := f.read(3); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range fs {
		if _, err := f.read(3); err != nil {
			t.Fatal(err)
		}
	}
	if n := inspect.Calls(); n != 2 {
		t.Fatalf("the backend got %d calls, want 2: one per bridge", n)
	}
}

// burstServer is an InspectService whose Inspect sends count responses at
// once (seq and cursor after+1, after+2, ...), then one more each time the
// test sends on more, until the call is cancelled. It counts its calls.
type burstServer struct {
	testv1.UnimplementedInspectServiceServer
	calls atomic.Int64
	more  chan struct{}
}

func (s *burstServer) Inspect(req *testv1.InspectRequest, stream grpc.ServerStreamingServer[testv1.InspectResponse]) error {
	s.calls.Add(1)
	ctx := stream.Context()
	for n := uint64(1); ; n++ {
		if n > uint64(req.GetCount()) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.more:
			}
		}
		seq := req.GetAfter() + n
		if err := stream.Send(&testv1.InspectResponse{Request: req, Seq: seq, Cursor: strconv.FormatUint(seq, 10)}); err != nil {
			return err
		}
	}
}

func TestSharedStreamReplayWindow(t *testing.T) {
	t.Parallel()
	// A window of 4 events: once the call has sent 1..10, it holds 7..10.
	// The ids are an integer cursor (seq), so that the bridge can tell an
	// id ahead of the call.
	const query = "name=feed&count=10"
	for _, tc := range []struct {
		name   string
		lastID string
		joins  bool
		more   int      // events the shared call sends after the subscriber came
		want   []string // the first ids the resuming subscriber gets
	}{
		{"at the head", "10", true, 1, []string{"11"}},
		{"inside", "8", true, 1, []string{"9", "10", "11"}},
		{"the oldest event held", "7", true, 1, []string{"8", "9", "10", "11"}},
		{"just before the oldest", "6", true, 1, []string{"7", "8", "9", "10", "11"}},
		{"just outside", "5", false, 0, []string{"6", "7"}},
		{"just ahead", "11", true, 3, []string{"12", "13"}},
		{"ahead by the window's size", "14", true, 5, []string{"15"}},
		{"further ahead", "15", false, 0, []string{"16", "17"}},
		{"never produced", "1000", false, 0, []string{"1001", "1002"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := &burstServer{more: make(chan struct{})}
			env := newSharedBridge(t, newInspectBackend(t, srv),
				bridge.SSEOptions{CursorField: "seq", ResumeField: "after", Shared: true}, bridge.WithSharedReplay(4))
			a := env.open(t, query, nil)
			for want := 1; want <= 10; want++ {
				if id := a.nextMessage(t).ID; id != strconv.Itoa(want) {
					t.Fatalf("first subscriber got id %q, want %d", id, want)
				}
			}
			b := env.open(t, query, http.Header{"Last-Event-ID": {tc.lastID}})
			// The live events after the subscriber came: the window's
			// came first, and nothing comes twice.
			for range tc.more {
				select {
				case srv.more <- struct{}{}:
				case <-time.After(10 * time.Second):
					t.Fatal("the backend call is gone")
				}
			}
			var got []string
			for range tc.want {
				got = append(got, b.nextMessage(t).ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("resuming after %s, the subscriber got ids %v, want %v", tc.lastID, got, tc.want)
			}
			wantCalls := int64(2)
			if tc.joins {
				wantCalls = 1
				for want := 11; want <= 10+tc.more; want++ {
					if id := a.nextMessage(t).ID; id != strconv.Itoa(want) {
						t.Fatalf("first subscriber got id %q, want %d", id, want)
					}
				}
			}
			if n := srv.calls.Load(); n != wantCalls {
				t.Fatalf("the backend got %d calls, want %d", n, wantCalls)
			}
		})
	}
}

// countingTicker is the demo ticker, counting its Watch calls.
type countingTicker struct {
	demo.TickerServer
	calls atomic.Int64
}

func (c *countingTicker) Watch(req *demov1.WatchRequest, stream grpc.ServerStreamingServer[demov1.Tick]) error {
	c.calls.Add(1)
	return c.TickerServer.Watch(req, stream)
}

// TestSharedStreamRollout drains bridge A onto bridge B while B serves the
// same ticker to a subscriber of its own: the subscribers from A join B's
// live call, whether it runs behind theirs (they wait for it to reach
// their id) or ahead (they get what they missed from its window).
func TestSharedStreamRollout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		bIsAhead bool
	}{
		{"the live call runs behind", false},
		{"the live call runs ahead", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ticker := &countingTicker{}
			conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demov1.RegisterTickerServiceServer(s, ticker) })
			watch := bridge.SSEOptions{CursorField: "seq", ResumeField: "after_seq", Shared: true}
			newBridge := func() *sharedEnv {
				h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.TickerService"),
					bridge.WithSSEOptions("demo.v1.TickerService/Watch", watch))
				if err != nil {
					t.Fatal(err)
				}
				srv := httptest.NewServer(h)
				t.Cleanup(srv.Close)
				return &sharedEnv{url: srv.URL, handler: h}
			}
			a, b := newBridge(), newBridge()
			const target = "/demo.v1.TickerService/Watch?symbol=ACME&interval_ms=5"
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			// The call that starts first is ahead: the ticker counts each
			// call's ticks from 1.
			var onA []*follower
			var onB *follower
			if tc.bIsAhead {
				onB = openFollowers(t, ctx, b.url, target, 1)[0]
				if _, err := onB.read(10); err != nil {
					t.Fatal(err)
				}
				onA = openFollowers(t, ctx, a.url, target, 8)
			} else {
				onA = openFollowers(t, ctx, a.url, target, 8)
				if _, err := onA[0].read(4); err != nil {
					t.Fatal(err)
				}
				onB = openFollowers(t, ctx, b.url, target, 1)[0]
			}
			for _, f := range onA {
				if _, err := f.read(2); err != nil {
					t.Fatal(err)
				}
			}

			done := make(chan error, 1)
			go func() { done <- a.handler.Shutdown(ctx) }()
			for _, f := range onA {
				if handedOff, err := f.read(1 << 30); err != nil || !handedOff {
					t.Fatalf("%s at the drain: handed off %v, %v", f.name, handedOff, err)
				}
				if err := f.connect(ctx, b.url); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			for _, f := range append(onA, onB) {
				if _, err := f.read(5); err != nil {
					t.Fatal(err)
				}
			}
			if n := ticker.calls.Load(); n != 2 {
				t.Fatalf("the backend got %d calls, want 2: one per bridge", n)
			}
		})
	}
}
