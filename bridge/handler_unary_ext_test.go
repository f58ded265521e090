package bridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
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

// unaryEnv is a bridge in front of an in-memory backend that serves the
// demo services and bridgetest.v1.RestService, whose unary methods have
// google.api.http rules of every verb.
type unaryEnv struct {
	*sseEnv
	rest    *bridgetest.RestServer
	metrics *unaryMetrics
}

func newUnaryEnv(t *testing.T, opts ...bridge.Option) *unaryEnv {
	t.Helper()
	rest := bridgetest.NewRestServer()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		testv1.RegisterRestServiceServer(s, rest)
	})
	metrics := &unaryMetrics{}
	base := []bridge.Option{bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*", "bridgetest.v1.RestService"), bridge.WithMetrics(metrics)}
	h, err := bridge.NewHandler(append(base, opts...)...)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	env := &sseEnv{handler: h, inspect: rest.Inspect, client: http.DefaultClient, h2: strings.HasPrefix(t.Name(), unaryOverHTTP2)}
	srv := httptest.NewUnstartedServer(h)
	if env.h2 {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		transport := &http.Transport{Protocols: new(http.Protocols)}
		transport.Protocols.SetUnencryptedHTTP2(true)
		t.Cleanup(transport.CloseIdleConnections)
		env.client = &http.Client{Transport: transport}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	env.url = srv.URL
	return &unaryEnv{sseEnv: env, rest: rest, metrics: metrics}
}

// unaryOverHTTP2 is the prefix of the subtests of TestUnaryOverHTTP2,
// whose environments serve HTTP/2.
const unaryOverHTTP2 = "TestUnaryOverHTTP2/"

// TestUnaryOverHTTP2 runs unary tests again over HTTP/2 (h2c), where the
// request's context ends with the stream's reset rather than with the
// connection.
func TestUnaryOverHTTP2(t *testing.T) {
	for name, test := range map[string]func(*testing.T){
		"POSTAnswersJSON":          TestUnaryPOSTAnswersJSON,
		"HTTPRules":                TestUnaryHTTPRules,
		"Errors":                   TestUnaryErrors,
		"ResponseMetadata":         TestUnaryResponseMetadata,
		"ClientDisconnectCancels":  TestUnaryClientDisconnectCancelsUpstream,
		"GETRefusedWithSideEffect": TestUnaryGETRefusedWithSideEffects,
	} {
		t.Run(name, test)
	}
}

// unaryMetrics records the calls that the bridge reports as they end.
type unaryMetrics struct {
	mu    sync.Mutex
	ended []unaryCallEnd
}

type unaryCallEnd struct {
	method, transport string
	code              codes.Code
	received, sent    int
}

func (m *unaryMetrics) StreamStarted(method, transport string, _ bool) bridge.StreamObserver {
	return &unaryObserver{m: m, end: unaryCallEnd{method: method, transport: transport}}
}

// nth waits for the nth call (from 1) to end and returns it. The bridge
// reports the end after the answer is written, so the client may have it
// first.
func (m *unaryMetrics) nth(t *testing.T, n int) unaryCallEnd {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		m.mu.Lock()
		if len(m.ended) >= n {
			defer m.mu.Unlock()
			return m.ended[n-1]
		}
		m.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("call %d did not end", n)
		}
	}
}

type unaryObserver struct {
	m   *unaryMetrics
	end unaryCallEnd
}

func (o *unaryObserver) MessageSent(int)     { o.end.sent++ }
func (o *unaryObserver) MessageReceived(int) { o.end.received++ }
func (o *unaryObserver) StreamEnded(code codes.Code, _ int, _ bool) {
	o.end.code = code
	o.m.mu.Lock()
	o.m.ended = append(o.m.ended, o.end)
	o.m.mu.Unlock()
}

var jsonHeader = http.Header{"Content-Type": {"application/json"}}

// jsonBody checks a 200 plain JSON answer and returns its body.
func jsonBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d, want 200: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(b)) {
		t.Fatalf("Content-Length %q for a body of %d bytes", cl, len(b))
	}
	return b
}

// unaryResponse decodes a 200 answer of a RestService method.
func unaryResponse(t *testing.T, resp *http.Response) *testv1.InspectResponse {
	t.Helper()
	return inspectResponse(t, string(jsonBody(t, resp)))
}

func TestUnaryPOSTAnswersJSON(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t)
	resp := env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{"name":"a","tags":["x","y"],"big":"9007199254740993"}`)
	got := unaryResponse(t, resp).GetRequest()
	want := &testv1.InspectRequest{Name: "a", Tags: []string{"x", "y"}, Big: 9007199254740993}
	if !proto.Equal(got, want) {
		t.Fatalf("backend got %v, want %v", got, want)
	}
	if v := resp.Header.Values("Vary"); !strings.Contains(strings.Join(v, ","), "Accept") {
		t.Errorf("Vary %q, want Accept: the URL answers SSE too", v)
	}
	if end := env.metrics.nth(t, 1); end != (unaryCallEnd{method: "bridgetest.v1.RestService/Touch", transport: bridge.TransportUnary, code: codes.OK, received: 1, sent: 1}) {
		t.Errorf("metrics %+v", end)
	}
	// The answer is protojson's, which writes 64-bit integers as strings.
	resp = env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{"big":"-5"}`)
	if b := jsonBody(t, resp); !strings.Contains(string(b), `"big":"-5"`) {
		t.Errorf("answer %s, want big as a string", b)
	}
}

func TestUnaryGETWhereSafe(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t)
	for _, tc := range []struct{ name, path string }{
		{"NO_SIDE_EFFECTS", "/bridgetest.v1.RestService/Peek?name=p&tags=a&tags=b"},
		{"get rule, at the gRPC path", "/bridgetest.v1.RestService/Get?name=p&tags=a&tags=b"},
		{"get rule, at its path", "/v1/items/p?tags=a&tags=b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := unaryResponse(t, env.do(t, http.MethodGet, tc.path, nil, "")).GetRequest()
			if want := (&testv1.InspectRequest{Name: "p", Tags: []string{"a", "b"}}); !proto.Equal(got, want) {
				t.Fatalf("backend got %v, want %v", got, want)
			}
		})
	}
	t.Run("demo Quote", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/demo.v1.TickerService/Quote?symbol=ACME", "/v1/tickers/ACME"} {
			var tick demov1.Tick
			if err := protojson.Unmarshal(jsonBody(t, env.do(t, http.MethodGet, path, nil, "")), &tick); err != nil || tick.GetSymbol() != "ACME" || tick.GetSeq() == 0 {
				t.Fatalf("GET %s: %v %v, want an ACME tick", path, &tick, err)
			}
		}
	})
}

func TestUnaryGETRefusedWithSideEffects(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t, bridge.WithAllowedOrigins("https://app.example"))
	// In a group, so that the parallel subtests end before the count of
	// backend calls is read.
	t.Run("GET", func(t *testing.T) {
		for _, tc := range []struct {
			name, path string
			header     http.Header
		}{
			{"plain unary", "/bridgetest.v1.RestService/Touch?name=x", nil},
			{"plain unary asked for events", "/bridgetest.v1.RestService/Touch?name=x", http.Header{"Accept": {"text/event-stream"}}},
			{"unary with a post rule only", "/demo.v1.ChatService/Post?room=r&text=hi", nil},
			{"allowed origin", "/bridgetest.v1.RestService/Touch?name=x", http.Header{"Origin": {"https://app.example"}}},
			{"no Origin, same-origin Fetch Metadata", "/bridgetest.v1.RestService/Touch?name=x", http.Header{"Sec-Fetch-Site": {"same-origin"}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				resp := env.do(t, http.MethodGet, tc.path, tc.header, "")
				st := errorBody(t, resp, http.StatusMethodNotAllowed)
				if resp.Header.Get("Allow") != "POST" {
					t.Errorf("Allow %q, want POST", resp.Header.Get("Allow"))
				}
				name := strings.TrimPrefix(tc.path[:strings.IndexByte(tc.path, '?')], "/")
				if st.Code != codes.Unimplemented || !strings.HasPrefix(st.Message, name+" may have side effects") || !strings.Contains(st.Message, "POST") {
					t.Fatalf("status %+v, want one that names %s and says to POST", st, name)
				}
			})
		}
	})
	if n := env.rest.Calls(); n != 0 {
		t.Fatalf("the backend saw %d calls, want none", n)
	}
	// Other HTTP methods are refused with the same Allow, and a preflight
	// offers POST only.
	resp := env.do(t, http.MethodPut, "/bridgetest.v1.RestService/Touch", nil, "")
	if errorBody(t, resp, http.StatusMethodNotAllowed); resp.Header.Get("Allow") != "POST" {
		t.Errorf("PUT: Allow %q, want POST", resp.Header.Get("Allow"))
	}
	resp = env.do(t, http.MethodOptions, "/bridgetest.v1.RestService/Touch", http.Header{
		"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"POST"},
	}, "")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Methods") != "POST" || resp.Header.Get("Allow") != "POST, OPTIONS" {
		t.Errorf("preflight: HTTP %d, Allow-Methods %q, Allow %q; want 204, POST, POST, OPTIONS",
			resp.StatusCode, resp.Header.Get("Access-Control-Allow-Methods"), resp.Header.Get("Allow"))
	}
	resp = env.do(t, http.MethodOptions, "/bridgetest.v1.RestService/Peek", http.Header{
		"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"GET"},
	}, "")
	if resp.Header.Get("Access-Control-Allow-Methods") != "GET, POST" {
		t.Errorf("preflight of a GET-safe method: Allow-Methods %q, want GET, POST", resp.Header.Get("Access-Control-Allow-Methods"))
	}
}

func TestUnaryAcceptChoosesTheAnswer(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t)
	for _, tc := range []struct {
		accept string
		sse    bool
	}{
		{"", false},
		{"*/*", false},
		{"application/json", false},
		{"text/*", false},
		{"text/event-stream", true},
		{"application/json, Text/Event-Stream;q=0.5", true},
		{"text/event-stream;q=0", false},
	} {
		t.Run(tc.accept, func(t *testing.T) {
			t.Parallel()
			for _, req := range []struct{ method, path, body string }{
				{http.MethodPost, "/bridgetest.v1.RestService/Touch", `{"name":"a"}`},
				{http.MethodGet, "/bridgetest.v1.RestService/Peek?name=a", ""},
				{http.MethodPost, "/v1/items", `{"name":"a"}`},
			} {
				header := http.Header{"Content-Type": {"application/json"}}
				if tc.accept != "" {
					header.Set("Accept", tc.accept)
				}
				resp := env.do(t, req.method, req.path, header, req.body)
				if !tc.sse {
					if got := unaryResponse(t, resp).GetRequest().GetName(); got != "a" {
						t.Fatalf("%s %s: name %q", req.method, req.path, got)
					}
					continue
				}
				evs := events(t, resp)
				msgs := messages(evs)
				if len(msgs) != 1 || inspectResponse(t, msgs[0].Data).GetRequest().GetName() != "a" || decodeStatus(t, lastOfType(t, evs, "end").Data).Code != codes.OK {
					t.Fatalf("%s %s: events %+v, want one message and the end", req.method, req.path, evs)
				}
			}
		})
	}
	// A server-streaming method is always SSE.
	if msgs := messages(events(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A&limit=1", nil, ""))); len(msgs) != 1 {
		t.Fatalf("Watch: %+v", msgs)
	}
}

func TestUnaryHTTPRules(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t)
	for _, tc := range []struct {
		name, method, path, body string
		want                     *testv1.InspectRequest // what the backend got
	}{
		{"get: path and query", http.MethodGet, "/v1/items/n1?tags=a&tags=b&color=COLOR_RED&filter.region=eu",
			"", &testv1.InspectRequest{Name: "n1", Tags: []string{"a", "b"}, Color: testv1.Color_COLOR_RED, Filter: &testv1.Filter{Region: "eu"}}},
		{"post: body * and no query", http.MethodPost, "/v1/items?count=7",
			`{"name":"n2","color":"COLOR_GREEN"}`, &testv1.InspectRequest{Name: "n2", Color: testv1.Color_COLOR_GREEN}},
		{"put: body field, path and query", http.MethodPut, "/v1/items/n3?color=2&count=4",
			`{"minPrice":2.5,"region":"us"}`, &testv1.InspectRequest{Name: "n3", Color: testv1.Color_COLOR_GREEN, Count: 4, Filter: &testv1.Filter{MinPrice: 2.5, Region: "us"}}},
		{"delete: no body", http.MethodDelete, "/v1/items/n5?count=2", "", &testv1.InspectRequest{Name: "n5", Count: 2}},
		{"post: an empty body is the empty message, as in grpc-gateway", http.MethodPost, "/v1/items", "", &testv1.InspectRequest{}},
		{"put: an empty body leaves the body field unset", http.MethodPut, "/v1/items/n7", "", &testv1.InspectRequest{Name: "n7"}},
		{"custom verb", "PURGE", "/v1/items/n6:purge?tags=z", "", &testv1.InspectRequest{Name: "n6", Tags: []string{"z"}}},
		{"escaped path parameter", http.MethodDelete, "/v1/items/a%20b", "", &testv1.InspectRequest{Name: "a b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			header := http.Header{}
			if tc.body != "" || tc.method == http.MethodPost || tc.method == http.MethodPut { // the rules with a body
				header = jsonHeader
			}
			if got := unaryResponse(t, env.do(t, tc.method, tc.path, header, tc.body)).GetRequest(); !proto.Equal(got, tc.want) {
				t.Fatalf("backend got %v, want %v", got, tc.want)
			}
		})
	}

	// response_body: only that field of the response is the answer.
	for _, tc := range []struct {
		name, method, path, body string
		check                    func(t *testing.T, body []byte)
	}{
		{"message field, with body and path", http.MethodPatch, "/v1/items/n4/filters/eu", `{"count":3,"filter":{"minPrice":1}}`, func(t *testing.T, body []byte) {
			var req testv1.InspectRequest
			if err := protojson.Unmarshal(body, &req); err != nil {
				t.Fatalf("answer %s: %v", body, err)
			}
			// grpc-gateway sets path parameters after the body.
			if want := (&testv1.InspectRequest{Name: "n4", Count: 3, Filter: &testv1.Filter{MinPrice: 1, Region: "eu"}}); !proto.Equal(&req, want) {
				t.Fatalf("answer %v, want the request %v", &req, want)
			}
		}},
		{"message field", http.MethodGet, "/v1/items/n9/request?count=2", "", func(t *testing.T, body []byte) {
			var req testv1.InspectRequest
			if err := protojson.Unmarshal(body, &req); err != nil || !proto.Equal(&req, &testv1.InspectRequest{Name: "n9", Count: 2}) {
				t.Fatalf("answer %s (%v), want the request", body, err)
			}
		}},
		{"map field", http.MethodGet, "/v1/items/n7/metadata", "", func(t *testing.T, body []byte) {
			var md map[string]string
			if err := json.Unmarshal(body, &md); err != nil || !strings.HasPrefix(md["x-forwarded-for"], "127.0.0.1") {
				t.Fatalf("answer %s (%v), want the metadata map", body, err)
			}
		}},
		{"scalar field", http.MethodGet, "/v1/items/n8/seq", "", func(t *testing.T, body []byte) {
			if string(body) != `"1"` {
				t.Fatalf("answer %s, want the uint64 seq in proto3 JSON", body)
			}
		}},
		{"repeated field of a message in the response", http.MethodGet, "/v1/items/n8/tags?tags=a&tags=b", "", func(t *testing.T, body []byte) {
			if string(body) != `["a","b"]` {
				t.Fatalf("answer %s, want the tags", body)
			}
		}},
		{"unset repeated field", http.MethodGet, "/v1/items/n8/tags", "", func(t *testing.T, body []byte) {
			if string(body) != `[]` {
				t.Fatalf("answer %s, want an empty array", body)
			}
		}},
		{"unset scalar field", http.MethodGet, "/v1/items/n8/count", "", func(t *testing.T, body []byte) {
			if string(body) != `0` {
				t.Fatalf("answer %s, want the default 0", body)
			}
		}},
	} {
		t.Run("response_body "+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.check(t, jsonBody(t, env.do(t, tc.method, tc.path, jsonHeader, tc.body)))
		})
	}

	t.Run("demo Post", func(t *testing.T) {
		t.Parallel()
		var msg demov1.ChatMessage
		if err := protojson.Unmarshal(jsonBody(t, env.do(t, http.MethodPost, "/v1/rooms/r1/messages", jsonHeader, `{"user":"u","text":"hi"}`)), &msg); err != nil {
			t.Fatal(err)
		}
		if msg.GetRoom() != "r1" || msg.GetText() != "hi" || msg.GetTime() == nil {
			t.Fatalf("answer %v, want the message in r1 with its time", &msg)
		}
	})

	t.Run("preflight of an annotated path", func(t *testing.T) {
		t.Parallel()
		env := newUnaryEnv(t, bridge.WithAllowedOrigins("https://app.example"))
		resp := env.do(t, http.MethodOptions, "/v1/items/n1", http.Header{
			"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"DELETE"},
		}, "")
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
			t.Fatalf("HTTP %d, Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		if got := resp.Header.Get("Access-Control-Allow-Methods"); got != "GET, PUT, DELETE" {
			t.Errorf("Allow-Methods %q, want GET, PUT, DELETE", got)
		}
		resp = env.do(t, http.MethodOptions, "/v1/items/n1:purge", http.Header{
			"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"PURGE"},
		}, "")
		if got := resp.Header.Get("Access-Control-Allow-Methods"); got != "PURGE" {
			t.Errorf("custom verb: Allow-Methods %q, want PURGE", got)
		}
		resp = env.do(t, http.MethodOptions, "/v1/items/n1", http.Header{
			"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"DELETE"},
		}, "")
		if st := errorBody(t, resp, http.StatusForbidden); st.Code != codes.PermissionDenied {
			t.Errorf("preflight of another origin: %+v", st)
		}
	})
}

func TestUnaryErrors(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t, bridge.WithReadMaxBytes(256))
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		body               string
		wantHTTP           int
		wantCode           codes.Code
		wantMsg            string
	}{
		{"backend NOT_FOUND", http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{"failCode":5}`, 404, codes.NotFound, "failing with NotFound"},
		{"backend UNAVAILABLE is a plain 503", http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{"failCode":14}`, 503, codes.Unavailable, "failing with Unavailable"},
		{"backend PERMISSION_DENIED at an annotated path", http.MethodDelete, "/v1/items/x?failCode=7", nil, "", 403, codes.PermissionDenied, "failing with PermissionDenied"},
		{"demo Post validation", http.MethodPost, "/v1/rooms/r/messages", jsonHeader, `{"user":"u"}`, 400, codes.InvalidArgument, "text is required"},
		{"malformed JSON", http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{"name":`, 400, codes.InvalidArgument, "request body"},
		{"unknown field", http.MethodPost, "/v1/items", jsonHeader, `{"nope":1}`, 400, codes.InvalidArgument, `unknown field "nope"`},
		{"bad query value", http.MethodGet, "/v1/items/x?count=many", nil, "", 400, codes.InvalidArgument, `parsing field "count"`},
		{"body too large", http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{"name":"` + strings.Repeat("a", 300) + `"}`, 413, codes.ResourceExhausted, "limit of 256 bytes"},
		{"not JSON", http.MethodPost, "/bridgetest.v1.RestService/Touch", http.Header{"Content-Type": {"text/plain"}}, "name=a", 415, codes.InvalidArgument, `Content-Type "text/plain" is not supported`},
		{"body rule without JSON", http.MethodPut, "/v1/items/x", nil, `{}`, 415, codes.InvalidArgument, "not supported"},
		{"grpc-timeout", http.MethodPost, "/bridgetest.v1.RestService/Touch", http.Header{"Content-Type": {"application/json"}, "Grpc-Timeout": {"50m"}}, `{"hold":true}`, 504, codes.DeadlineExceeded, ""},
		{"bad grpc-timeout", http.MethodPost, "/bridgetest.v1.RestService/Touch", http.Header{"Content-Type": {"application/json"}, "Grpc-Timeout": {"soon"}}, `{}`, 400, codes.InvalidArgument, "Grpc-Timeout"},
		{"wrong verb at an annotated path", http.MethodPost, "/v1/items/x", jsonHeader, `{}`, 405, codes.Unimplemented, "not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := errorBody(t, env.do(t, tc.method, tc.path, tc.header, tc.body), tc.wantHTTP)
			if st.Code != tc.wantCode || !strings.Contains(st.Message, tc.wantMsg) {
				t.Fatalf("status %+v, want %v with a message containing %q", st, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestUnaryResponseMetadata(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t, bridge.WithResponseMetadata("x-served-by", "x-cost", "x-blob-bin"), bridge.WithAllowedOrigins("https://app.example"))
	body := `{"responseHeaders":{"x-served-by":"b1","x-secret":"s","x-blob-bin":"\u0001\u0002"},` +
		`"responseTrailers":{"x-cost":"3","x-private":"p"}`
	for _, tc := range []struct {
		name     string
		body     string
		wantHTTP int
	}{
		{"OK", body + `}`, 200},
		{"error", body + `,"failCode":9}`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", http.Header{
				"Content-Type": {"application/json"}, "Origin": {"https://app.example"},
			}, tc.body)
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tc.wantHTTP {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.wantHTTP)
			}
			var got []string
			for k, vs := range resp.Header {
				if strings.HasPrefix(k, "Grpc-") {
					got = append(got, k+"="+strings.Join(vs, ","))
				}
			}
			want := map[string]bool{"Grpc-Metadata-X-Served-By=b1": true, "Grpc-Metadata-X-Blob-Bin=AQI=": true, "Grpc-Trailer-X-Cost=3": true}
			if len(got) != len(want) {
				t.Fatalf("metadata headers %v, want exactly %v", got, want)
			}
			for _, kv := range got {
				if !want[kv] {
					t.Fatalf("metadata headers %v, want exactly %v", got, want)
				}
			}
			// A page of another origin may read them.
			exposed := resp.Header.Get("Access-Control-Expose-Headers")
			for _, name := range []string{"Grpc-Metadata-X-Served-By", "Grpc-Metadata-X-Blob-Bin", "Grpc-Trailer-X-Cost"} {
				if !strings.Contains(exposed, name) {
					t.Errorf("Access-Control-Expose-Headers %q lacks %s", exposed, name)
				}
			}
		})
	}
}

func TestUnaryRequestMetadataAndOrigins(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t, bridge.WithAllowedOrigins("*"), bridge.WithRequestHeaders("cookie", "authorization", "x-tenant"))
	header := http.Header{"Content-Type": {"application/json"}, "Cookie": {"session=s"}, "Authorization": {"Bearer t"}, "X-Tenant": {"t1"}, "X-Other": {"o"}}
	md := unaryResponse(t, env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", header, `{}`)).GetMetadata()
	if md["cookie"] != "session=s" || md["authorization"] != "Bearer t" || md["x-tenant"] != "t1" || md["x-other"] != "" {
		t.Fatalf("same-origin call: backend metadata %v, want cookie, authorization and x-tenant only", md)
	}
	header.Set("Origin", "https://any.example")
	md = unaryResponse(t, env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", header, `{}`)).GetMetadata()
	if _, ok := md["cookie"]; ok || md["authorization"] != "" || md["x-tenant"] != "t1" {
		t.Fatalf("origin admitted by *: backend metadata %v, want no cookie and no authorization", md)
	}

	strict := newUnaryEnv(t)
	for _, h := range []http.Header{
		{"Content-Type": {"application/json"}, "Origin": {"https://evil.example"}},
		{"Content-Type": {"application/json"}, "Sec-Fetch-Site": {"cross-site"}},
	} {
		for _, path := range []string{"/bridgetest.v1.RestService/Touch", "/v1/items"} {
			if st := errorBody(t, strict.do(t, http.MethodPost, path, h, `{}`), http.StatusForbidden); st.Code != codes.PermissionDenied {
				t.Fatalf("POST %s with %v: %+v", path, h, st)
			}
		}
	}
	if n := strict.rest.Calls(); n != 0 {
		t.Fatalf("the backend saw %d calls from refused origins", n)
	}
}

// heldUnary starts a Touch call that the backend holds, and returns when
// the backend has it; cancel ends it from the client's side.
func heldUnary(t *testing.T, env *unaryEnv) (cancel context.CancelFunc, done <-chan struct{}) {
	t.Helper()
	before := env.rest.Calls()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.url+"/bridgetest.v1.RestService/Touch", strings.NewReader(`{"hold":true}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		if resp, err := env.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); env.rest.Calls() == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("the backend did not get the call")
		}
	}
	t.Cleanup(func() { cancel(); <-finished })
	return cancel, finished
}

func TestUnaryClientDisconnectCancelsUpstream(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t)
	cancel, done := heldUnary(t, env)
	cancel()
	<-done
	select {
	case err := <-env.inspect.Ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("backend call ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend call was not cancelled after the client left")
	}
}

func TestUnaryCountsAgainstStreamLimits(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t, bridge.WithMaxStreamsPerClient(1))
	cancel, done := heldUnary(t, env)
	if n := env.handler.ActiveStreams(); n != 1 {
		t.Errorf("ActiveStreams %d during a unary call, want 1", n)
	}
	st := errorBody(t, env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{}`), http.StatusTooManyRequests)
	if st.Code != codes.ResourceExhausted {
		t.Fatalf("status %+v", st)
	}
	cancel()
	<-done
	for deadline := time.Now().Add(10 * time.Second); env.handler.ActiveStreams() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the unary call still counts after it ended")
		}
	}
	unaryResponse(t, env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{}`))
}

func TestUnaryShutdownLetsCallsFinish(t *testing.T) {
	t.Parallel()
	env := newUnaryEnv(t)
	cancel, done := heldUnary(t, env)
	shut := make(chan error, 1)
	go func() { shut <- env.handler.Shutdown(t.Context()) }()
	// New calls are refused at once; the live one is not cut.
	st := errorBody(t, env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, `{}`), http.StatusServiceUnavailable)
	if st.Code != codes.Unavailable {
		t.Fatalf("call during the drain: %+v", st)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a unary call was live", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	<-done
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestUnaryResponseBodyMustNameAField(t *testing.T) {
	t.Parallel()
	inspect, err := protoregistry.GlobalFiles.FindFileByPath("bridgetest/v1/inspect.proto")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ responseBody, want string }{
		{"nope", `google.api.http response_body "nope": bridgetest.v1.InspectResponse has no field "nope"`},
		{"seq.value", `google.api.http response_body "seq.value": bridgetest.v1.InspectResponse.seq is not a singular message field`},
		{"request.nope", `google.api.http response_body "request.nope": bridgetest.v1.InspectRequest has no field "nope"`},
	} {
		t.Run(tc.responseBody, func(t *testing.T) {
			t.Parallel()
			opts := &descriptorpb.MethodOptions{}
			proto.SetExtension(opts, annotations.E_Http, &annotations.HttpRule{
				Pattern: &annotations.HttpRule_Get{Get: "/v1/bad"}, ResponseBody: tc.responseBody,
			})
			bad := &descriptorpb.FileDescriptorProto{
				Name:       proto.String("bad/v1/bad.proto"),
				Package:    proto.String("bad.v1"),
				Syntax:     proto.String("proto3"),
				Dependency: []string{"bridgetest/v1/inspect.proto", "google/api/annotations.proto"},
				Service: []*descriptorpb.ServiceDescriptorProto{{
					Name: proto.String("BadService"),
					Method: []*descriptorpb.MethodDescriptorProto{{
						Name: proto.String("Get"), InputType: proto.String(".bridgetest.v1.InspectRequest"),
						OutputType: proto.String(".bridgetest.v1.InspectResponse"), Options: opts,
					}},
				}},
			}
			files, err := bridge.NewFiles(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{protodesc.ToFileDescriptorProto(inspect), bad}})
			if err != nil {
				t.Fatal(err)
			}
			conn := bridgetest.NewBackend(t, func(*grpc.Server) {})
			_, err = bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("bad.v1.*"), bridge.WithFiles(files))
			if err == nil || !strings.Contains(err.Error(), "bad.v1.BadService/Get: "+tc.want) {
				t.Fatalf("NewHandler: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestUnaryLogsOneLinePerCall(t *testing.T) {
	t.Parallel()
	rec := newEndRecorder()
	env := newUnaryEnv(t, rec.options()...)
	for _, tc := range []struct{ body, code string }{
		{`{"name":"a"}`, "OK"},
		{`{"failCode":5}`, "NotFound"},
	} {
		resp := env.do(t, http.MethodPost, "/bridgetest.v1.RestService/Touch", jsonHeader, tc.body)
		_, _ = io.Copy(io.Discard, resp.Body)
		var lines []string
		for deadline := time.After(10 * time.Second); len(lines) == 0; {
			select {
			case b := <-rec.logs:
				var line struct{ Msg, Method, Transport, Code string }
				if err := json.Unmarshal(b, &line); err != nil {
					t.Fatalf("log %s: %v", b, err)
				}
				if line.Msg == "stream ended" {
					if line.Method != "bridgetest.v1.RestService/Touch" || line.Transport != bridge.TransportUnary || line.Code != tc.code {
						t.Fatalf("log %s, want Touch over %s ending %s", b, bridge.TransportUnary, tc.code)
					}
					lines = append(lines, string(b))
				}
			case <-deadline:
				t.Fatalf("no log line for the call ending %s", tc.code)
			}
		}
		select {
		case b := <-rec.logs:
			t.Fatalf("a second log line for one call: %s", b)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
