package bridge_test

import (
	"bufio"
	"context"
	"encoding/json"
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
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// sseEnv is a bridge in front of an in-memory backend that serves the demo
// services and the inspect service.
type sseEnv struct {
	url     string
	handler *bridge.Handler
	inspect *bridgetest.InspectServer
	client  *http.Client
	h2      bool // served over HTTP/2 (h2c, or h2 over TLS)
}

// overHTTP2 and overTLS are the prefixes of the subtests of
// TestSSEOverHTTP2 and TestSSEOverTLS, whose environments serve HTTP/2
// (h2c) and TLS (HTTP/1.1 or h2) instead of cleartext HTTP/1.1.
const (
	overHTTP2  = "TestSSEOverHTTP2/"
	overTLSH1  = "TestSSEOverTLS/http1/"
	overTLSH2  = "TestSSEOverTLS/h2/"
	overTLSAny = "TestSSEOverTLS/"
)

func newSSEEnv(t *testing.T, opts ...bridge.Option) *sseEnv {
	t.Helper()
	inspect := bridgetest.NewInspectServer()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		testv1.RegisterInspectServiceServer(s, inspect)
	})
	base := []bridge.Option{bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*", "bridgetest.v1.*")}
	h, err := bridge.NewHandler(append(base, opts...)...)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	name := t.Name()
	env := &sseEnv{handler: h, inspect: inspect, client: http.DefaultClient,
		h2: strings.HasPrefix(name, overHTTP2) || strings.HasPrefix(name, overTLSH2)}
	srv := httptest.NewUnstartedServer(h)
	switch {
	case strings.HasPrefix(name, overTLSAny):
		// Over TLS an HTTP/1.1 stream takes over a *tls.Conn, which the
		// epoll close watcher cannot watch; h2 is negotiated by ALPN.
		srv.EnableHTTP2 = env.h2
		srv.StartTLS()
		env.client = srv.Client()
	case env.h2:
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		transport := &http.Transport{Protocols: new(http.Protocols)}
		transport.Protocols.SetUnencryptedHTTP2(true)
		t.Cleanup(transport.CloseIdleConnections)
		env.client = &http.Client{Transport: transport}
		srv.Start()
	default:
		srv.Start()
	}
	t.Cleanup(srv.Close)
	env.url = srv.URL
	return env
}

// TestSSEOverHTTP2 runs SSE tests again over HTTP/2. Over HTTP/1.1 a
// stream takes its connection over from net/http; over HTTP/2 it writes
// through the ResponseWriter, with its own ways of committing, flushing
// and noticing that the browser left.
func TestSSEOverHTTP2(t *testing.T) {
	for name, test := range sseSuite {
		t.Run(name, test)
	}
}

// TestSSEOverTLS runs the same SSE tests over TLS, with HTTP/1.1 (the
// takeover of a TLS connection, watched by a reading goroutine rather than
// epoll) and with h2.
func TestSSEOverTLS(t *testing.T) {
	for _, proto := range []string{"http1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			for name, test := range sseSuite {
				t.Run(name, test)
			}
		})
	}
}

// sseSuite are the SSE tests that TestSSEOverHTTP2 and TestSSEOverTLS run
// again over other connections than cleartext HTTP/1.1.
var sseSuite = map[string]func(*testing.T){
	"FramingAndIDs":             TestSSEFramingAndIDs,
	"ResumeWithLastEventID":     TestSSEResumeWithLastEventID,
	"ErrorsBeforeFirstByte":     TestSSEErrorsBeforeFirstByte,
	"ErrorMidStream":            TestSSEErrorMidStream,
	"HeartbeatCommitsSilent":    TestSSEHeartbeatCommitsSilentStream,
	"GRPCTimeoutBoundsTheCall":  TestSSEGRPCTimeoutBoundsTheCall,
	"ClientDisconnectCancels":   TestSSEClientDisconnectCancelsUpstream,
	"MetadataAllowList":         TestSSEMetadataAllowList,
	"DefaultIDsContinueAfterID": TestSSEDefaultIDsContinueAfterLastEventID,
}

// do sends a request and fails the test on transport errors.
func (e *sseEnv) do(t *testing.T, method, path string, header http.Header, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if e.h2 && resp.ProtoMajor != 2 {
		t.Fatalf("%s %s: served over %s, want HTTP/2", method, path, resp.Proto)
	}
	if strings.HasPrefix(t.Name(), overTLSAny) && resp.TLS == nil {
		t.Fatalf("%s %s: served without TLS", method, path)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// events reads a whole event stream, checking that it is one.
func events(t *testing.T, resp *http.Response) []bridgetest.Event {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want 200: %s", resp.StatusCode, b)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream; charset=utf-8" {
		t.Fatalf("Content-Type %q", got)
	}
	r := bridgetest.NewSSEReader(resp.Body)
	var out []bridgetest.Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read events: %v", err)
		}
		out = append(out, ev)
	}
}

// messages returns the message events of evs.
func messages(evs []bridgetest.Event) []bridgetest.Event {
	var out []bridgetest.Event
	for _, ev := range evs {
		if ev.Type == "message" {
			out = append(out, ev)
		}
	}
	return out
}

// lastOfType returns the last event of the type, failing when there is none.
func lastOfType(t *testing.T, evs []bridgetest.Event, typ string) bridgetest.Event {
	t.Helper()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return evs[i]
		}
	}
	t.Fatalf("no %q event in %+v", typ, evs)
	return bridgetest.Event{}
}

// statusBody is the JSON form of a google.rpc.Status that the bridge sends.
type statusBody struct {
	Code     codes.Code          `json:"code"`
	Message  string              `json:"message"`
	Details  []json.RawMessage   `json:"details"`
	Trailers map[string][]string `json:"trailers"`
}

func decodeStatus(t *testing.T, data string) statusBody {
	t.Helper()
	var st statusBody
	if err := json.Unmarshal([]byte(data), &st); err != nil {
		t.Fatalf("status JSON %q: %v", data, err)
	}
	if st.Details == nil {
		t.Fatalf("status JSON %q has no details array", data)
	}
	return st
}

// errorBody checks a non-200 JSON answer and returns its status.
func errorBody(t *testing.T, resp *http.Response, wantHTTP int) statusBody {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != wantHTTP {
		t.Fatalf("HTTP status %d, want %d; body %s", resp.StatusCode, wantHTTP, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	return decodeStatus(t, string(b))
}

func inspectResponse(t *testing.T, data string) *testv1.InspectResponse {
	t.Helper()
	var r testv1.InspectResponse
	if err := protojson.Unmarshal([]byte(data), &r); err != nil {
		t.Fatalf("InspectResponse %q: %v", data, err)
	}
	return &r
}

func TestSSEFramingAndIDs(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t, bridge.WithRetryInterval(1500*time.Millisecond))
	resp := env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=ACME&limit=3&interval_ms=1", nil, "")
	for k, want := range map[string]string{"Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	evs := events(t, resp)
	if evs[0].Retry != 1500*time.Millisecond || evs[0].Type != "" {
		t.Fatalf("first block %+v, want a lone retry: 1500", evs[0])
	}
	if evs[1].Type != "headers" || evs[1].Data != "{}" {
		t.Fatalf("second block %+v, want an empty headers event", evs[1])
	}
	msgs := messages(evs)
	if len(msgs) != 3 {
		t.Fatalf("got %d messages, want 3: %+v", len(msgs), evs)
	}
	for i, ev := range msgs {
		var tick demov1.Tick
		if err := protojson.Unmarshal([]byte(ev.Data), &tick); err != nil {
			t.Fatalf("tick %q: %v", ev.Data, err)
		}
		seq := uint64(i + 1)
		if ev.ID != strconv.FormatUint(seq, 10) || !ev.HasID || tick.GetSeq() != seq {
			t.Errorf("event %d: id %q, seq %d; want both %d", i, ev.ID, tick.GetSeq(), seq)
		}
		if tick.GetPrice() != demo.Price("ACME", seq) {
			t.Errorf("tick %d price %v, want %v", seq, tick.GetPrice(), demo.Price("ACME", seq))
		}
		if strings.ContainsAny(ev.Data, "\n\r") {
			t.Errorf("data %q has a line break", ev.Data)
		}
	}
	end := evs[len(evs)-1]
	if end.Type != "end" || end.HasID {
		t.Fatalf("last event %+v, want an end event without id", end)
	}
	if st := decodeStatus(t, end.Data); st.Code != codes.OK {
		t.Fatalf("end status %+v, want OK", st)
	}
}

func TestSSEResumeWithLastEventID(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)

	// A stream cut after 4 ticks and resumed from the last id the client
	// saw continues with no gap and no duplicate.
	first := messages(events(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=ACME&limit=4&interval_ms=1", nil, "")))
	last := first[len(first)-1].ID
	second := messages(events(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=ACME&limit=3&interval_ms=1",
		http.Header{"Last-Event-ID": {last}}, "")))
	var ids []string
	for _, ev := range append(first, second...) {
		ids = append(ids, ev.ID)
	}
	if got, want := strings.Join(ids, ","), "1,2,3,4,5,6,7"; got != want {
		t.Fatalf("ids %s, want %s", got, want)
	}
	var tick demov1.Tick
	if err := protojson.Unmarshal([]byte(second[0].Data), &tick); err != nil || tick.GetPrice() != demo.Price("ACME", 5) {
		t.Fatalf("resumed tick %q: %v; want the price of seq 5", second[0].Data, err)
	}

	// The backend sees the id as metadata and in the resume field, which
	// Last-Event-ID overrides even when the query sets it.
	evs := events(t, env.do(t, http.MethodGet, "/bridgetest.v1.InspectService/Inspect?after=1&count=2",
		http.Header{"Last-Event-ID": {"41"}}, ""))
	msgs := messages(evs)
	got := inspectResponse(t, msgs[0].Data)
	if got.GetRequest().GetAfter() != 41 || got.GetMetadata()["last-event-id"] != "41" {
		t.Fatalf("backend saw after=%d, last-event-id=%q; want 41 for both", got.GetRequest().GetAfter(), got.GetMetadata()["last-event-id"])
	}
	if msgs[0].ID != "42" || msgs[1].ID != "43" {
		t.Fatalf("cursor ids %q %q, want 42 43", msgs[0].ID, msgs[1].ID)
	}
}

func TestSSEDefaultIDsContinueAfterLastEventID(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	for _, tc := range []struct {
		lastID string
		want   string
	}{
		{"", "1,2,3"},
		{"7", "8,9,10"},
		{"not-a-number", "1,2,3"},
	} {
		h := http.Header{}
		if tc.lastID != "" {
			h.Set("Last-Event-ID", tc.lastID)
		}
		msgs := messages(events(t, env.do(t, http.MethodGet, "/demo.v1.EchoService/Stream?count=3&size=4", h, "")))
		var ids []string
		for _, ev := range msgs {
			ids = append(ids, ev.ID)
		}
		if got := strings.Join(ids, ","); got != tc.want {
			t.Errorf("Last-Event-ID %q: ids %s, want %s", tc.lastID, got, tc.want)
		}
	}
}

func TestSSERequestMapping(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	for _, tc := range []struct {
		name    string
		method  string
		path    string
		header  http.Header
		body    string
		want    string // InspectRequest in proto JSON
		wantIDs string
	}{
		{
			name:   "query with nested, repeated, enum, timestamp, int64 and map fields",
			method: http.MethodGet,
			path: "/bridgetest.v1.InspectService/Inspect?name=a&filter.min_price=3.5&filter.region=eu&tags=x&tags=y" +
				"&color=COLOR_GREEN&since=2026-01-02T03:04:05Z&big=-9007199254740993&labels[k]=v&unknown_param=ignored",
			want: `{"name":"a","filter":{"minPrice":3.5,"region":"eu"},"tags":["x","y"],"color":"COLOR_GREEN",` +
				`"since":"2026-01-02T03:04:05Z","big":"-9007199254740993","labels":{"k":"v"}}`,
		},
		{
			name:   "query by JSON names",
			method: http.MethodGet,
			path:   "/bridgetest.v1.InspectService/Inspect?filter.minPrice=1&cursorPrefix=c",
			want:   `{"filter":{"minPrice":1},"cursorPrefix":"c"}`,
		},
		{
			name:   "POST JSON body",
			method: http.MethodPost,
			path:   "/bridgetest.v1.InspectService/Inspect",
			header: http.Header{"Content-Type": {"application/json; charset=utf-8"}},
			body:   `{"name":"b","tags":["z"],"filter":{"region":"us"}}`,
			want:   `{"name":"b","tags":["z"],"filter":{"region":"us"}}`,
		},
		{
			name:   "annotated POST: path parameter, body field and query",
			method: http.MethodPost,
			path:   "/v1/inspect/widgets?tags=q",
			header: http.Header{"Content-Type": {"application/json"}},
			body:   `{"minPrice":2}`,
			want:   `{"name":"widgets","filter":{"minPrice":2},"tags":["q"]}`,
		},
		{
			name:   "annotated GET: nested path parameter",
			method: http.MethodGet,
			path:   "/v1/inspect/widgets/regions/apac?count=1",
			want:   `{"name":"widgets","filter":{"region":"apac"},"count":1}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			evs := events(t, env.do(t, tc.method, tc.path, tc.header, tc.body))
			got := inspectResponse(t, messages(evs)[0].Data).GetRequest()
			var want testv1.InspectRequest
			if err := protojson.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if !protoEqual(got, &want) {
				t.Fatalf("backend got %v\nwant %v", got, &want)
			}
		})
	}
}

func TestSSEAnnotatedTickerPath(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	msgs := messages(events(t, env.do(t, http.MethodGet, "/v1/tickers/XYZ:watch?limit=2&interval_ms=1", nil, "")))
	if len(msgs) != 2 || msgs[1].ID != "2" || !strings.Contains(msgs[0].Data, `"symbol":"XYZ"`) {
		t.Fatalf("messages %+v, want two XYZ ticks with ids 1 and 2", msgs)
	}
}

func TestSSEUnaryMethod(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	// A unary method answers plain JSON unless Accept asks for events.
	evs := events(t, env.do(t, http.MethodGet, "/bridgetest.v1.InspectService/InspectOnce?name=u", http.Header{"Accept": {"text/event-stream"}}, ""))
	msgs := messages(evs)
	if len(msgs) != 1 || msgs[0].ID != "1" || inspectResponse(t, msgs[0].Data).GetRequest().GetName() != "u" {
		t.Fatalf("events %+v, want one message with id 1", evs)
	}
	if st := decodeStatus(t, lastOfType(t, evs, "end").Data); st.Code != codes.OK {
		t.Fatalf("end %+v", st)
	}
}

func TestSSEErrorsBeforeFirstByte(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	for _, tc := range []struct {
		name     string
		method   string
		path     string
		header   http.Header
		body     string
		wantHTTP int
		wantCode codes.Code
		wantMsg  string // substring of the status message
	}{
		{"unknown method", http.MethodGet, "/demo.v1.TickerService/Nope", nil, "", 404, codes.NotFound, "no exposed method at /demo.v1.TickerService/Nope"},
		{"unexposed service", http.MethodGet, "/grpc.health.v1.Health/Watch", nil, "", 404, codes.NotFound, "no exposed method"},
		{"percent-encoded path", http.MethodGet, "/demo.v1.TickerService%2FWatch?symbol=A", nil, "", 404, codes.NotFound, "no exposed method"},
		{"unparsable query value", http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A&interval_ms=fast", nil, "", 400, codes.InvalidArgument, `parsing field "interval_ms"`},
		{"bad query escape", http.MethodGet, "/demo.v1.TickerService/Watch?symbol=%zz", nil, "", 400, codes.InvalidArgument, "query string"},
		{"backend rejects the request", http.MethodGet, "/demo.v1.TickerService/Watch", nil, "", 400, codes.InvalidArgument, "symbol is required"},
		{"backend fails before any message", http.MethodGet, "/bridgetest.v1.InspectService/InspectOnce?fail_code=7", nil, "", 403, codes.PermissionDenied, "failing with PermissionDenied"},
		{"Last-Event-ID not a cursor", http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A", http.Header{"Last-Event-ID": {"abc"}}, "", 400, codes.InvalidArgument, `Last-Event-ID "abc" is not a valid uint64 for after_seq: invalid syntax`},
		{"Last-Event-ID too long", http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A", http.Header{"Last-Event-ID": {strings.Repeat("9", 2000)}}, "", 400, codes.InvalidArgument, "Last-Event-ID is 2000 bytes long"},
		{"bidi method over SSE", http.MethodGet, "/demo.v1.EchoService/Echo", nil, "", 400, codes.InvalidArgument, "client-streaming method: open it as a WebSocket"},
		{"POST without JSON", http.MethodPost, "/demo.v1.TickerService/Watch", http.Header{"Content-Type": {"text/plain"}}, "symbol=A", 415, codes.InvalidArgument, `Content-Type "text/plain" is not supported`},
		{"POST unknown JSON field", http.MethodPost, "/demo.v1.TickerService/Watch", http.Header{"Content-Type": {"application/json"}}, `{"symbol":"A","nope":1}`, 400, codes.InvalidArgument, `unknown field "nope"`},
		{"POST malformed JSON", http.MethodPost, "/demo.v1.TickerService/Watch", http.Header{"Content-Type": {"application/json"}}, `{"symbol":`, 400, codes.InvalidArgument, "request body"},
		{"method not allowed", http.MethodDelete, "/demo.v1.TickerService/Watch", nil, "", 405, codes.Unimplemented, "HTTP method DELETE is not allowed"},
		{"bad grpc-timeout", http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A", http.Header{"Grpc-Timeout": {"soon"}}, "", 400, codes.InvalidArgument, "Grpc-Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := errorBody(t, env.do(t, tc.method, tc.path, tc.header, tc.body), tc.wantHTTP)
			if st.Code != tc.wantCode || !strings.Contains(st.Message, tc.wantMsg) {
				t.Fatalf("status %+v, want code %v and a message containing %q", st, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestSSEBodyLimit(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t, bridge.WithReadMaxBytes(64))
	body := `{"symbol":"` + strings.Repeat("A", 100) + `"}`
	st := errorBody(t, env.do(t, http.MethodPost, "/demo.v1.TickerService/Watch", http.Header{"Content-Type": {"application/json"}}, body), 413)
	if st.Code != codes.ResourceExhausted || !strings.Contains(st.Message, "limit of 64 bytes") {
		t.Fatalf("status %+v", st)
	}
}

func TestSSEErrorMidStream(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	evs := events(t, env.do(t, http.MethodGet, "/demo.v1.EchoService/Stream?count=5&size=1&fail_after=2&fail_code=9&fail_message=boom", nil, ""))
	if n := len(messages(evs)); n != 2 {
		t.Fatalf("%d messages before the error, want 2", n)
	}
	last := evs[len(evs)-1]
	if last.Type != "error" {
		t.Fatalf("last event %+v, want error", last)
	}
	if last.Retry != 0 {
		t.Fatalf("FAILED_PRECONDITION is final, yet the error has a retry hint")
	}
	if st := decodeStatus(t, last.Data); st.Code != codes.FailedPrecondition || st.Message != "boom" {
		t.Fatalf("error status %+v, want FAILED_PRECONDITION boom", st)
	}
}

func TestSSETransientErrors(t *testing.T) {
	t.Parallel()
	// Mid-stream: UNAVAILABLE gets a retry hint in the error event's block.
	env := newSSEEnv(t, bridge.WithRetryInterval(700*time.Millisecond))
	evs := events(t, env.do(t, http.MethodGet, "/demo.v1.EchoService/Stream?count=3&fail_after=1&fail_code=14&fail_message=restarting", nil, ""))
	last := evs[len(evs)-1]
	if last.Type != "error" || last.Retry != 700*time.Millisecond {
		t.Fatalf("last event %+v, want an error with retry 700ms", last)
	}
	if st := decodeStatus(t, last.Data); st.Code != codes.Unavailable {
		t.Fatalf("status %+v", st)
	}

	// Before the first byte, with the backend down: still 200, so that the
	// browser's EventSource keeps retrying until the backend is back.
	down, err := grpc.NewClient("passthrough:///127.0.0.1:1", grpcInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = down.Close() })
	h, err := bridge.NewHandler(bridge.WithBackend(down), bridge.WithExpose("demo.v1.TickerService"), bridge.WithRetryInterval(900*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/demo.v1.TickerService/Watch?symbol=A")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	evs = events(t, resp)
	if len(evs) != 2 || evs[0].Retry != 900*time.Millisecond || evs[1].Type != "error" || evs[1].Retry != 900*time.Millisecond {
		t.Fatalf("events %+v, want retry then a retry-hinted error", evs)
	}
	if st := decodeStatus(t, evs[1].Data); st.Code != codes.Unavailable {
		t.Fatalf("status %+v, want UNAVAILABLE", st)
	}
}

func TestSSEHeartbeatCommitsSilentStream(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t, bridge.WithHeartbeatInterval(20*time.Millisecond))
	resp := env.do(t, http.MethodGet, "/bridgetest.v1.InspectService/Inspect?hold=true", nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := bridgetest.NewSSEReader(resp.Body)
	pings := 0
	for pings < 3 {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range ev.Comments {
			if c == "ping" {
				pings++
			}
		}
		if ev.Type != "" {
			t.Fatalf("unexpected event %+v from a silent backend", ev)
		}
	}
}

func TestSSEMetadataAllowList(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t,
		bridge.WithRequestHeaders("authorization", "x-tenant-*", "cookie", "x-blob-bin"),
		bridge.WithResponseMetadata("x-served-by", "x-cost"),
	)
	h := http.Header{
		"Authorization":   {"Bearer t0k"},
		"X-Tenant-Id":     {"t1"},
		"Cookie":          {"session=s"},
		"X-Blob-Bin":      {"AQID"}, // base64 of 1,2,3
		"X-Request-Id":    {"not-on-this-list"},
		"Accept-Language": {"fr"},
	}
	path := "/bridgetest.v1.InspectService/Inspect?response_headers[x-served-by]=b1&response_headers[x-secret]=s" +
		"&response_trailers[x-cost]=3&response_trailers[x-private]=p"
	evs := events(t, env.do(t, http.MethodGet, path, h, ""))
	md := inspectResponse(t, messages(evs)[0].Data).GetMetadata()
	for k, want := range map[string]string{"authorization": "Bearer t0k", "x-tenant-id": "t1", "cookie": "session=s", "x-blob-bin": "\x01\x02\x03"} {
		if md[k] != want {
			t.Errorf("backend metadata %s = %q, want %q", k, md[k], want)
		}
	}
	for _, k := range []string{"x-request-id", "accept-language"} {
		if _, ok := md[k]; ok {
			t.Errorf("backend got %s, which is not on the allow-list", k)
		}
	}
	if !strings.HasPrefix(md["x-forwarded-for"], "127.0.0.1") || md["x-forwarded-host"] == "" {
		t.Errorf("x-forwarded-for %q, x-forwarded-host %q", md["x-forwarded-for"], md["x-forwarded-host"])
	}
	var headers map[string][]string
	if err := json.Unmarshal([]byte(lastOfType(t, evs, "headers").Data), &headers); err != nil {
		t.Fatal(err)
	}
	if len(headers) != 1 || headers["x-served-by"][0] != "b1" {
		t.Errorf("headers event %v, want only x-served-by", headers)
	}
	if tr := decodeStatus(t, lastOfType(t, evs, "end").Data).Trailers; len(tr) != 1 || tr["x-cost"][0] != "3" {
		t.Errorf("end trailers %v, want only x-cost", tr)
	}
}

func TestSSEDefaultHeaderAllowList(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	h := http.Header{
		"Authorization": {"Bearer a"},
		"Traceparent":   {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"X-Request-Id":  {"r1"},
		"Cookie":        {"session=s"},
		"Connection":    {"keep-alive"},
		"X-Other":       {"o"},
	}
	md := inspectResponse(t, messages(events(t, env.do(t, http.MethodGet, "/bridgetest.v1.InspectService/Inspect", h, "")))[0].Data).GetMetadata()
	for _, k := range []string{"authorization", "traceparent", "x-request-id"} {
		if md[k] != h.Get(k) {
			t.Errorf("metadata %s = %q, want %q", k, md[k], h.Get(k))
		}
	}
	for _, k := range []string{"cookie", "connection", "x-other"} {
		if _, ok := md[k]; ok {
			t.Errorf("metadata has %s, which the default allow-list excludes", k)
		}
	}
}

func TestSSEGRPCTimeoutBoundsTheCall(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	// The backend holds the call without a byte; the deadline from the
	// header ends it before the first heartbeat, with a final code.
	resp := env.do(t, http.MethodGet, "/bridgetest.v1.InspectService/Inspect?hold=true", http.Header{"Grpc-Timeout": {"50m"}}, "")
	if st := errorBody(t, resp, http.StatusGatewayTimeout); st.Code != codes.DeadlineExceeded {
		t.Fatalf("status %+v, want DEADLINE_EXCEEDED", st)
	}
}

func TestSSEClientDisconnectCancelsUpstream(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.url+"/bridgetest.v1.InspectService/Inspect?count=1000000&interval_ms=1", nil)
	resp, err := env.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bridgetest.NewSSEReader(resp.Body)
	for seen := 0; seen < 3; {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "message" {
			seen++
		}
	}
	cancel()
	_ = resp.Body.Close()
	select {
	case err := <-env.inspect.Ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("backend call ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend call was not cancelled after the client left")
	}
}

func protoEqual(a, b proto.Message) bool { return proto.Equal(a, b) }

func grpcInsecure() grpc.DialOption {
	return grpc.WithTransportCredentials(insecure.NewCredentials())
}

func TestSSESlowClientIsDroppedAfterWriteTimeout(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t, bridge.WithWriteTimeout(100*time.Millisecond))
	// Large responses fill the socket buffers quickly once the client stops
	// reading; then a write blocks, passes its deadline, and ends the call.
	prefix := strings.Repeat("p", 60<<10)
	conn, err := net.Dial("tcp", strings.TrimPrefix(env.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET /bridgetest.v1.InspectService/Inspect?count=1000000&cursor_prefix=" + prefix + " HTTP/1.1\r\nHost: bridge\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-env.inspect.Ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("backend call ended with %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a client that stopped reading was not dropped")
	}
}

func TestSSEQuietStreamSurvivesWriteTimeoutOverHTTP2(t *testing.T) {
	t.Parallel()
	// The backend sends one message, then nothing for three seconds; the
	// heartbeat (every 400 ms) must keep the stream open even though the
	// write timeout (150 ms) is shorter than the quiet time.
	inspect := bridgetest.NewInspectServer()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { testv1.RegisterInspectServiceServer(s, inspect) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("bridgetest.v1.*"),
		bridge.WithWriteTimeout(150*time.Millisecond), bridge.WithHeartbeatInterval(400*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(transport.CloseIdleConnections)

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/bridgetest.v1.InspectService/Inspect?count=2&interval_ms=3000", nil)
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("served over %s, want HTTP/2", resp.Proto)
	}
	r := bridgetest.NewSSEReader(resp.Body)
	pings := 0
	for pings < 3 {
		ev, err := r.Next()
		if err != nil {
			t.Fatalf("after %d pings: %v; the quiet stream was cut", pings, err)
		}
		for _, c := range ev.Comments {
			if c == "ping" {
				pings++
			}
		}
	}
}

func TestSSESlowRequestBodyTimesOut(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t, bridge.WithWriteTimeout(200*time.Millisecond))
	conn, err := net.Dial("tcp", strings.TrimPrefix(env.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A body announced as 100 bytes of which 10 ever arrive.
	req := "POST /demo.v1.TickerService/Watch HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"symbol\":"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer resp.Body.Close()
	st := errorBody(t, resp, http.StatusBadRequest)
	if st.Code != codes.InvalidArgument || !strings.Contains(st.Message, "read request body") {
		t.Fatalf("status %+v", st)
	}
}
