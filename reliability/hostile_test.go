package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// hostileEnv is a bridge in front of the demo and inspect services,
// serving HTTP/1.1 and cleartext HTTP/2 on a loopback port.
type hostileEnv struct {
	url  string
	grpc *grpc.ClientConn // native gRPC to the bridge
}

func newHostileEnv(t *testing.T) *hostileEnv {
	t.Helper()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		testv1.RegisterInspectServiceServer(s, bridgetest.NewInspectServer())
	})
	h, err := bridge.NewHandler(
		bridge.WithBackend(conn),
		bridge.WithExpose("demo.v1.*", "bridgetest.v1.*"),
		bridge.WithRetryInterval(50*time.Millisecond),
		bridge.WithReadMaxBytes(1<<20),
	)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	pl := &panicLog{}
	srv.Config.ErrorLog = newLogger(pl)
	srv.Start()
	env := &hostileEnv{url: srv.URL}
	env.grpc, err = grpc.NewClient(srv.Listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.grpc.Close()
		srv.CloseClientConnections()
		srv.Close()
		pl.check(t)
	})
	return env
}

// httpCase is a hostile HTTP request and the exact answer it must get.
type httpCase struct {
	name    string
	method  string
	target  string // path and query, sent as is
	header  map[string]string
	body    string
	status  int
	code    codes.Code
	message string // the exact status message
}

// hostileHTTP are requests for the SSE transport, and requests that fail
// before any transport is chosen.
func hostileHTTP() []httpCase {
	bigQuery := "limit=1&symbol=A" + strings.Repeat("&interval_ms=1", 60_000) // 840 KB
	deepJSON := strings.Repeat(`{"filter":`, 20_000) + `{}` + strings.Repeat(`}`, 20_000)
	return []httpCase{
		{name: "invalid UTF-8 in a string field (query)", method: "GET", target: tickerPath + "?limit=1&symbol=%FF%FE",
			status: 400, code: codes.InvalidArgument, message: `query string: parameter "symbol" is not valid UTF-8`},
		{name: "invalid UTF-8 in a query key", method: "GET", target: tickerPath + "?%FF=1",
			status: 400, code: codes.InvalidArgument, message: `query string: parameter "\xff" is not valid UTF-8`},
		{name: "invalid UTF-8 in a string field (JSON body)", method: "POST", target: tickerPath,
			header: map[string]string{"Content-Type": "application/json"}, body: "{\"symbol\":\"\xff\"}",
			status: 400, code: codes.InvalidArgument, message: `request body: proto: syntax error (line 1:11): invalid UTF-8 in string`},
		{name: "unknown JSON field", method: "POST", target: tickerPath,
			header: map[string]string{"Content-Type": "application/json"}, body: `{"symbol":"A","evil":1}`,
			status: 400, code: codes.InvalidArgument, message: `request body: proto: (line 1:15): unknown field "evil"`},
		// grpc-gateway's query rules ignore parameters that name no field.
		{name: "unknown query parameter", method: "GET", target: tickerPath + "?limit=1&symbol=A&evil=1", status: 200},
		{name: "query parameter of the wrong type", method: "GET", target: tickerPath + "?limit=1&symbol=A&interval_ms=soon",
			status: 400, code: codes.InvalidArgument, message: `query string: parsing field "interval_ms": strconv.ParseInt: parsing "soon": invalid syntax`},
		{name: "huge query string", method: "GET", target: tickerPath + "?" + bigQuery,
			status: 400, code: codes.InvalidArgument, message: `query string: number of URL query parameters exceeded limit`},
		{name: "query string over the header limit", method: "GET", target: tickerPath + "?" + bigQuery + bigQuery,
			status: 431},
		{name: "huge Last-Event-ID", method: "GET", target: tickerPath + "?limit=1&symbol=A",
			header: map[string]string{"Last-Event-ID": strings.Repeat("9", 4096)},
			status: 400, code: codes.InvalidArgument, message: `Last-Event-ID is 4096 bytes long; the limit is 1024`},
		{name: "Last-Event-ID not a cursor", method: "GET", target: tickerPath + "?limit=1&symbol=A",
			header: map[string]string{"Last-Event-ID": "seven"},
			status: 400, code: codes.InvalidArgument, message: `Last-Event-ID "seven" is not a valid uint64 for after_seq: invalid syntax`},
		{name: "Last-Event-ID out of range", method: "GET", target: tickerPath + "?limit=1&symbol=A",
			header: map[string]string{"Last-Event-ID": "18446744073709551616"},
			status: 400, code: codes.InvalidArgument, message: `Last-Event-ID "18446744073709551616" is not a valid uint64 for after_seq: value out of range`},
		{name: "Last-Event-ID not ASCII", method: "GET", target: tickerPath + "?limit=1&symbol=A",
			header: map[string]string{"Last-Event-ID": "1\xc3\xa9"},
			status: 400, code: codes.InvalidArgument, message: `Last-Event-ID must be printable ASCII`},
		{name: "deeply nested JSON", method: "POST", target: "/bridgetest.v1.InspectService/Inspect",
			header: map[string]string{"Content-Type": "application/json"}, body: deepJSON,
			status: 400, code: codes.InvalidArgument, message: `request body: proto: (line 1:12): unknown field "filter"`},
		{name: "JSON body over the limit", method: "POST", target: tickerPath,
			header: map[string]string{"Content-Type": "application/json"}, body: `{"symbol":"` + strings.Repeat("A", 2<<20) + `"}`,
			status: 413, code: codes.ResourceExhausted, message: `request body is larger than the limit of 1048576 bytes`},
		{name: "wrong Content-Type", method: "POST", target: tickerPath,
			header: map[string]string{"Content-Type": "text/plain"}, body: `{"symbol":"A"}`,
			status: 415, code: codes.InvalidArgument, message: `demo.v1.TickerService/Watch: Content-Type "text/plain" is not supported; POST application/json`},
		{name: "JSON in another charset", method: "POST", target: tickerPath,
			header: map[string]string{"Content-Type": "application/json; charset=latin1"}, body: `{"symbol":"A"}`,
			status: 415, code: codes.InvalidArgument, message: `demo.v1.TickerService/Watch: Content-Type "application/json; charset=latin1" is not supported; POST application/json`},
		{name: "Upgrade without the WebSocket headers", method: "GET", target: tickerPath + "?limit=1&symbol=A",
			header: map[string]string{"Upgrade": "websocket"},
			status: 400, code: codes.InvalidArgument, message: `demo.v1.TickerService/Watch: incomplete WebSocket handshake: send Connection: Upgrade with Upgrade: websocket and subprotocol grpc-ws.v1, or open the method as Server-Sent Events`},
		{name: "WebSocket upgrade without a key", method: "GET", target: echoPath,
			header: map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Protocol": subproto},
			status: 400, code: codes.InvalidArgument, message: `websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length`},
		{name: "client-streaming method as SSE", method: "GET", target: echoPath,
			status: 400, code: codes.InvalidArgument, message: `demo.v1.EchoService/Echo is a client-streaming method: open it as a WebSocket with subprotocol grpc-ws.v1`},
		{name: "HTTP method not allowed", method: "DELETE", target: tickerPath,
			status: 405, code: codes.Unimplemented, message: `demo.v1.TickerService/Watch: HTTP method DELETE is not allowed; use GET or POST`},
		{name: "path traversal", method: "GET", target: "/demo.v1.EchoService/../TickerService/Watch?symbol=A",
			status: 404, code: codes.NotFound, message: `no exposed method at /demo.v1.EchoService/../TickerService/Watch`},
		{name: "percent-encoded slash", method: "GET", target: "/demo.v1.TickerService%2FWatch?symbol=A",
			status: 404, code: codes.NotFound, message: `no exposed method at /demo.v1.TickerService%2FWatch`},
		{name: "percent-encoded letters", method: "GET", target: "/demo.v1.TickerService/W%61tch?symbol=A",
			status: 404, code: codes.NotFound, message: `no exposed method at /demo.v1.TickerService/W%61tch`},
		{name: "percent-encoded dot segment", method: "GET", target: "/x/%2e%2e/demo.v1.TickerService/Watch?symbol=A",
			status: 404, code: codes.NotFound, message: `no exposed method at /x/%2e%2e/demo.v1.TickerService/Watch`},
		{name: "double slash", method: "GET", target: "//demo.v1.TickerService/Watch?symbol=A",
			status: 404, code: codes.NotFound, message: `no exposed method at //demo.v1.TickerService/Watch`},
		{name: "method of an unexposed service", method: "GET", target: "/grpc.health.v1.Health/Check",
			status: 404, code: codes.NotFound, message: `no exposed method at /grpc.health.v1.Health/Check`},
		{name: "markup in the path is not echoed raw", method: "GET", target: "/%3Cscript%3Ealert(1)%3C/script%3E",
			status: 404, code: codes.NotFound, message: `no exposed method at /%3Cscript%3Ealert(1)%3C/script%3E`},
		{name: "markup in a query key is not echoed raw", method: "GET", target: tickerPath + "?%3Cscript%3E=1",
			status: 400, code: codes.InvalidArgument, message: `symbol is required`}, // an ignored key; the backend's own 400
		{name: "authorization not ASCII", method: "GET", target: tickerPath + "?limit=1&symbol=A",
			header: map[string]string{"Authorization": "Bearer \xff"},
			status: 400, code: codes.InvalidArgument, message: `header Authorization: gRPC metadata values must be printable ASCII`},
		{name: "bad grpc-timeout", method: "GET", target: tickerPath + "?limit=1&symbol=A",
			header: map[string]string{"Grpc-Timeout": "1x"},
			status: 400, code: codes.InvalidArgument, message: `header Grpc-Timeout: timeout "1x": unknown unit "x"`},
		{name: "gRPC-Web is not served", method: "POST", target: echoPath,
			header: map[string]string{"Content-Type": "application/grpc-web+proto"},
			status: 415, code: codes.InvalidArgument, message: `Content-Type "application/grpc-web+proto" is not native gRPC: send application/grpc or application/grpc+<codec> over HTTP/2 (gRPC-Web is not served; browsers use SSE or the grpc-ws.v1 WebSocket protocol)`},
		{name: "native gRPC over HTTP/1.1", method: "POST", target: echoPath,
			header: map[string]string{"Content-Type": "application/grpc"}, body: "\x00\x00\x00\x00\x00",
			status: 505, code: codes.InvalidArgument, message: `native gRPC needs HTTP/2 and this request came over "HTTP/1.1": use TLS with ALPN h2, or cleartext HTTP/2 with prior knowledge (h2c)`},
	}
}

// TestHostileHTTP sends each request over a raw connection (so that the
// target goes on the wire exactly as written) and checks the exact answer:
// HTTP status, a JSON google.rpc.Status with the exact code and message,
// no markup echoed unescaped, and nosniff.
func TestHostileHTTP(t *testing.T) {
	env := newHostileEnv(t)
	client := newHTTPClient(t)
	for _, tc := range hostileHTTP() {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, env.url+tc.target, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[http.CanonicalHeaderKey(k)] = []string{v}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if resp.StatusCode == http.StatusOK {
				// Accepted: a whole stream that ends well.
				evs := readAllEvents(t, string(body))
				if last := evs[len(evs)-1]; last.Type != "end" || !strings.Contains(last.Data, `"code":0`) {
					t.Errorf("stream %q does not end with code 0", body)
				}
				return
			}
			if tc.code == codes.OK {
				return // answered by net/http before the bridge
			}
			checkStatusBody(t, resp.Header, body, tc.code, tc.message)
		})
	}
}

// checkStatusBody checks a JSON status answer: exact code and message, and
// no raw markup.
func checkStatusBody(t *testing.T, hdr http.Header, body []byte, code codes.Code, message string) {
	t.Helper()
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("no X-Content-Type-Options: nosniff")
	}
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("body %q is not a JSON status: %v", body, err)
	}
	if codes.Code(st.Code) != code || normalize(st.Message) != message {
		t.Errorf("status %d %q, want %d %q", st.Code, st.Message, code, message)
	}
	if bytes.Contains(body, []byte("<")) || bytes.Contains(body, []byte(">")) {
		t.Errorf("body %q has raw markup characters", body)
	}
}

// The request header allow-list holds: of a request full of headers that
// must never reach a backend, only the allow-listed ones do, and the
// bridge sets x-forwarded-for itself.
func TestHostileHeadersNotForwarded(t *testing.T) {
	env := newHostileEnv(t)
	client := newHTTPClient(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, env.url+"/bridgetest.v1.InspectService/Inspect?name=x", nil)
	for k, v := range map[string]string{
		"Cookie": "session=secret", "Proxy-Authorization": "Basic eA==", "Te": "trailers", "Keep-Alive": "timeout=5",
		"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "Grpc-Status": "0", "Grpc-Message": "spoof",
		"X-Evil": "1", "Authorization": "Bearer ok", "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	} {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	evs := readAllEvents(t, string(body))
	var got struct {
		Metadata map[string]string `json:"metadata"`
	}
	for _, ev := range evs {
		if ev.Type == "message" {
			if err := json.Unmarshal([]byte(ev.Data), &got); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got.Metadata == nil {
		t.Fatalf("no inspect message in %q", body)
	}
	for _, key := range []string{"cookie", "proxy-authorization", "te", "keep-alive", "x-forwarded-host-spoof", "grpc-status", "grpc-message", "x-evil"} {
		if v, ok := got.Metadata[key]; ok {
			t.Errorf("metadata %s=%q reached the backend", key, v)
		}
	}
	if got.Metadata["authorization"] != "Bearer ok" || got.Metadata["traceparent"] == "" {
		t.Errorf("allow-listed headers missing: %v", got.Metadata)
	}
	if xff := got.Metadata["x-forwarded-for"]; strings.Contains(xff, "6.6.6.6") || !strings.Contains(xff, "127.0.0.1") {
		t.Errorf("x-forwarded-for %q: want the peer address only (no trusted proxy)", xff)
	}
}

// wsCase is a hostile WebSocket session: frames the client sends after
// the handshake, and the ending it must get.
type wsCase struct {
	name    string
	path    string
	frames  []wsFrame
	code    codes.Code
	message string
	close   int
}

type wsFrame struct {
	typ  int
	data []byte
}

func text(s string) wsFrame   { return wsFrame{websocket.TextMessage, []byte(s)} }
func binary(b []byte) wsFrame { return wsFrame{websocket.BinaryMessage, b} }

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func hostileWS() []wsCase {
	hello := mustMarshal(&demov1.EchoRequest{Text: "hi"})
	return []wsCase{
		{name: "duplicate metadata frames", path: echoPath,
			frames: []wsFrame{text(`{"metadata":{}}`), text(`{"metadata":{}}`)},
			code:   codes.InvalidArgument, message: `metadata is allowed only once, as the first frame`, close: 1008},
		{name: "metadata after a message", path: echoPath,
			frames: []wsFrame{binary(hello), text(`{"metadata":{"x-request-id":["1"]}}`)},
			code:   codes.InvalidArgument, message: `metadata is allowed only once, as the first frame`, close: 1008},
		{name: "binary frame of another message type", path: echoPath,
			// A StreamRequest: its field 1 is a varint where EchoRequest's
			// is a string. Protobuf has no type on the wire: the fields that
			// do not fit are unknown fields, and the call goes on.
			frames: []wsFrame{binary(mustMarshal(&demov1.StreamRequest{Count: 7, Size: 9})), text(`{"end":true}`)},
			code:   codes.OK, message: ``, close: 1000},
		{name: "invalid UTF-8 in a string field", path: echoPath,
			frames: []wsFrame{binary([]byte{0x0a, 0x02, 0xff, 0xfe})},
			code:   codes.InvalidArgument, message: `binary frame is not a demo.v1.EchoRequest: proto: field demo.v1.EchoRequest.text contains invalid UTF-8`, close: 1008},
		{name: "message after end", path: streamPath,
			frames: []wsFrame{binary(mustMarshal(&demov1.StreamRequest{Count: 3, IntervalMs: 1000})), text(`{"end":true}`), binary(hello)},
			code:   codes.InvalidArgument, message: `message after end`, close: 1008},
		{name: "end twice", path: echoPath,
			frames: []wsFrame{text(`{"end":true}`), text(`{"end":true}`)},
			code:   codes.InvalidArgument, message: `end sent twice`, close: 1008},
		{name: "second message to a server-streaming method", path: streamPath,
			frames: []wsFrame{binary(mustMarshal(&demov1.StreamRequest{Count: 2, IntervalMs: 1000})), binary(mustMarshal(&demov1.StreamRequest{}))},
			code:   codes.InvalidArgument, message: `demo.v1.EchoService/Stream is not client-streaming: it takes exactly one request message`, close: 1008},
		{name: "text frame that is not JSON", path: echoPath,
			frames: []wsFrame{text(`<script>`)},
			code:   codes.InvalidArgument, message: `control frame: want a JSON object`, close: 1008},
		{name: "text frame that is not UTF-8", path: echoPath,
			frames: []wsFrame{text("{\"end\":\xff}")},
			code:   codes.InvalidArgument, message: `control frame: not valid UTF-8`, close: 1007},
		{name: "pseudo-header in the metadata frame", path: echoPath,
			frames: []wsFrame{text(`{"metadata":{":authority":["evil"]}}`)},
			code:   codes.InvalidArgument, message: `metadata key ":authority" is not a valid gRPC metadata key (letters, digits, '-', '_', '.')`, close: 1008},
		{name: "metadata value with control bytes", path: echoPath,
			frames: []wsFrame{text(`{"metadata":{"authorization":["a\u0001"]}}`)},
			code:   codes.InvalidArgument, message: `metadata "authorization": values must be printable ASCII`, close: 1008},
		{name: "frame over the size limit", path: echoPath,
			frames: []wsFrame{binary(bytes.Repeat([]byte{0}, 2<<20))},
			code:   codes.ResourceExhausted, message: `message larger than the limit of 1048576 bytes`, close: 1009},
		{name: "forbidden metadata keys are dropped, not an error", path: echoPath,
			frames: []wsFrame{text(`{"metadata":{"cookie":["a=b"],"connection":["close"],"grpc-status":["0"]}}`), binary(hello), text(`{"end":true}`)},
			code:   codes.OK, message: ``, close: 1000},
	}
}

func TestHostileWebSocket(t *testing.T) {
	env := newHostileEnv(t)
	for _, tc := range hostileWS() {
		t.Run(tc.name, func(t *testing.T) {
			conn, _, err := wsDial(t.Context(), env.url, tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// Write from a goroutine: the bridge may stop reading after a
			// violation, and a write must not block the test.
			writeErr := make(chan error, 1)
			go func() {
				for _, f := range tc.frames {
					if err := conn.WriteMessage(f.typ, f.data); err != nil {
						writeErr <- err
						return
					}
				}
				writeErr <- nil
			}()
			fin := wsReadToEnd(conn, time.Now().Add(testTimeout))
			<-writeErr
			if fin.st == nil {
				t.Fatalf("no status frame; close %d, err %v", fin.closeCode, fin.err)
			}
			if codes.Code(fin.st.Code) != tc.code || normalize(fin.st.Message) != tc.message || fin.closeCode != tc.close {
				t.Errorf("status %d %q, close %d; want %d %q, close %d", fin.st.Code, fin.st.Message, fin.closeCode, tc.code, tc.message, tc.close)
			}
		})
	}
}

// Handshakes the bridge refuses before upgrading.
func TestHostileWebSocketHandshake(t *testing.T) {
	env := newHostileEnv(t)
	for _, tc := range []struct {
		name         string
		subprotocols []string
		header       http.Header
		status       int
		code         codes.Code
		message      string
	}{
		{"cross-origin", []string{subproto}, http.Header{"Origin": {"https://evil.example"}},
			403, codes.PermissionDenied, `origin https://evil.example is not allowed`},
		{"null origin", []string{subproto}, http.Header{"Origin": {"null"}},
			403, codes.PermissionDenied, `the opaque origin null (a sandboxed frame or a file: page) is never allowed`},
		{"no subprotocol", nil, nil,
			400, codes.InvalidArgument, `demo.v1.EchoService/Echo: offer the WebSocket subprotocol grpc-ws.v1 in Sec-WebSocket-Protocol`},
		{"bad metadata header", []string{subproto}, http.Header{"Authorization": {"a\xff"}},
			400, codes.InvalidArgument, `header Authorization: gRPC metadata values must be printable ASCII`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := websocket.Dialer{Subprotocols: tc.subprotocols, HandshakeTimeout: 10 * time.Second}
			conn, resp, err := d.DialContext(t.Context(), "ws"+strings.TrimPrefix(env.url, "http")+echoPath, tc.header)
			if err == nil {
				conn.Close()
				t.Fatal("upgraded")
			}
			if resp == nil {
				t.Fatalf("no answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			checkStatusBody(t, resp.Header, body, tc.code, tc.message)
		})
	}
}

// Native gRPC pass-through: what a caller cannot reach, and a message that
// is not what the method takes.
func TestHostileGRPCPassThrough(t *testing.T) {
	env := newHostileEnv(t)
	for _, tc := range []struct {
		name    string
		method  string
		req     proto.Message
		code    codes.Code
		message string
	}{
		// Not grpc.reflection: the bridge answers it itself (reflection_server.go).
		{"unexposed service", "/internal.v1.Admin/Wipe", &demov1.EchoRequest{}, codes.Unimplemented, `unknown method /internal.v1.Admin/Wipe`},
		{"unknown method", "/demo.v1.TickerService/Sell", &demov1.EchoRequest{}, codes.Unimplemented, `unknown method /demo.v1.TickerService/Sell`},
		{"path traversal", "/demo.v1.EchoService/../TickerService/Watch", &demov1.WatchRequest{Symbol: "A"}, codes.Unimplemented, `unknown method /demo.v1.EchoService/../TickerService/Watch`},
		{"percent-encoded method name", "/demo.v1.TickerService/W%61tch", &demov1.WatchRequest{Symbol: "A"}, codes.Unimplemented, `unknown method /demo.v1.TickerService/W%61tch`},
		{"backend error passes through", "/demo.v1.TickerService/Watch", &demov1.WatchRequest{}, codes.InvalidArgument, `symbol is required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			stream, err := env.grpc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, tc.method)
			if err == nil {
				if err = stream.SendMsg(tc.req); err == nil {
					_ = stream.CloseSend()
					err = stream.RecvMsg(new(demov1.EchoResponse))
				}
			}
			st := grpcstatus.Convert(err)
			if st.Code() != tc.code || st.Message() != tc.message {
				t.Errorf("status %s %q, want %s %q", st.Code(), st.Message(), tc.code, tc.message)
			}
		})
	}
}

// Config files an operator may get wrong: the bridge refuses to start,
// with exit status 2 and a message that names the file, line and key.
func TestHostileConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the bridge")
	}
	bin := buildBinary(t, "./cmd/bridge")
	dir := t.TempDir()
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key", "expoze: [demo.v1.*]\n", `bridge.yaml:1: expoze: unknown key (known: addr, `},
		{"wrong type", "cors_credentials: maybe\n", `bridge.yaml:1: cors_credentials: want true or false, got "maybe"`},
		{"alias bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n", `bridge.yaml:1: a: unknown key`},
		{"recursive alias", "expose: &e [*e]\n", `bridge.yaml`},
		{"negative limit", "demo: true\nmax_streams: -1\n", `stream limits cannot be negative`},
		{"bad trusted proxy", "demo: true\ntrusted_proxies: [10.0.0.0/33]\n", `-trusted-proxy "10.0.0.0/33": want a CIDR such as 10.0.0.0/8`},
		{"not UTF-8", "addr: \"\xff\"\n", `bridge.yaml`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "bridge.yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startProcNoWait(t, bin, "-config", path, "-addr", "127.0.0.1:0")
			code, err := p.wait(30 * time.Second)
			if err != nil || code != 2 || !strings.Contains(p.out.String(), tc.want) {
				t.Errorf("exit %d (%v), output %q; want exit 2 and %q", code, err, p.out, tc.want)
			}
		})
	}
}

// normalize undoes protojson's deliberately unstable error text: it puts a
// no-break space or a space after "proto:" at random, so that nobody
// depends on its messages; the suite compares them all the same.
func normalize(msg string) string {
	return strings.ReplaceAll(msg, "\u00a0", " ")
}
