package bridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

const wsSubprotocol = "grpc-ws.v1"

// wsSafetyTimeout bounds every wait of these tests, so that a bug fails a
// test instead of hanging it. It is never what a test asserts.
const wsSafetyTimeout = 10 * time.Second

// The demo has no unary or client-streaming method: wstest.v1.TestService,
// served with dynamic messages from a descriptor built here, has them.
//
//	message Note { string text = 1; int32 count = 2; repeated string values = 3; }
//	service TestService {
//	  rpc Unary(Note) returns (Note);            // echoes text; values: the request metadata
//	  rpc Collect(stream Note) returns (Note);   // text: the texts joined with ","; count: how many
//	  rpc Hold(stream Note) returns (stream Note); // echoes every note until the client half-closes
//	}
var wsTestFile = func() protoreflect.FileDescriptor {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	note := proto.String(".wstest.v1.Note")
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("wstest/v1/wstest.proto"),
		Package: proto.String("wstest.v1"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Note"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("text"), Number: proto.Int32(1), Type: str, Label: optional},
				{Name: proto.String("count"), Number: proto.Int32(2), Type: descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum(), Label: optional},
				{Name: proto.String("values"), Number: proto.Int32(3), Type: str, Label: descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()},
			},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("TestService"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Unary"), InputType: note, OutputType: note},
				{Name: proto.String("Collect"), InputType: note, OutputType: note, ClientStreaming: proto.Bool(true)},
				{Name: proto.String("Hold"), InputType: note, OutputType: note, ClientStreaming: proto.Bool(true), ServerStreaming: proto.Bool(true)},
			},
		}},
	}
	fd, err := protodesc.NewFile(fdp, new(protoregistry.Files))
	if err != nil {
		panic(err)
	}
	return fd
}()

var noteDesc = wsTestFile.Messages().ByName("Note")

// wsFiles is the schema of the bridge under test: everything compiled in,
// and wstest.v1.
var wsFiles = sync.OnceValue(func() *protoregistry.Files {
	files := new(protoregistry.Files)
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		_ = files.RegisterFile(fd)
		return true
	})
	if err := files.RegisterFile(wsTestFile); err != nil {
		panic(err)
	}
	return files
})

func newNote(text string) *dynamicpb.Message {
	m := dynamicpb.NewMessage(noteDesc)
	if text != "" {
		m.Set(noteDesc.Fields().ByName("text"), protoreflect.ValueOfString(text))
	}
	return m
}

func noteText(m *dynamicpb.Message) string {
	return m.Get(noteDesc.Fields().ByName("text")).String()
}

func noteCount(m *dynamicpb.Message) int64 {
	return m.Get(noteDesc.Fields().ByName("count")).Int()
}

func noteValues(m *dynamicpb.Message) []string {
	list := m.Get(noteDesc.Fields().ByName("values")).List()
	out := make([]string, list.Len())
	for i := range out {
		out[i] = list.Get(i).String()
	}
	return out
}

// wsTestService implements wstest.v1.TestService.
type wsTestService struct {
	// held receives the context of every Hold call as it starts, so that
	// tests can see the bridge cancel it.
	held chan context.Context
}

var wsTestServiceDesc = grpc.ServiceDesc{
	ServiceName: "wstest.v1.TestService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := newNote("")
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*wsTestService).unary(ctx, in)
		},
	}},
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "Collect",
			ClientStreams: true,
			Handler:       func(srv any, ss grpc.ServerStream) error { return srv.(*wsTestService).collect(ss) },
		},
		{
			StreamName:    "Hold",
			ClientStreams: true,
			ServerStreams: true,
			Handler:       func(srv any, ss grpc.ServerStream) error { return srv.(*wsTestService).hold(ss) },
		},
	},
}

// unary answers with the request's text and, in values, "key=value" for
// every request metadata entry but those that gRPC itself sets (binary
// values in hex). It sets the response header x-resp-header and the trailer
// x-resp-trailer. A request whose text starts with "fail" fails with
// FAILED_PRECONDITION, the text as message and an ErrorInfo detail.
func (s *wsTestService) unary(ctx context.Context, in *dynamicpb.Message) (any, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-resp-header", "h1", "x-private", "p"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-resp-trailer", "t1"))
	if text := noteText(in); strings.HasPrefix(text, "fail") {
		st, _ := status.New(codes.FailedPrecondition, text).WithDetails(&errdetails.ErrorInfo{Reason: "TEST"})
		return nil, st.Err()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var values []string
	for k, vs := range md {
		if !strings.HasPrefix(k, ":") && !strings.HasPrefix(k, "grpc-") && k != "content-type" && k != "user-agent" {
			for _, v := range vs {
				if strings.HasSuffix(k, "-bin") {
					v = fmt.Sprintf("%x", v) // a proto string must be UTF-8
				}
				values = append(values, k+"="+v)
			}
		}
	}
	slices.Sort(values)
	out := newNote(noteText(in))
	list := out.Mutable(noteDesc.Fields().ByName("values")).List()
	for _, v := range values {
		list.Append(protoreflect.ValueOfString(v))
	}
	return out, nil
}

func (s *wsTestService) collect(ss grpc.ServerStream) error {
	var texts []string
	for {
		in := newNote("")
		err := ss.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		texts = append(texts, noteText(in))
	}
	out := newNote(strings.Join(texts, ","))
	out.Set(noteDesc.Fields().ByName("count"), protoreflect.ValueOfInt32(int32(len(texts))))
	return ss.SendMsg(out)
}

func (s *wsTestService) hold(ss grpc.ServerStream) error {
	select {
	case s.held <- ss.Context():
	default:
	}
	for {
		in := newNote("")
		err := ss.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ss.SendMsg(in); err != nil {
			return err
		}
	}
}

// wsEnv is a bridge behind an HTTP test server, in front of an in-memory
// backend that serves the demo services and wstest.v1.TestService.
type wsEnv struct {
	url  string // ws://host:port
	host string
	test *wsTestService
}

// newWSEnv starts a bridge with the options. When base is not nil, it is
// the server's base context: cancelling it is the bridge shutting down.
// The test ends only after every handler has returned.
func newWSEnv(t *testing.T, base context.Context, opts ...bridge.Option) *wsEnv {
	t.Helper()
	svc := &wsTestService{held: make(chan context.Context, 16)}
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		s.RegisterService(&wsTestServiceDesc, svc)
	})
	all := append([]bridge.Option{
		bridge.WithBackend(conn),
		bridge.WithFiles(wsFiles()),
		bridge.WithExpose("demo.v1.*", "wstest.v1.*"),
	}, opts...)
	h, err := bridge.NewHandler(all...)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	// Server.Close does not wait for hijacked connections: count handlers.
	var active sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		active.Add(1)
		defer active.Done()
		h.ServeHTTP(w, r)
	}))
	if base != nil {
		srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		done := make(chan struct{})
		go func() {
			active.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(wsSafetyTimeout):
			t.Error("a WebSocket handler did not return after its client closed")
		}
	})
	return &wsEnv{url: "ws" + strings.TrimPrefix(srv.URL, "http"), host: srv.Listener.Addr().String(), test: svc}
}

// dial opens a WebSocket to path with the grpc-ws.v1 subprotocol, closed
// when the test ends.
func (e *wsEnv) dial(t *testing.T, path string, hdr http.Header) *wsClient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{wsSubprotocol}, HandshakeTimeout: wsSafetyTimeout}
	c, resp, err := d.DialContext(t.Context(), e.url+path, hdr)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("dial %s: %v: HTTP %d %s", path, err, resp.StatusCode, body)
		}
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != wsSubprotocol {
		t.Fatalf("handshake selected subprotocol %q, want %q", got, wsSubprotocol)
	}
	return &wsClient{t: t, c: c}
}

// handshakeError dials path and returns the refusal: the HTTP status and
// the JSON status body.
func (e *wsEnv) handshakeError(t *testing.T, path string, hdr http.Header, subprotocols ...string) (int, wsStatus) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: wsSafetyTimeout}
	c, resp, err := d.DialContext(t.Context(), e.url+path, hdr)
	if err == nil {
		_ = c.Close()
		t.Fatalf("dial %s: upgraded, want a refusal", path)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, want an HTTP refusal", path, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("refusal Content-Type %q, want application/json", ct)
	}
	var st wsStatus
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("refusal body %q: %v", body, err)
	}
	return resp.StatusCode, st
}

// wsStatus is a google.rpc.Status in JSON.
type wsStatus struct {
	Code    codes.Code        `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

// wsStatusFrame is the server's status frame.
type wsStatusFrame struct {
	Status   wsStatus            `json:"status"`
	Trailers map[string][]string `json:"trailers"`
}

// wsClient is the browser's side of one connection.
type wsClient struct {
	t           *testing.T
	c           *websocket.Conn
	headers     map[string][]string // from the headers frame, once read
	sawHeaders  bool
	sawMessages bool
}

func (w *wsClient) sendMsg(m proto.Message) {
	w.t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		w.t.Fatal(err)
	}
	w.sendBinary(b)
}

func (w *wsClient) sendBinary(b []byte) {
	w.t.Helper()
	if err := w.c.WriteMessage(websocket.BinaryMessage, b); err != nil {
		w.t.Fatalf("write binary frame: %v", err)
	}
}

func (w *wsClient) sendText(s string) {
	w.t.Helper()
	if err := w.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		w.t.Fatalf("write text frame: %v", err)
	}
}

// wsFrame is one frame read, or the close frame (typ websocket.CloseMessage).
type wsFrame struct {
	typ       int
	data      []byte
	closeCode int
	closeText string
}

// next reads the next data or close frame.
func (w *wsClient) next() wsFrame {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(wsSafetyTimeout))
	typ, data, err := w.c.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return wsFrame{typ: websocket.CloseMessage, closeCode: ce.Code, closeText: ce.Text}
		}
		w.t.Fatalf("read: %v", err)
	}
	return wsFrame{typ: typ, data: data}
}

// nextData reads the next data frame, taking a headers frame before the
// first message in its stride.
func (w *wsClient) nextData() wsFrame {
	w.t.Helper()
	for {
		f := w.next()
		if f.typ == websocket.TextMessage && bytes.HasPrefix(f.data, []byte(`{"headers":`)) {
			if w.sawHeaders || w.sawMessages {
				w.t.Fatalf("headers frame %s after the headers or a message", f.data)
			}
			var hf struct {
				Headers map[string][]string `json:"headers"`
			}
			if err := json.Unmarshal(f.data, &hf); err != nil {
				w.t.Fatalf("headers frame %s: %v", f.data, err)
			}
			w.sawHeaders, w.headers = true, hf.Headers
			continue
		}
		return f
	}
}

// recv reads the next response message into m.
func (w *wsClient) recv(m proto.Message) {
	w.t.Helper()
	f := w.nextData()
	if f.typ != websocket.BinaryMessage {
		w.t.Fatalf("got frame type %d %q (close %d %q), want a binary message", f.typ, f.data, f.closeCode, f.closeText)
	}
	w.sawMessages = true
	if err := proto.Unmarshal(f.data, m); err != nil {
		w.t.Fatalf("response message: %v", err)
	}
}

// status reads the status frame; skip says to pass over response messages
// before it.
func (w *wsClient) status(skip bool) wsStatusFrame {
	w.t.Helper()
	for {
		f := w.nextData()
		if f.typ == websocket.BinaryMessage && skip {
			continue
		}
		if f.typ != websocket.TextMessage {
			w.t.Fatalf("got frame type %d %q (close %d %q), want the status frame", f.typ, f.data, f.closeCode, f.closeText)
		}
		var sf wsStatusFrame
		dec := json.NewDecoder(bytes.NewReader(f.data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sf); err != nil {
			w.t.Fatalf("status frame %s: %v", f.data, err)
		}
		if sf.Trailers == nil || sf.Status.Details == nil {
			w.t.Errorf("status frame %s: trailers and details must be present", f.data)
		}
		return sf
	}
}

// closed reads the close frame that must come next.
func (w *wsClient) closed() (int, string) {
	w.t.Helper()
	f := w.next()
	if f.typ != websocket.CloseMessage {
		w.t.Fatalf("got frame type %d %q, want the close frame", f.typ, f.data)
	}
	return f.closeCode, f.closeText
}

// end reads the status frame, checks its code, and the close frame after
// it, with its code; it returns the status frame.
func (w *wsClient) end(skip bool, code codes.Code, closeCode int) wsStatusFrame {
	w.t.Helper()
	sf := w.status(skip)
	if sf.Status.Code != code {
		w.t.Errorf("status %v %q, want %v", sf.Status.Code, sf.Status.Message, code)
	}
	gotCode, reason := w.closed()
	if gotCode != closeCode {
		w.t.Errorf("close code %d, want %d", gotCode, closeCode)
	}
	if want := truncate(sf.Status.Message, 123); reason != want {
		w.t.Errorf("close reason %q, want the status message %q", reason, want)
	}
	return sf
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// heldCall waits for the Hold call that the bridge opened.
func (e *wsEnv) heldCall(t *testing.T) context.Context {
	t.Helper()
	select {
	case ctx := <-e.test.held:
		return ctx
	case <-time.After(wsSafetyTimeout):
		t.Fatal("the Hold call did not start")
		return nil
	}
}

// wantCancelled waits for the backend to see its call end.
func wantCancelled(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(wsSafetyTimeout):
		t.Fatal("the backend call was not cancelled")
	}
}

func TestWSEcho(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	c := env.dial(t, "/demo.v1.EchoService/Echo", nil)

	// The wire example of docs/protocol.md: EchoRequest{text: "hi"}.
	c.sendBinary([]byte{0x0a, 0x02, 'h', 'i'})
	c.sendMsg(&demov1.EchoRequest{Text: "second", Payload: []byte{0, 1, 2}})

	f := c.next()
	if f.typ != websocket.TextMessage || string(f.data) != `{"headers":{}}` {
		t.Fatalf("first frame %d %q, want the headers frame {\"headers\":{}}", f.typ, f.data)
	}
	c.sawHeaders = true
	f = c.next()
	// EchoResponse{text: "hi", seq: 1}
	if want := []byte{0x0a, 0x02, 'h', 'i', 0x18, 0x01}; f.typ != websocket.BinaryMessage || !bytes.Equal(f.data, want) {
		t.Fatalf("first response frame %d % x, want binary % x", f.typ, f.data, want)
	}
	var resp demov1.EchoResponse
	c.recv(&resp)
	if want := (&demov1.EchoResponse{Text: "second", Payload: []byte{0, 1, 2}, Seq: 2}); !proto.Equal(&resp, want) {
		t.Errorf("second response %v, want %v", &resp, want)
	}

	c.sendText(`{"end":true}`)
	f = c.next()
	if want := `{"status":{"code":0,"message":"","details":[]},"trailers":{}}`; f.typ != websocket.TextMessage || string(f.data) != want {
		t.Errorf("status frame %q, want %s", f.data, want)
	}
	if code, reason := c.closed(); code != websocket.CloseNormalClosure || reason != "" {
		t.Errorf("close %d %q, want 1000 without reason", code, reason)
	}
}

func TestWSChatRoom(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	a := env.dial(t, "/demo.v1.ChatService/Chat", nil)
	b := env.dial(t, "/demo.v1.ChatService/Chat", nil)
	want := func(c *wsClient, user, text string) {
		t.Helper()
		var m demov1.ChatMessage
		c.recv(&m)
		if m.GetRoom() != "lobby" || m.GetUser() != user || m.GetText() != text || m.GetTime() == nil {
			t.Fatalf("got %v, want %s: %s in lobby with a time", &m, user, text)
		}
	}
	// Each step waits for what proves the previous one took effect: a
	// stream receives its own message only after it joined the room.
	a.sendMsg(&demov1.ChatMessage{Room: "lobby", User: "ann", Text: "a1"})
	want(a, "ann", "a1")
	b.sendMsg(&demov1.ChatMessage{Room: "lobby", User: "bob", Text: "b1"})
	want(b, "bob", "b1")
	want(a, "bob", "b1")
	a.sendMsg(&demov1.ChatMessage{Room: "lobby", User: "ann", Text: "a2"})
	want(a, "ann", "a2")
	want(b, "ann", "a2")
}

func TestWSServerStreaming(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil, bridge.WithRequestHeaders("x-test-*"))
	tests := []struct {
		name   string
		before []string // text frames before the request
		after  []string // text frames after it
	}{
		{name: "message only"},
		{name: "message and end", after: []string{`{"end":true}`}},
		{name: "metadata, message and end", before: []string{`{"metadata":{"x-test-a":["1"]}}`}, after: []string{`{"end":true}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := env.dial(t, "/demo.v1.EchoService/Stream", nil)
			for _, s := range tt.before {
				c.sendText(s)
			}
			c.sendMsg(&demov1.StreamRequest{Count: 3, Size: 4})
			for _, s := range tt.after {
				c.sendText(s)
			}
			for i := range 3 {
				var resp demov1.EchoResponse
				c.recv(&resp)
				if resp.GetSeq() != uint64(i+1) || len(resp.GetPayload()) != 4 {
					t.Errorf("response %d: %v", i, &resp)
				}
			}
			c.end(false, codes.OK, websocket.CloseNormalClosure)
		})
	}
}

func TestWSUnary(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil, bridge.WithResponseMetadata("x-resp-*"))

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		c := env.dial(t, "/wstest.v1.TestService/Unary", nil)
		c.sendMsg(newNote("hello"))
		resp := newNote("")
		c.recv(resp)
		if noteText(resp) != "hello" {
			t.Errorf("response text %q, want hello", noteText(resp))
		}
		if want := map[string][]string{"x-resp-header": {"h1"}}; !mapsEqual(c.headers, want) {
			t.Errorf("headers frame %v, want %v (allow-listed only)", c.headers, want)
		}
		sf := c.end(false, codes.OK, websocket.CloseNormalClosure)
		if want := map[string][]string{"x-resp-trailer": {"t1"}}; !mapsEqual(sf.Trailers, want) {
			t.Errorf("trailers %v, want %v", sf.Trailers, want)
		}
	})

	t.Run("error with details and a long message", func(t *testing.T) {
		t.Parallel()
		c := env.dial(t, "/wstest.v1.TestService/Unary", nil)
		msg := "fail " + strings.Repeat("é", 100) // 205 bytes
		c.sendMsg(newNote(msg))
		sf := c.end(false, codes.FailedPrecondition, 4009)
		if sf.Status.Message != msg {
			t.Errorf("status message %q, want the whole message %q", sf.Status.Message, msg)
		}
		if len(sf.Status.Details) != 1 || !strings.Contains(string(sf.Status.Details[0]), `"@type":"type.googleapis.com/google.rpc.ErrorInfo"`) {
			t.Errorf("details %s, want one ErrorInfo", sf.Status.Details)
		}
	})
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestWSClientStreaming(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	tests := []struct {
		name  string
		texts []string
	}{
		{"three messages", []string{"a", "b", "c"}},
		{"no message", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := env.dial(t, "/wstest.v1.TestService/Collect", nil)
			for _, s := range tt.texts {
				c.sendMsg(newNote(s))
			}
			c.sendText(`{"end":true}`)
			resp := newNote("")
			c.recv(resp)
			if got, want := noteText(resp), strings.Join(tt.texts, ","); got != want || noteCount(resp) != int64(len(tt.texts)) {
				t.Errorf("response %q count %d, want %q count %d", got, noteCount(resp), want, len(tt.texts))
			}
			c.end(false, codes.OK, websocket.CloseNormalClosure)
		})
	}
}

func TestWSErrorMidStream(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	c := env.dial(t, "/demo.v1.EchoService/Stream", nil)
	c.sendMsg(&demov1.StreamRequest{Count: 10, FailAfter: 2, FailCode: int32(codes.ResourceExhausted), FailMessage: "quota gone"})
	for range 2 {
		var resp demov1.EchoResponse
		c.recv(&resp)
	}
	sf := c.end(false, codes.ResourceExhausted, 4008)
	if sf.Status.Message != "quota gone" {
		t.Errorf("status message %q, want %q", sf.Status.Message, "quota gone")
	}
}

func TestWSProtocolViolations(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil, bridge.WithRequestHeaders("authorization", "grpc-timeout", "x-test-*"))
	type frame struct {
		text string
		bin  []byte
	}
	echo := func(text string) frame {
		b, _ := proto.Marshal(&demov1.EchoRequest{Text: text})
		return frame{bin: b}
	}
	slowStream, _ := proto.Marshal(&demov1.StreamRequest{IntervalMs: 60_000})
	chat, _ := proto.Marshal(&demov1.ChatMessage{Room: "r", User: "u"})
	tests := []struct {
		name   string
		path   string
		frames []frame
		want   string // in the status message
	}{
		{"undecodable message", "/demo.v1.EchoService/Echo", []frame{{bin: []byte{0x0a, 0x05, 'h'}}}, "not a demo.v1.EchoRequest"},
		{"invalid UTF-8 in a string field", "/demo.v1.EchoService/Echo", []frame{{bin: []byte{0x0a, 0x01, 0xff}}}, "not a demo.v1.EchoRequest"},
		{"text frame that is not JSON", "/demo.v1.EchoService/Echo", []frame{{text: "hello"}}, "want a JSON object"},
		{"unknown control key", "/demo.v1.EchoService/Echo", []frame{{text: `{"cancel":true}`}}, `unknown key "cancel"`},
		{"end false", "/demo.v1.EchoService/Echo", []frame{{text: `{"end":false}`}}, `"end" must be true`},
		{"metadata and end at once", "/demo.v1.EchoService/Echo", []frame{{text: `{"metadata":{},"end":true}`}}, "separate frames"},
		{"metadata after a message", "/demo.v1.EchoService/Echo", []frame{echo("a"), {text: `{"metadata":{}}`}}, "first frame"},
		{"metadata twice", "/demo.v1.EchoService/Echo", []frame{{text: `{"metadata":{}}`}, {text: `{"metadata":{}}`}}, "first frame"},
		{"message after end", "/demo.v1.ChatService/Chat", []frame{{bin: chat}, {text: `{"end":true}`}, {bin: chat}}, "message after end"},
		{"end twice", "/demo.v1.ChatService/Chat", []frame{{text: `{"end":true}`}, {text: `{"end":true}`}}, "end sent twice"},
		{"second request of a server-streaming method", "/demo.v1.EchoService/Stream", []frame{{bin: slowStream}, {bin: slowStream}}, "exactly one request message"},
		{"end before the request of a server-streaming method", "/demo.v1.EchoService/Stream", []frame{{text: `{"end":true}`}}, "end before the request message"},
		{"metadata value not printable", "/demo.v1.EchoService/Echo", []frame{{text: `{"metadata":{"authorization":["a\u0001b"]}}`}}, "printable ASCII"},
		{"binary metadata not base64", "/demo.v1.EchoService/Echo", []frame{{text: `{"metadata":{"x-test-bin":["!!"]}}`}}, "not base64"},
		{"metadata key not a header name", "/demo.v1.EchoService/Echo", []frame{{text: `{"metadata":{"x test":["v"]}}`}}, "not a valid gRPC metadata key"},
		{"bad grpc-timeout", "/demo.v1.EchoService/Echo", []frame{{text: `{"metadata":{"grpc-timeout":["soon"]}}`}}, "grpc-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := env.dial(t, tt.path, nil)
			for _, f := range tt.frames {
				if f.bin != nil {
					c.sendBinary(f.bin)
				} else {
					c.sendText(f.text)
				}
			}
			sf := c.end(true, codes.InvalidArgument, websocket.ClosePolicyViolation)
			if !strings.Contains(sf.Status.Message, tt.want) {
				t.Errorf("status message %q does not contain %q", sf.Status.Message, tt.want)
			}
		})
	}
}

func TestWSViolationCancelsUpstream(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
	c.sendMsg(newNote("a"))
	ctx := env.heldCall(t)
	c.sendText("not json")
	c.end(true, codes.InvalidArgument, websocket.ClosePolicyViolation)
	wantCancelled(t, ctx)
}

func TestWSReadLimit(t *testing.T) {
	t.Parallel()
	const limit = 64
	env := newWSEnv(t, nil, bridge.WithReadMaxBytes(limit))

	t.Run("message at the limit", func(t *testing.T) {
		t.Parallel()
		c := env.dial(t, "/demo.v1.EchoService/Echo", nil)
		req := &demov1.EchoRequest{Payload: make([]byte, limit-2)} // tag and length: 2 bytes
		if n := proto.Size(req); n != limit {
			t.Fatalf("request is %d bytes, want %d", n, limit)
		}
		c.sendMsg(req)
		var resp demov1.EchoResponse
		c.recv(&resp)
		c.sendText(`{"end":true}`)
		c.end(false, codes.OK, websocket.CloseNormalClosure)
	})
	t.Run("binary frame over the limit", func(t *testing.T) {
		t.Parallel()
		c := env.dial(t, "/demo.v1.EchoService/Echo", nil)
		c.sendMsg(&demov1.EchoRequest{Payload: make([]byte, limit)})
		sf := c.end(false, codes.ResourceExhausted, websocket.CloseMessageTooBig)
		if !strings.Contains(sf.Status.Message, "64 bytes") {
			t.Errorf("status message %q does not name the limit", sf.Status.Message)
		}
	})
	t.Run("text frame over the limit", func(t *testing.T) {
		t.Parallel()
		c := env.dial(t, "/demo.v1.EchoService/Echo", nil)
		c.sendText(`{"metadata":{"authorization":["` + strings.Repeat("t", limit) + `"]}}`)
		c.end(false, codes.ResourceExhausted, websocket.CloseMessageTooBig)
	})
}

func TestWSHandshakeRefused(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil, bridge.WithRequestHeaders("x-test-*"))
	tests := []struct {
		name         string
		path         string
		header       http.Header
		subprotocols []string
		wantHTTP     int
		wantCode     codes.Code
	}{
		{"cross-origin", "/demo.v1.EchoService/Echo", http.Header{"Origin": {"https://evil.example"}}, []string{wsSubprotocol}, http.StatusForbidden, codes.PermissionDenied},
		{"no subprotocol", "/demo.v1.EchoService/Echo", nil, nil, http.StatusBadRequest, codes.InvalidArgument},
		{"other subprotocol", "/demo.v1.EchoService/Echo", nil, []string{"grpc-ws.v2", "chat"}, http.StatusBadRequest, codes.InvalidArgument},
		{"unknown method", "/demo.v1.EchoService/Nope", nil, []string{wsSubprotocol}, http.StatusNotFound, codes.NotFound},
		{"method not exposed", "/grpc.health.v1.Health/Watch", nil, []string{wsSubprotocol}, http.StatusNotFound, codes.NotFound},
		{"bad metadata header", "/demo.v1.EchoService/Echo", http.Header{"X-Test-Bin": {"!!"}}, []string{wsSubprotocol}, http.StatusBadRequest, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, st := env.handshakeError(t, tt.path, tt.header, tt.subprotocols...)
			if got != tt.wantHTTP || st.Code != tt.wantCode || st.Message == "" {
				t.Errorf("refusal HTTP %d %v %q, want HTTP %d %v with a message", got, st.Code, st.Message, tt.wantHTTP, tt.wantCode)
			}
		})
	}

	// Other upgrades are not refused: TestUpgradeIgnoredUnlessWebSocket.
}

func TestWSOrigins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		opts   []bridge.Option
		origin func(env *wsEnv) string
	}{
		{"no Origin: not a browser", nil, func(*wsEnv) string { return "" }},
		{"same origin", nil, func(env *wsEnv) string { return "http://" + env.host }},
		{"listed origin", []bridge.Option{bridge.WithAllowedOrigins("https://app.example")}, func(*wsEnv) string { return "https://app.example" }},
		{"any origin", []bridge.Option{bridge.WithAllowedOrigins("*")}, func(*wsEnv) string { return "https://elsewhere.example" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newWSEnv(t, nil, tt.opts...)
			hdr := http.Header{}
			if o := tt.origin(env); o != "" {
				hdr.Set("Origin", o)
			}
			c := env.dial(t, "/demo.v1.EchoService/Echo", hdr)
			c.sendText(`{"end":true}`)
			c.end(false, codes.OK, websocket.CloseNormalClosure)
		})
	}
}

func TestWSMetadata(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil, bridge.WithRequestHeaders("authorization", "x-test-*"))
	hdr := http.Header{
		"X-Test-Header": {"from-upgrade"},
		"X-Other":       {"not allowed"},
	}
	c := env.dial(t, "/wstest.v1.TestService/Unary", hdr)
	c.sendText(`{"metadata":{
		"Authorization": ["Bearer t0k"],
		"x-test-header": ["from-frame"],
		"x-test-data-bin": ["AAH/"],
		"x-test-unpadded-bin": ["AAH/AA"],
		"x-private": ["dropped"],
		"x-forwarded-for": ["1.2.3.4"]
	}}`)
	c.sendMsg(newNote("md"))
	resp := newNote("")
	c.recv(resp)
	want := []string{
		"x-forwarded-for=127.0.0.1", // set by the bridge, not by the frame
		"x-forwarded-host=" + env.host,
		"authorization=Bearer t0k",
		"x-test-data-bin=0001ff",
		"x-test-header=from-upgrade",
		"x-test-header=from-frame",
		"x-test-unpadded-bin=0001ff00",
	}
	slices.Sort(want)
	if got := noteValues(resp); !slices.Equal(got, want) {
		t.Errorf("backend metadata %q, want %q", got, want)
	}
	c.end(false, codes.OK, websocket.CloseNormalClosure)
}

func TestWSGRPCTimeoutFromMetadataFrame(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
	c.sendText(`{"metadata":{"grpc-timeout":["50m"]}}`)
	c.sendMsg(newNote("a"))
	c.end(true, codes.DeadlineExceeded, 4004)
}

func TestWSCallOpensOnMetadataFrame(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
	// Without a message: a server that speaks first gets its call now.
	c.sendText(`{"metadata":{}}`)
	ctx := env.heldCall(t)
	c.sendText(`{"end":true}`)
	c.end(false, codes.OK, websocket.CloseNormalClosure)
	wantCancelled(t, ctx) // ended, at least
}

func TestWSClientGoneCancelsUpstream(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	open := func(t *testing.T) (*wsClient, context.Context) {
		c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
		c.sendMsg(newNote("a"))
		ctx := env.heldCall(t)
		c.recv(newNote(""))
		return c, ctx
	}

	t.Run("close frame", func(t *testing.T) {
		c, ctx := open(t)
		if err := c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(wsSafetyTimeout)); err != nil {
			t.Fatal(err)
		}
		wantCancelled(t, ctx)
		// The status frame still comes first, then the close frame that
		// answers the client's.
		c.end(false, codes.Canceled, 4001)
	})
	t.Run("connection lost", func(t *testing.T) {
		c, ctx := open(t)
		_ = c.c.NetConn().Close()
		wantCancelled(t, ctx)
	})
}

func TestWSPingTimeoutDropsPeer(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil, bridge.WithPingInterval(50*time.Millisecond), bridge.WithPongTimeout(50*time.Millisecond))
	c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
	pinged := make(chan struct{}, 1)
	c.c.SetPingHandler(func(string) error { // a peer that never answers
		select {
		case pinged <- struct{}{}:
		default:
		}
		return nil
	})
	c.sendMsg(newNote("a"))
	ctx := env.heldCall(t)
	c.end(true, codes.Unavailable, 4014)
	wantCancelled(t, ctx)
	select {
	case <-pinged:
	default:
		t.Error("the bridge dropped the peer without pinging it")
	}
}

func TestWSPingsKeepAnsweringPeer(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil, bridge.WithPingInterval(10*time.Millisecond), bridge.WithPongTimeout(time.Second))
	c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
	const pings = 5
	var n int
	c.c.SetPingHandler(func(data string) error {
		if err := c.c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(wsSafetyTimeout)); err != nil {
			return err
		}
		if n++; n == pings {
			// Only the client's reader runs now: it may write.
			b, _ := proto.Marshal(newNote("after pings"))
			return c.c.WriteMessage(websocket.BinaryMessage, b)
		}
		return nil
	})
	c.sendMsg(newNote("before pings"))
	for _, want := range []string{"before pings", "after pings"} {
		resp := newNote("")
		c.recv(resp)
		if noteText(resp) != want {
			t.Fatalf("echo %q, want %q", noteText(resp), want)
		}
	}
	if n < pings {
		t.Errorf("%d pings, want %d", n, pings)
	}
	c.sendText(`{"end":true}`)
	c.end(false, codes.OK, websocket.CloseNormalClosure)
}

func TestWSAnswersClientPings(t *testing.T) {
	t.Parallel()
	env := newWSEnv(t, nil)
	c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
	var pong string
	c.c.SetPongHandler(func(data string) error {
		pong = data
		return nil
	})
	if err := c.c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(wsSafetyTimeout)); err != nil {
		t.Fatal(err)
	}
	// Pongs are read on the way to data frames: echo until one came.
	for i := 0; pong == "" && i < 100; i++ {
		c.sendMsg(newNote("x"))
		c.recv(newNote(""))
	}
	if pong != "are you there" {
		t.Errorf("pong %q, want the ping's payload", pong)
	}
}

func TestWSShutdownClosesWithGoingAway(t *testing.T) {
	t.Parallel()
	base, shutdown := context.WithCancel(context.Background())
	defer shutdown()
	env := newWSEnv(t, base)
	c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
	c.sendMsg(newNote("a"))
	ctx := env.heldCall(t)
	c.recv(newNote(""))
	shutdown()
	c.end(false, codes.Unavailable, websocket.CloseGoingAway)
	wantCancelled(t, ctx)
}
