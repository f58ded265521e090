package bridge_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
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

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	bridgev1 "github.com/grpcbridge/grpcbridge/gen/bridge/v1"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// compressSafetyTimeout bounds every wait of these tests, so that a bug
// fails a test instead of hanging it. It is never what a test asserts.
const compressSafetyTimeout = 10 * time.Second

const (
	echoStream  = "demo.v1.EchoService/Stream"
	echoBidi    = "demo.v1.EchoService/Echo"
	inspectOnce = "bridgetest.v1.InspectService/InspectOnce"
)

// steppedEcho serves demo.v1.EchoService with a Stream that sends one
// message per value the test puts in next (its text), and ends with OK
// when next is closed: the test decides when each message is produced.
// Echo is the demo's.
type steppedEcho struct {
	demov1.UnimplementedEchoServiceServer
	demo demov1.EchoServiceServer
	next chan string
}

func (s *steppedEcho) Echo(ss grpc.BidiStreamingServer[demov1.EchoRequest, demov1.EchoResponse]) error {
	return s.demo.Echo(ss)
}

func (s *steppedEcho) Stream(_ *demov1.StreamRequest, ss grpc.ServerStreamingServer[demov1.EchoResponse]) error {
	// The response headers commit the stream at once.
	if err := ss.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	seq := uint64(0)
	for {
		select {
		case text, ok := <-s.next:
			if !ok {
				return nil
			}
			seq++
			if err := ss.Send(&demov1.EchoResponse{Text: text, Seq: seq}); err != nil {
				return err
			}
		case <-ss.Context().Done():
			return ss.Context().Err()
		}
	}
}

// compressEnv is a bridge in front of steppedEcho, the demo's other
// services and the inspect service, served over HTTP/1.1 (where an event
// stream takes its connection over) and over HTTP/2 (h2c).
type compressEnv struct {
	echo    *steppedEcho
	servers map[string]compressServer // by protocol: "http1", "h2"
}

type compressServer struct {
	url    string
	client *http.Client
}

func newCompressEnv(t *testing.T, opts ...bridge.Option) *compressEnv {
	t.Helper()
	env := &compressEnv{echo: &steppedEcho{next: make(chan string)}, servers: map[string]compressServer{}}
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demov1.RegisterTickerServiceServer(s, demo.TickerServer{})
		env.echo.demo = demo.EchoServer{}
		demov1.RegisterEchoServiceServer(s, env.echo)
		testv1.RegisterInspectServiceServer(s, bridgetest.NewInspectServer())
	})
	base := []bridge.Option{bridge.WithBackend(conn), bridge.WithExpose("demo.v1.TickerService", "demo.v1.EchoService", "bridgetest.v1.*")}
	h, err := bridge.NewHandler(append(base, opts...)...)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	// No client decompresses by itself (DisableCompression): the tests
	// read what the bridge wrote.
	h1 := httptest.NewServer(h)
	t.Cleanup(h1.Close)
	tr1 := &http.Transport{DisableCompression: true}
	t.Cleanup(tr1.CloseIdleConnections)
	env.servers["http1"] = compressServer{url: h1.URL, client: &http.Client{Transport: tr1}}

	h2 := httptest.NewUnstartedServer(h)
	h2.Config.Protocols = new(http.Protocols)
	h2.Config.Protocols.SetUnencryptedHTTP2(true)
	h2.Start()
	t.Cleanup(h2.Close)
	tr2 := &http.Transport{DisableCompression: true, Protocols: new(http.Protocols)}
	tr2.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr2.CloseIdleConnections)
	env.servers["h2"] = compressServer{url: h2.URL, client: &http.Client{Transport: tr2}}
	return env
}

// get sends a request with the header fields hdr (name, value pairs).
func (s compressServer) do(t *testing.T, method, path, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// varies reports whether resp's Vary names field.
func varies(resp *http.Response, field string) bool {
	for _, v := range resp.Header.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), field) {
				return true
			}
		}
	}
	return false
}

// nextEvent reads the next block of r within the safety timeout, so that
// an event held back by the bridge fails the test instead of hanging it.
func nextEvent(t *testing.T, r *bridgetest.SSEReader, body io.Closer) bridgetest.Event {
	t.Helper()
	type result struct {
		ev  bridgetest.Event
		err error
	}
	got := make(chan result, 1)
	go func() {
		ev, err := r.Next()
		got <- result{ev, err}
	}()
	select {
	case res := <-got:
		if res.err != nil {
			t.Fatalf("read event: %v", res.err)
		}
		return res.ev
	case <-time.After(compressSafetyTimeout):
		_ = body.Close() // ends the read
		<-got
		t.Fatal("no event within the safety timeout: the bridge held it back")
		return bridgetest.Event{}
	}
}

// nextOf reads blocks until one of type typ ("" for a comment-only block)
// and returns it.
func nextOf(t *testing.T, r *bridgetest.SSEReader, body io.Closer, typ string) bridgetest.Event {
	t.Helper()
	for {
		if ev := nextEvent(t, r, body); ev.Type == typ && (typ != "" || len(ev.Comments) > 0) {
			return ev
		}
	}
}

// TestSSEGzip opens an event stream of a method whose SSE compression is
// on, with Accept-Encoding: gzip, over HTTP/1.1 (the takeover) and HTTP/2.
// The response is gzip, varies on Accept-Encoding, and is one gzip member
// that inflates incrementally: the backend produces each message only
// after the test has read the one before out of the decompressor, and no
// heartbeat comes within the test's safety timeout, so a bridge that held
// compressed bytes back (a compressor not flushed per batch) would fail
// the read. Short and long messages (a stored block and compressed
// blocks) and the end event come through, and the member's trailer checks
// out (gzip.Reader verifies the CRC-32 and length at its EOF), with
// nothing after it.
func TestSSEGzip(t *testing.T) {
	env := newCompressEnv(t, bridge.WithCompression(echoStream, bridge.CompressionOptions{SSE: true}))
	for _, proto := range []string{"http1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			env.echo.next = make(chan string)
			resp := env.servers[proto].do(t, http.MethodGet, "/"+echoStream, "", "Accept-Encoding", "gzip, deflate, br")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
				t.Fatalf("Content-Encoding %q, want gzip", got)
			}
			if !varies(resp, "Accept-Encoding") {
				t.Errorf("Vary %q does not name Accept-Encoding", resp.Header.Values("Vary"))
			}
			if got := resp.Header.Get("Content-Type"); got != "text/event-stream; charset=utf-8" {
				t.Errorf("Content-Type %q", got)
			}
			texts := []string{"one", strings.Repeat("two", 2000), "three", "four"}
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatalf("gzip header: %v", err)
			}
			zr.Multistream(false) // one member: see what follows it below
			events := bridgetest.NewSSEReader(zr)
			for i, text := range texts {
				env.echo.next <- text // produced only now
				ev := nextOf(t, events, resp.Body, "message")
				var msg struct {
					Text string `json:"text"`
					Seq  string `json:"seq"`
				}
				if err := json.Unmarshal([]byte(ev.Data), &msg); err != nil {
					t.Fatalf("event %d: %v: %s", i+1, err, ev.Data)
				}
				if msg.Text != text || msg.Seq != strconv.Itoa(i+1) {
					t.Fatalf("event %d: text %.20q seq %s, want %.20q and %d", i+1, msg.Text, msg.Seq, text, i+1)
				}
			}
			close(env.echo.next)
			end := nextOf(t, events, resp.Body, "end")
			if !strings.Contains(end.Data, `"code":0`) {
				t.Errorf("end event %s, want code 0", end.Data)
			}
			if _, err := events.Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the end event: %v, want the member's EOF (CRC-32 and length checked)", err)
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || len(rest) != 0 {
				t.Errorf("after the gzip member: %d bytes, %v; want nothing", len(rest), err)
			}
		})
	}
}

// TestSSEGzipHeartbeat: the heartbeats of a silent gzip stream arrive
// one by one, each inflated as soon as it is written.
func TestSSEGzipHeartbeat(t *testing.T) {
	env := newCompressEnv(t,
		bridge.WithCompression(echoStream, bridge.CompressionOptions{SSE: true}),
		bridge.WithHeartbeatInterval(20*time.Millisecond))
	for _, proto := range []string{"http1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			resp := env.servers[proto].do(t, http.MethodGet, "/"+echoStream, "", "Accept-Encoding", "gzip")
			if got := resp.Header.Get("Content-Encoding"); resp.StatusCode != http.StatusOK || got != "gzip" {
				t.Fatalf("status %d, Content-Encoding %q; want 200 and gzip", resp.StatusCode, got)
			}
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatalf("gzip header: %v", err)
			}
			events := bridgetest.NewSSEReader(zr)
			for range 3 {
				if ping := nextOf(t, events, resp.Body, ""); ping.Comments[0] != "ping" {
					t.Fatalf("heartbeat comment %q, want ping", ping.Comments[0])
				}
			}
		})
	}
}

// TestSSEGzipNegotiation checks when an event stream stays identity: a
// request without Accept-Encoding, one that refuses gzip, a method that
// did not opt in, and an error answered before the stream (a non-200 JSON
// body, readable as is). Every stream of a method that opted in varies on
// Accept-Encoding.
func TestSSEGzipNegotiation(t *testing.T) {
	env := newCompressEnv(t, bridge.WithCompression("demo.v1.TickerService/Watch", bridge.CompressionOptions{SSE: true}))
	const watch = "/demo.v1.TickerService/Watch?symbol=ACME&interval_ms=1&limit=2"
	cases := []struct {
		name, path, acceptEncoding string
		wantGzip, wantVary         bool
		wantStatus                 int
	}{
		{"accepted", watch, "gzip", true, true, 200},
		{"star", watch, "*", true, true, 200},
		{"no Accept-Encoding", watch, "", false, true, 200},
		{"gzip refused", watch, "gzip;q=0, *", false, true, 200},
		{"only br", watch, "br", false, true, 200},
		{"not opted in", "/demo.v1.TickerService/Quote?symbol=ACME", "gzip", false, false, 200},
		{"error before the stream", "/demo.v1.TickerService/Watch?interval_ms=x", "gzip", false, false, 400},
	}
	for _, proto := range []string{"http1", "h2"} {
		for _, c := range cases {
			t.Run(proto+"/"+c.name, func(t *testing.T) {
				var hdr []string
				if c.acceptEncoding != "" {
					hdr = []string{"Accept-Encoding", c.acceptEncoding}
				}
				if strings.Contains(c.path, "Quote") {
					hdr = append(hdr, "Accept", "text/event-stream")
				}
				resp := env.servers[proto].do(t, http.MethodGet, c.path, "", hdr...)
				if resp.StatusCode != c.wantStatus {
					t.Fatalf("status %d, want %d", resp.StatusCode, c.wantStatus)
				}
				if got := resp.Header.Get("Content-Encoding") == "gzip"; got != c.wantGzip {
					t.Fatalf("Content-Encoding %q, want gzip: %v", resp.Header.Get("Content-Encoding"), c.wantGzip)
				}
				if got := varies(resp, "Accept-Encoding"); got != c.wantVary {
					t.Errorf("Vary %q names Accept-Encoding: %v, want %v", resp.Header.Values("Vary"), got, c.wantVary)
				}
				var body io.Reader = resp.Body
				if c.wantGzip {
					zr, err := gzip.NewReader(resp.Body)
					if err != nil {
						t.Fatal(err)
					}
					body = zr
				}
				all, err := io.ReadAll(body)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				switch {
				case c.wantStatus != 200:
					if !json.Valid(all) {
						t.Errorf("error body is not JSON: %q", all)
					}
				case !bytes.Contains(all, []byte("event: end\n")):
					t.Errorf("no end event in %q", all)
				}
			})
		}
	}
}

// TestUnaryJSONGzip calls a unary method whose JSON compression is on: an
// answer over 1 KiB is gzip (Content-Length its compressed length) and
// inflates to what an identity request gets; a short answer, and a
// request without Accept-Encoding, stay identity; both vary on
// Accept-Encoding.
func TestUnaryJSONGzip(t *testing.T) {
	env := newCompressEnv(t, bridge.WithCompression(inspectOnce, bridge.CompressionOptions{JSON: true}))
	big := `{"name":"` + strings.Repeat("n", 4000) + `"}`
	for _, proto := range []string{"http1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			srv := env.servers[proto]
			post := func(body string, hdr ...string) (*http.Response, []byte) {
				resp := srv.do(t, http.MethodPost, "/"+inspectOnce, body, append([]string{"Content-Type", "application/json"}, hdr...)...)
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, %v: %s", resp.StatusCode, err, b)
				}
				if !varies(resp, "Accept-Encoding") {
					t.Errorf("Vary %q does not name Accept-Encoding", resp.Header.Values("Vary"))
				}
				return resp, b
			}
			_, plain := post(big)
			resp, gz := post(big, "Accept-Encoding", "gzip")
			if resp.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("Content-Encoding %q, want gzip", resp.Header.Get("Content-Encoding"))
			}
			if resp.ContentLength != int64(len(gz)) || len(gz) >= len(plain)/4 {
				t.Errorf("Content-Length %d, %d bytes read, identity %d: want the compressed length, far shorter", resp.ContentLength, len(gz), len(plain))
			}
			zr, err := gzip.NewReader(bytes.NewReader(gz))
			if err != nil {
				t.Fatal(err)
			}
			inflated, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("inflate: %v", err)
			}
			if !bytes.Equal(inflated, plain) {
				t.Errorf("inflated answer differs from the identity one")
			}
			resp, small := post(`{"name":"x"}`, "Accept-Encoding", "gzip")
			if resp.Header.Get("Content-Encoding") != "" || !json.Valid(small) {
				t.Errorf("short answer: Content-Encoding %q, body %q; want identity JSON", resp.Header.Get("Content-Encoding"), small)
			}
		})
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestWSPermessageDeflate echoes a large, compressible message over a
// WebSocket to a method whose WebSocket compression is on, and to one
// whose is not, with a client that offers permessage-deflate and one that
// does not. Only the method that opted in with the client that offered it
// negotiates the extension (no context takeover both ways, the only mode
// gorilla speaks, so that no compressor outlives a message), and then the
// echo arrives in far fewer bytes than it holds; the call ends with its
// status frame and close 1000 either way.
func TestWSPermessageDeflate(t *testing.T) {
	optedIn := newCompressEnv(t, bridge.WithCompression(echoBidi, bridge.CompressionOptions{WebSocket: true}))
	notOptedIn := newCompressEnv(t)
	payload := bytes.Repeat([]byte("compressible "), 5000) // 65 KB
	for _, c := range []struct {
		name           string
		env            *compressEnv
		offer, deflate bool
	}{
		{"offered", optedIn, true, true},
		{"not offered", optedIn, false, false},
		{"not opted in", notOptedIn, true, false},
	} {
		t.Run(c.name, func(t *testing.T) { runWSEcho(t, c.env, echoBidi, c.offer, c.deflate, payload) })
	}
}

// runWSEcho echoes payload once on a WebSocket to path, offering
// permessage-deflate or not, and checks what was negotiated.
func runWSEcho(t *testing.T, env *compressEnv, path string, offer, wantDeflate bool, payload []byte) {
	t.Helper()
	var read atomic.Int64
	d := websocket.Dialer{
		Subprotocols:      []string{"grpc-ws.v1"},
		HandshakeTimeout:  compressSafetyTimeout,
		EnableCompression: offer,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: c, n: &read}, nil
		},
	}
	url := "ws" + strings.TrimPrefix(env.servers["http1"].url, "http") + "/" + path
	conn, resp, err := d.DialContext(t.Context(), url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() { _ = conn.Close() }()
	ext := resp.Header.Get("Sec-WebSocket-Extensions")
	if got := strings.Contains(ext, "permessage-deflate"); got != wantDeflate {
		t.Fatalf("Sec-WebSocket-Extensions %q: permessage-deflate %v, want %v", ext, got, wantDeflate)
	}
	if wantDeflate && !(strings.Contains(ext, "server_no_context_takeover") && strings.Contains(ext, "client_no_context_takeover")) {
		t.Errorf("Sec-WebSocket-Extensions %q: want no context takeover both ways", ext)
	}
	_ = conn.SetReadDeadline(time.Now().Add(compressSafetyTimeout))
	req, _ := proto.Marshal(&demov1.EchoRequest{Text: "x", Payload: payload})
	if err := conn.WriteMessage(websocket.BinaryMessage, req); err != nil {
		t.Fatal(err)
	}
	before := read.Load() // the handshake's
	typ, msg, err := conn.ReadMessage()
	if err == nil && typ == websocket.TextMessage { // the headers frame
		typ, msg, err = conn.ReadMessage()
	}
	if err != nil || typ != websocket.BinaryMessage {
		t.Fatalf("read echo: type %d, %v", typ, err)
	}
	onWire := read.Load() - before
	var echo demov1.EchoResponse
	if err := proto.Unmarshal(msg, &echo); err != nil || !bytes.Equal(echo.GetPayload(), payload) {
		t.Fatalf("echo: %v, payload of %d bytes, want %d", err, len(echo.GetPayload()), len(payload))
	}
	if compressed := onWire < int64(len(payload)/4); compressed != wantDeflate {
		t.Errorf("echo of %d bytes took %d bytes on the wire: compressed %v, want %v", len(msg), onWire, compressed, wantDeflate)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"end":true}`)); err != nil {
		t.Fatal(err)
	}
	typ, msg, err = conn.ReadMessage()
	if err != nil || typ != websocket.TextMessage || !bytes.Contains(msg, []byte(`"code":0`)) {
		t.Fatalf("status frame: type %d %q, %v", typ, msg, err)
	}
	_, _, err = conn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the status frame: %v, want close 1000", err)
	}
}

// TestWithCompressionUnknownMethod: an override for a method that is not
// exposed stops NewHandler, as a typo must.
func TestWithCompressionUnknownMethod(t *testing.T) {
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	_, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*"),
		bridge.WithCompression("demo.v1.TickerService/Wach", bridge.CompressionOptions{SSE: true}))
	if err == nil || !strings.Contains(err.Error(), `compression options for "demo.v1.TickerService/Wach": no such exposed method`) {
		t.Fatalf("NewHandler: %v, want the unknown method named", err)
	}
}

// echoFileCompressing returns demo/v1/echo.proto with
// (bridge.v1.method).compression = opts on Stream, in a registry of its
// own: a schema whose proto declares compression.
func echoFileCompressing(t *testing.T, opts *bridgev1.CompressionOptions) *protoregistry.Files {
	t.Helper()
	fdp := protodesc.ToFileDescriptorProto(demov1.File_demo_v1_echo_proto)
	if !slices.Contains(fdp.Dependency, "bridge/v1/options.proto") {
		fdp.Dependency = append(fdp.Dependency, "bridge/v1/options.proto")
	}
	for _, m := range fdp.Service[0].Method {
		if m.GetName() == "Stream" {
			if m.Options == nil {
				m.Options = &descriptorpb.MethodOptions{}
			}
			proto.SetExtension(m.Options, bridgev1.E_Method, &bridgev1.MethodOptions{Compression: opts})
		}
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	files := new(protoregistry.Files)
	if err := files.RegisterFile(fd); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestCompressionFromProto: the proto's (bridge.v1.method).compression
// turns SSE gzip on, and WithCompression replaces it whole (here: off).
func TestCompressionFromProto(t *testing.T) {
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	files := echoFileCompressing(t, &bridgev1.CompressionOptions{Sse: true})
	for _, c := range []struct {
		name     string
		opts     []bridge.Option
		wantGzip bool
	}{
		{"proto", nil, true},
		{"overridden", []bridge.Option{bridge.WithCompression(echoStream, bridge.CompressionOptions{JSON: true})}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := bridge.NewHandler(append([]bridge.Option{bridge.WithBackend(conn), bridge.WithFiles(files), bridge.WithExpose("demo.v1.EchoService")}, c.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			tr := &http.Transport{DisableCompression: true}
			defer tr.CloseIdleConnections()
			resp := compressServer{url: srv.URL, client: &http.Client{Transport: tr}}.do(t, http.MethodGet, "/"+echoStream+"?count=2&size=300", "", "Accept-Encoding", "gzip")
			body := io.Reader(resp.Body)
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got != c.wantGzip {
				t.Fatalf("Content-Encoding %q: gzip %v, want %v", resp.Header.Get("Content-Encoding"), got, c.wantGzip)
			}
			if c.wantGzip {
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			all, err := io.ReadAll(body)
			if err != nil || bytes.Count(all, []byte("event: message\n")) != 2 || !bytes.Contains(all, []byte("event: end\n")) {
				t.Fatalf("stream %q, %v: want two messages and the end", all, err)
			}
		})
	}
}
