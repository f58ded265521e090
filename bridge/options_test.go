package bridge_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// The bridgetest.v1 descriptors must be in the global registry for the
// InspectService cases below.
var _ = testv1.File_bridgetest_v1_inspect_proto

func TestNewHandlerErrors(t *testing.T) {
	t.Parallel()
	// NewHandler never calls the backend: one connection to a server
	// without services serves every case.
	conn := bridgetest.NewBackend(t, func(*grpc.Server) {})
	backend := bridge.WithBackend(conn)
	ticker := bridge.WithExpose("demo.v1.TickerService")
	const watch = "demo.v1.TickerService/Watch"
	echoSchema, err := bridge.NewFiles(demoFileSet(t, "demo/v1/echo.proto"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts []bridge.Option
		want []string // in the error message
	}{
		{"no WithExpose", []bridge.Option{backend},
			[]string{"bridge: no method exposed: use WithExpose"}},
		{"empty WithExpose", []bridge.Option{backend, bridge.WithExpose()},
			[]string{"bridge: no method exposed: use WithExpose"}},
		{"pattern matches nothing", []bridge.Option{backend, bridge.WithExpose("demo.v1.NoSuchService")},
			[]string{`bridge: expose pattern "demo.v1.NoSuchService" matches no method of the schema`}},
		{"method pattern matches nothing", []bridge.Option{backend, bridge.WithExpose("demo.v1.TickerService/NoSuch")},
			[]string{`expose pattern "demo.v1.TickerService/NoSuch" matches no method of the schema`}},
		{"every unused pattern named", []bridge.Option{backend, bridge.WithExpose("demo.v1.*", "x.A", "y.B")},
			[]string{`expose pattern "x.A" matches no method`, `expose pattern "y.B" matches no method`}},
		{"malformed glob", []bridge.Option{backend, bridge.WithExpose("demo.v1.[")},
			[]string{`bridge: expose pattern "demo.v1.[": syntax error in pattern`}},
		{"two slashes", []bridge.Option{backend, bridge.WithExpose("demo.v1.TickerService/Watch/x")},
			[]string{`bridge: expose pattern "demo.v1.TickerService/Watch/x": want pkg.*, pkg.Service or pkg.Service/Method`}},
		{"leading slash", []bridge.Option{backend, bridge.WithExpose("/demo.v1.TickerService/Watch")},
			[]string{`expose pattern "/demo.v1.TickerService/Watch": want pkg.*, pkg.Service or pkg.Service/Method`}},
		{"no backend", []bridge.Option{ticker},
			[]string{"bridge: demo.v1.TickerService/Watch: no backend: use WithBackend or a WithServiceBackend pattern that matches demo.v1.TickerService"}},
		{"no backend for one service", []bridge.Option{bridge.WithServiceBackend("demo.v1.EchoService", conn), bridge.WithExpose("demo.v1.TickerService", "demo.v1.EchoService")},
			[]string{"demo.v1.TickerService/Watch: no backend"}},
		{"malformed backend pattern", []bridge.Option{bridge.WithServiceBackend("demo.v1.[", conn), backend, ticker},
			[]string{`bridge: backend pattern "demo.v1.[": syntax error in pattern`}},
		{"SSE options for no method", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions("demo.v1.TickerService/NoSuch", bridge.SSEOptions{})},
			[]string{`bridge: SSE options for "demo.v1.TickerService/NoSuch": no such exposed method`}},
		{"SSE options for a method not exposed", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions("demo.v1.EchoService/Stream", bridge.SSEOptions{})},
			[]string{`SSE options for "demo.v1.EchoService/Stream": no such exposed method`}},
		{"SSE options by path", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions("/"+watch, bridge.SSEOptions{})},
			[]string{`SSE options for "/demo.v1.TickerService/Watch": no such exposed method`}},
		{"cursor field unknown", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions(watch, bridge.SSEOptions{CursorField: "nope"})},
			[]string{`bridge: demo.v1.TickerService/Watch: cursor field: demo.v1.Tick has no field "nope"`}},
		{"resume field by JSON name", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions(watch, bridge.SSEOptions{ResumeField: "afterSeq"})},
			[]string{`resume field: demo.v1.WatchRequest has no field "afterSeq"`}},
		{"cursor field of message type", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions(watch, bridge.SSEOptions{CursorField: "time"})},
			[]string{"bridge: demo.v1.TickerService/Watch: cursor field: demo.v1.Tick.time is a message; want a string or integer field"}},
		{"cursor field of double type", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions(watch, bridge.SSEOptions{CursorField: "price"})},
			[]string{"cursor field: demo.v1.Tick.price is a double; want a string or integer field"}},
		{"cursor field of bytes type", []bridge.Option{backend, bridge.WithExpose("demo.v1.EchoService"),
			bridge.WithSSEOptions("demo.v1.EchoService/Stream", bridge.SSEOptions{CursorField: "payload"})},
			[]string{"cursor field: demo.v1.EchoResponse.payload is a bytes; want a string or integer field"}},
		{"resume field unknown", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions(watch, bridge.SSEOptions{ResumeField: "nope"})},
			[]string{`bridge: demo.v1.TickerService/Watch: resume field: demo.v1.WatchRequest has no field "nope"`}},
		{"resume field repeated", []bridge.Option{backend, bridge.WithExpose("bridgetest.v1.InspectService"),
			bridge.WithSSEOptions("bridgetest.v1.InspectService/Inspect", bridge.SSEOptions{ResumeField: "tags"})},
			[]string{"bridge: bridgetest.v1.InspectService/Inspect: resume field: bridgetest.v1.InspectRequest.tags is repeated; want a string or integer field"}},
		{"resume field map", []bridge.Option{backend, bridge.WithExpose("bridgetest.v1.InspectService"),
			bridge.WithSSEOptions("bridgetest.v1.InspectService/Inspect", bridge.SSEOptions{ResumeField: "labels"})},
			[]string{"resume field: bridgetest.v1.InspectRequest.labels is repeated"}},
		{"resume field bool", []bridge.Option{backend, bridge.WithExpose("bridgetest.v1.InspectService"),
			bridge.WithSSEOptions("bridgetest.v1.InspectService/Inspect", bridge.SSEOptions{ResumeField: "hold"})},
			[]string{"resume field: bridgetest.v1.InspectRequest.hold is a bool; want a string or integer field"}},
		{"resume field of the response", []bridge.Option{backend, ticker,
			bridge.WithSSEOptions(watch, bridge.SSEOptions{ResumeField: "seq"})},
			[]string{`resume field: demo.v1.WatchRequest has no field "seq"`}},
		{"request header connection", []bridge.Option{backend, ticker, bridge.WithRequestHeaders("connection")},
			[]string{`bridge: request headers: header allow-list entry "connection": hop-by-hop and transport headers cannot be forwarded`}},
		{"request header pseudo", []bridge.Option{backend, ticker, bridge.WithRequestHeaders("authorization", ":path")},
			[]string{`bridge: request headers: header allow-list entry ":path": pseudo-headers cannot be forwarded`}},
		{"response metadata grpc-status", []bridge.Option{backend, ticker, bridge.WithResponseMetadata("grpc-status")},
			[]string{`bridge: response metadata: header allow-list entry "grpc-status": grpc-* keys are reserved for the gRPC transport`}},
		{"negative heartbeat", []bridge.Option{backend, ticker, bridge.WithHeartbeatInterval(-time.Second)},
			[]string{"bridge: negative duration -1s"}},
		{"negative retry", []bridge.Option{backend, ticker, bridge.WithRetryInterval(-time.Millisecond)},
			[]string{"bridge: negative duration -1ms"}},
		{"negative write timeout", []bridge.Option{backend, ticker, bridge.WithWriteTimeout(-1)},
			[]string{"bridge: negative duration -1ns"}},
		{"negative ping", []bridge.Option{backend, ticker, bridge.WithPingInterval(-2 * time.Second)},
			[]string{"bridge: negative duration -2s"}},
		{"negative pong timeout", []bridge.Option{backend, ticker, bridge.WithPongTimeout(-3 * time.Second)},
			[]string{"bridge: negative duration -3s"}},
		{"negative maximum stream duration", []bridge.Option{backend, ticker, bridge.WithMaxStreamDuration(-time.Hour)},
			[]string{"bridge: negative duration -1h0m0s"}},
		{"negative stream limit", []bridge.Option{backend, ticker, bridge.WithMaxStreams(-1)},
			[]string{"bridge: negative stream limit"}},
		{"negative per-client stream limit", []bridge.Option{backend, ticker, bridge.WithMaxStreamsPerClient(-1)},
			[]string{"bridge: negative stream limit"}},
		{"config errors are all reported", []bridge.Option{backend,
			bridge.WithHeartbeatInterval(-time.Second), bridge.WithPongTimeout(-time.Minute), bridge.WithExpose("a/b/c")},
			[]string{"negative duration -1s", "negative duration -1m0s", `expose pattern "a/b/c": want`}},
		{"schema without the service", []bridge.Option{backend, ticker, bridge.WithFiles(echoSchema)},
			[]string{`expose pattern "demo.v1.TickerService" matches no method of the schema`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := bridge.NewHandler(tt.opts...)
			if err == nil {
				t.Fatalf("NewHandler = %v, want an error", h)
			}
			if h != nil {
				t.Errorf("NewHandler returned a handler with the error %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\nwant it to contain\n%s", err, w)
				}
			}
		})
	}
}

// Zero durations and byte limits mean the defaults; they are not errors.
func TestNewHandlerZeroMeansDefault(t *testing.T) {
	t.Parallel()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.TickerService"),
		bridge.WithHeartbeatInterval(0), bridge.WithRetryInterval(0), bridge.WithWriteTimeout(0),
		bridge.WithPingInterval(0), bridge.WithPongTimeout(0), bridge.WithReadMaxBytes(0))
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	evs := fetchEvents(t, srv.URL+"/demo.v1.TickerService/Watch?symbol=A&limit=1&interval_ms=1", nil)
	if len(evs) == 0 || evs[0].Retry != 2*time.Second {
		t.Fatalf("first block %+v, want the default retry of 2s", evs)
	}
}

func TestWithServiceBackendRouting(t *testing.T) {
	t.Parallel()
	// Each backend serves one service, so a call succeeds only on the
	// backend it was meant for; the other answers UNIMPLEMENTED.
	tickerOnly := bridgetest.NewBackend(t, func(s *grpc.Server) { demov1.RegisterTickerServiceServer(s, demo.TickerServer{}) })
	echoOnly := bridgetest.NewBackend(t, func(s *grpc.Server) { demov1.RegisterEchoServiceServer(s, demo.EchoServer{}) })
	const (
		watchPath  = "/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1"
		streamPath = "/demo.v1.EchoService/Stream?count=2"
	)
	tests := []struct {
		name      string
		opts      []bridge.Option
		wantWatch codes.Code
		wantEcho  codes.Code
	}{
		{"service backend, then default", []bridge.Option{
			bridge.WithServiceBackend("demo.v1.TickerService", tickerOnly), bridge.WithBackend(echoOnly)},
			codes.OK, codes.OK},
		{"default given first", []bridge.Option{
			bridge.WithBackend(echoOnly), bridge.WithServiceBackend("demo.v1.TickerService", tickerOnly)},
			codes.OK, codes.OK},
		{"glob patterns", []bridge.Option{
			bridge.WithServiceBackend("demo.v1.Ticker*", tickerOnly), bridge.WithServiceBackend("demo.v1.*", echoOnly)},
			codes.OK, codes.OK},
		{"first matching pattern wins", []bridge.Option{
			bridge.WithServiceBackend("demo.v1.*", echoOnly), bridge.WithServiceBackend("demo.v1.TickerService", tickerOnly)},
			codes.Unimplemented, codes.OK},
		{"last WithBackend wins", []bridge.Option{
			bridge.WithBackend(tickerOnly), bridge.WithBackend(echoOnly)},
			codes.Unimplemented, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := append([]bridge.Option{bridge.WithExpose("demo.v1.TickerService", "demo.v1.EchoService/Stream")}, tt.opts...)
			h, err := bridge.NewHandler(opts...)
			if err != nil {
				t.Fatalf("NewHandler: %v", err)
			}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			for _, c := range []struct {
				path string
				want codes.Code
			}{{watchPath, tt.wantWatch}, {streamPath, tt.wantEcho}} {
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+c.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if c.want == codes.OK {
					evs := events(t, resp)
					if n := len(messages(evs)); n != 2 {
						t.Errorf("GET %s: %d messages, want 2: %+v", c.path, n, evs)
					}
					if st := decodeStatus(t, lastOfType(t, evs, "end").Data); st.Code != codes.OK {
						t.Errorf("GET %s: end status %+v, want OK", c.path, st)
					}
				} else {
					// UNIMPLEMENTED is final: a JSON answer, no stream.
					if st := errorBody(t, resp, http.StatusNotImplemented); st.Code != c.want {
						t.Errorf("GET %s: status %+v, want %v", c.path, st, c.want)
					}
				}
				_ = resp.Body.Close()
			}
		})
	}
}

// WithSSEOptions replaces the (bridge.v1.method) options of the proto file
// as a whole. Each case resumes a Watch stream with Last-Event-ID: 5.
func TestWithSSEOptionsOverride(t *testing.T) {
	t.Parallel()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	const watch = "demo.v1.TickerService/Watch"
	tests := []struct {
		name     string
		override *bridge.SSEOptions // nil: none
		wantIDs  []string
		wantSeqs []string
	}{
		// The proto file's cursor_field seq and resume_field after_seq:
		// the backend resumes after tick 5, and the ids are the seqs.
		{"proto options", nil, []string{"6", "7"}, []string{"A#6", "A#7"}},
		// Neither: the backend starts over, and the ids are the stream's
		// sequence, which continues after the last id.
		{"none", &bridge.SSEOptions{}, []string{"6", "7"}, []string{"A#1", "A#2"}},
		// Cursor only: the backend starts over, and the ids are the seqs.
		{"cursor only", &bridge.SSEOptions{CursorField: "seq"}, []string{"1", "2"}, []string{"A#1", "A#2"}},
		// A string cursor.
		{"string cursor", &bridge.SSEOptions{CursorField: "symbol"}, []string{"A", "A"}, []string{"A#1", "A#2"}},
		// Resume only: the backend resumes, the ids continue the sequence.
		{"resume only", &bridge.SSEOptions{ResumeField: "after_seq"}, []string{"6", "7"}, []string{"A#6", "A#7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := []bridge.Option{bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*")}
			if tt.override != nil {
				opts = append(opts, bridge.WithSSEOptions(watch, *tt.override))
			}
			h, err := bridge.NewHandler(opts...)
			if err != nil {
				t.Fatalf("NewHandler: %v", err)
			}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			ids, seqs := tickIDs(t, fetchEvents(t, srv.URL+"/"+watch+"?symbol=A&limit=2&interval_ms=1",
				http.Header{"Last-Event-ID": {"5"}}))
			if !slices.Equal(ids, tt.wantIDs) || !slices.Equal(seqs, tt.wantSeqs) {
				t.Fatalf("ids %q, ticks %q; want %q, %q", ids, seqs, tt.wantIDs, tt.wantSeqs)
			}
			// The override applies to the annotated path too: it serves the
			// same method.
			ids, seqs = tickIDs(t, fetchEvents(t, srv.URL+"/v1/tickers/A:watch?limit=2&interval_ms=1",
				http.Header{"Last-Event-ID": {"5"}}))
			if !slices.Equal(ids, tt.wantIDs) || !slices.Equal(seqs, tt.wantSeqs) {
				t.Fatalf("annotated path: ids %q, ticks %q; want %q, %q", ids, seqs, tt.wantIDs, tt.wantSeqs)
			}
		})
	}
}
