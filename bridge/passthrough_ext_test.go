package bridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// ptSafetyTimeout bounds every wait of these tests, so that a bug fails a
// test instead of hanging it. It is never what a test asserts.
const ptSafetyTimeout = 10 * time.Second

// ptBidi opens a call as a full-duplex stream, whatever the method's kind.
var ptBidi = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// passtest.v1.RawService is served by a backend that never decodes: it
// echoes each request's bytes as the response, so a test can send bytes
// that a bridge decoding and re-encoding messages could not reproduce.
//
//	message Frame { string text = 1; int64 count = 2; repeated string values = 3; }
//	service RawService { rpc Echo(stream Frame) returns (stream Frame); }
var ptTestFile = func() protoreflect.FileDescriptor {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	frame := proto.String(".passtest.v1.Frame")
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("passtest/v1/passtest.proto"),
		Package: proto.String("passtest.v1"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Frame"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("text"), Number: proto.Int32(1), Type: str, Label: optional},
				{Name: proto.String("count"), Number: proto.Int32(2), Type: descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum(), Label: optional},
				{Name: proto.String("values"), Number: proto.Int32(3), Type: str, Label: descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()},
			},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("RawService"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Echo"), InputType: frame, OutputType: frame, ClientStreaming: proto.Bool(true), ServerStreaming: proto.Bool(true)},
			},
		}},
	}
	fd, err := protodesc.NewFile(fdp, new(protoregistry.Files))
	if err != nil {
		panic(err)
	}
	return fd
}()

// ptFiles is the schema of the bridge under test: everything compiled in,
// wstest.v1 and passtest.v1.
var ptFiles = sync.OnceValue(func() *protoregistry.Files {
	files := new(protoregistry.Files)
	wsFiles().RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		_ = files.RegisterFile(fd)
		return true
	})
	if err := files.RegisterFile(ptTestFile); err != nil {
		panic(err)
	}
	return files
})

// rawEchoServer implements passtest.v1.RawService. Every message is
// received as an emptypb.Empty, whose fields are all unknown and so kept
// byte for byte, and sent back as is. It answers with the response header
// x-content-type: the Content-Type the call arrived with.
type rawEchoServer struct {
	received chan []byte // every request's bytes as the backend got them
}

var rawEchoServiceDesc = grpc.ServiceDesc{
	ServiceName: "passtest.v1.RawService",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Echo",
		ServerStreams: true,
		ClientStreams: true,
		Handler:       func(srv any, ss grpc.ServerStream) error { return srv.(*rawEchoServer).echo(ss) },
	}},
}

func (s *rawEchoServer) echo(ss grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	if err := ss.SendHeader(metadata.Pairs("x-content-type", strings.Join(md.Get("content-type"), ","))); err != nil {
		return err
	}
	for {
		m := new(emptypb.Empty)
		err := ss.RecvMsg(m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		select {
		case s.received <- b:
		default:
		}
		if err := ss.SendMsg(m); err != nil {
			return err
		}
	}
}

// bytesCodec lets a test client send and receive a message's bytes as
// they are: a *[]byte each way.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (bytesCodec) Name() string { return "proto" }

// ptMetrics records the native gRPC streams that the bridge reports.
type ptMetrics struct {
	started chan string // method names as their streams start
	ended   chan ptStreamEnd
}

type ptStreamEnd struct {
	method         string
	code           codes.Code
	received, sent int64
}

func newPTMetrics() *ptMetrics {
	return &ptMetrics{started: make(chan string, 64), ended: make(chan ptStreamEnd, 64)}
}

func (m *ptMetrics) StreamStarted(method, transport string, _ bool) bridge.StreamObserver {
	if transport != bridge.TransportGRPC {
		return ptNoObserver{}
	}
	select {
	case m.started <- method:
	default:
	}
	return &ptObserver{m: m, method: method}
}

type ptNoObserver struct{}

func (ptNoObserver) MessageSent(int)                   {}
func (ptNoObserver) MessageReceived(int)               {}
func (ptNoObserver) StreamEnded(codes.Code, int, bool) {}

type ptObserver struct {
	m              *ptMetrics
	method         string
	received, sent atomic.Int64
}

func (o *ptObserver) MessageSent(int)     { o.sent.Add(1) }
func (o *ptObserver) MessageReceived(int) { o.received.Add(1) }
func (o *ptObserver) StreamEnded(code codes.Code, _ int, _ bool) {
	select {
	case o.m.ended <- ptStreamEnd{method: o.method, code: code, received: o.received.Load(), sent: o.sent.Load()}:
	default:
	}
}

// ptEnv is a bridge served over HTTP/1.1 and cleartext HTTP/2 (h2c with
// prior knowledge, as gRPC clients speak it), in front of an in-memory
// backend, with a gRPC client connected to the bridge.
type ptEnv struct {
	handler *bridge.Handler
	conn    *grpc.ClientConn // to the bridge
	url     string           // http://host:port
	addr    string           // host:port
	inspect *bridgetest.InspectServer
	test    *wsTestService
	raw     *rawEchoServer
	metrics *ptMetrics
}

// newPTEnv starts a bridge that exposes the patterns (by default
// everything the backend serves) with the options.
func newPTEnv(t *testing.T, expose []string, opts ...bridge.Option) *ptEnv {
	t.Helper()
	env := &ptEnv{
		inspect: bridgetest.NewInspectServer(),
		test:    &wsTestService{held: make(chan context.Context, 16)},
		raw:     &rawEchoServer{received: make(chan []byte, 16)},
		metrics: newPTMetrics(),
	}
	backend := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		testv1.RegisterInspectServiceServer(s, env.inspect)
		s.RegisterService(&wsTestServiceDesc, env.test)
		s.RegisterService(&rawEchoServiceDesc, env.raw)
	})
	if expose == nil {
		expose = []string{"demo.v1.*", "bridgetest.v1.*", "wstest.v1.*", "passtest.v1.*"}
	}
	all := append([]bridge.Option{
		bridge.WithBackend(backend),
		bridge.WithFiles(ptFiles()),
		bridge.WithExpose(expose...),
		bridge.WithMetrics(env.metrics),
	}, opts...)
	h, err := bridge.NewHandler(all...)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	env.handler = h
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	env.url, env.addr = srv.URL, srv.Listener.Addr().String()
	env.conn, err = grpc.NewClient(env.addr, grpcInsecure())
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the client goes before the server closes.
	t.Cleanup(func() { _ = env.conn.Close() })
	return env
}

// ended waits for the bridge to report the end of a stream.
func (e *ptEnv) ended(t *testing.T) ptStreamEnd {
	t.Helper()
	select {
	case end := <-e.metrics.ended:
		return end
	case <-time.After(ptSafetyTimeout):
		t.Fatal("the bridge did not report the end of the stream")
		return ptStreamEnd{}
	}
}

// started waits for the bridge to start proxying a call.
func (e *ptEnv) started(t *testing.T) string {
	t.Helper()
	select {
	case m := <-e.metrics.started:
		return m
	case <-time.After(ptSafetyTimeout):
		t.Fatal("the bridge did not start the call")
		return ""
	}
}

// heldCall waits for the Hold call that the bridge opened.
func (e *ptEnv) heldCall(t *testing.T) context.Context {
	t.Helper()
	select {
	case ctx := <-e.test.held:
		return ctx
	case <-time.After(ptSafetyTimeout):
		t.Fatal("the Hold call did not start")
		return nil
	}
}

// wantStatus checks that err is the status code with the message.
func wantStatus(t *testing.T, err error, code codes.Code, msg string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || msg != "" && st.Message() != msg {
		t.Fatalf("error %v, want status %s %q", err, code, msg)
	}
	return st
}

func TestGRPCPassThroughUnary(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	client := testv1.NewInspectServiceClient(env.conn)

	t.Run("metadata", func(t *testing.T) {
		// No allow-list applies: every custom key reaches the backend,
		// binary values and cookies included; grpc-* keys of the transport
		// do not, trace context does.
		ctx := metadata.AppendToOutgoingContext(t.Context(),
			"x-custom", "v1",
			"x-custom", "v2",
			"authorization", "Bearer t",
			"cookie", "c=1",
			"x-data-bin", "\x00\x01\x02",
			"x-forwarded-for", "10.0.0.1",
			"grpc-trace-bin", "trace",
			"grpc-custom", "dropped",
		)
		req := &testv1.InspectRequest{Name: "n", Tags: []string{"a", "b"}, Labels: map[string]string{"k": "v"}}
		resp, err := client.InspectOnce(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(resp.GetRequest(), req) {
			t.Errorf("backend got request %v, want %v", resp.GetRequest(), req)
		}
		md := resp.GetMetadata()
		want := map[string]string{
			"x-custom":         "v1, v2",
			"authorization":    "Bearer t",
			"cookie":           "c=1",
			"x-data-bin":       "\x00\x01\x02",
			"x-forwarded-for":  "10.0.0.1, 127.0.0.1",
			"x-forwarded-host": env.addr,
			"grpc-trace-bin":   "trace",
			"content-type":     "application/grpc", // bare stays bare
		}
		for k, v := range want {
			if md[k] != v {
				t.Errorf("backend metadata %s = %q, want %q", k, md[k], v)
			}
		}
		if v, ok := md["grpc-custom"]; ok {
			t.Errorf("backend metadata grpc-custom = %q, want it dropped (grpc-* keys are the transport's)", v)
		}
		if end := env.ended(t); end.method != "bridgetest.v1.InspectService/InspectOnce" || end.code != codes.OK || end.received != 1 || end.sent != 1 {
			t.Errorf("metrics %+v, want InspectOnce OK with one message each way", end)
		}
	})

	t.Run("status", func(t *testing.T) {
		_, err := client.InspectOnce(t.Context(), &testv1.InspectRequest{FailCode: int32(codes.FailedPrecondition)})
		wantStatus(t, err, codes.FailedPrecondition, "inspect: failing with FailedPrecondition as asked")
		if end := env.ended(t); end.code != codes.FailedPrecondition {
			t.Errorf("metrics %+v, want FailedPrecondition", end)
		}
	})

	t.Run("headers and trailers", func(t *testing.T) {
		var hdr, trl metadata.MD
		out := newNote("")
		if err := env.conn.Invoke(t.Context(), "/wstest.v1.TestService/Unary", newNote("hi"), out, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
			t.Fatal(err)
		}
		if noteText(out) != "hi" {
			t.Errorf("response text %q, want hi", noteText(out))
		}
		// Again no allow-list: x-private passes too.
		if !slices.Equal(hdr.Get("x-resp-header"), []string{"h1"}) || !slices.Equal(hdr.Get("x-private"), []string{"p"}) {
			t.Errorf("response headers %v, want x-resp-header h1 and x-private p", hdr)
		}
		if !slices.Equal(trl.Get("x-resp-trailer"), []string{"t1"}) {
			t.Errorf("trailers %v, want x-resp-trailer t1", trl)
		}
		env.ended(t)
	})

	t.Run("status details", func(t *testing.T) {
		var trl metadata.MD
		err := env.conn.Invoke(t.Context(), "/wstest.v1.TestService/Unary", newNote("fail: é"), newNote(""), grpc.Trailer(&trl))
		st := wantStatus(t, err, codes.FailedPrecondition, "fail: é")
		details := st.Details()
		if len(details) != 1 {
			t.Fatalf("details %v, want one ErrorInfo", details)
		}
		if info, ok := details[0].(*errdetails.ErrorInfo); !ok || info.GetReason() != "TEST" {
			t.Errorf("detail %v, want ErrorInfo with reason TEST", details[0])
		}
		if !slices.Equal(trl.Get("x-resp-trailer"), []string{"t1"}) {
			t.Errorf("trailers %v, want x-resp-trailer t1 with the error", trl)
		}
		env.ended(t)
	})
}

func TestGRPCPassThroughServerStreaming(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)

	t.Run("inspect", func(t *testing.T) {
		t.Parallel()
		stream, err := testv1.NewInspectServiceClient(env.conn).Inspect(t.Context(), &testv1.InspectRequest{
			Count:            3,
			ResponseHeaders:  map[string]string{"x-h": "1"},
			ResponseTrailers: map[string]string{"x-t": "2"},
		})
		if err != nil {
			t.Fatal(err)
		}
		hdr, err := stream.Header()
		if err != nil || !slices.Equal(hdr.Get("x-h"), []string{"1"}) {
			t.Fatalf("headers %v %v, want x-h 1", hdr, err)
		}
		for i := range 3 {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			if resp.GetSeq() != uint64(i+1) {
				t.Errorf("response %d has seq %d", i, resp.GetSeq())
			}
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after 3 responses: %v, want io.EOF", err)
		}
		if trl := stream.Trailer(); !slices.Equal(trl.Get("x-t"), []string{"2"}) {
			t.Errorf("trailers %v, want x-t 2", trl)
		}
	})

	t.Run("ticker", func(t *testing.T) {
		t.Parallel()
		stream, err := demov1.NewTickerServiceClient(env.conn).Watch(t.Context(), &demov1.WatchRequest{Symbol: "ACME", IntervalMs: 1, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			tick, err := stream.Recv()
			if err != nil {
				t.Fatalf("tick %d: %v", i, err)
			}
			if tick.GetSeq() != uint64(i+1) || tick.GetSymbol() != "ACME" {
				t.Errorf("tick %d: %v", i, tick)
			}
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after the limit: %v, want io.EOF", err)
		}
	})

	t.Run("error mid-stream", func(t *testing.T) {
		t.Parallel()
		stream, err := demov1.NewEchoServiceClient(env.conn).Stream(t.Context(), &demov1.StreamRequest{
			Count: 10, FailAfter: 2, FailCode: int32(codes.ResourceExhausted), FailMessage: "quota gone",
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
		}
		_, err = stream.Recv()
		wantStatus(t, err, codes.ResourceExhausted, "quota gone")
	})

	t.Run("invalid request", func(t *testing.T) {
		t.Parallel()
		stream, err := demov1.NewTickerServiceClient(env.conn).Watch(t.Context(), &demov1.WatchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantStatus(t, err, codes.InvalidArgument, "")
	})
}

func TestGRPCPassThroughBidi(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)

	t.Run("echo", func(t *testing.T) {
		t.Parallel()
		stream, err := demov1.NewEchoServiceClient(env.conn).Echo(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// One message at a time: each response proves the request went
		// through before the client half-closed.
		for i, text := range []string{"a", "b", "c"} {
			if err := stream.Send(&demov1.EchoRequest{Text: text, Payload: []byte{byte(i)}}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if want := (&demov1.EchoResponse{Text: text, Payload: []byte{byte(i)}, Seq: uint64(i + 1)}); !proto.Equal(resp, want) {
				t.Errorf("response %v, want %v", resp, want)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after the half-close: %v, want io.EOF", err)
		}
	})

	t.Run("chat", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		chat := demov1.NewChatServiceClient(env.conn)
		ann, err := chat.Chat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bob, err := chat.Chat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := func(s grpc.BidiStreamingClient[demov1.ChatMessage, demov1.ChatMessage], user, text string) {
			t.Helper()
			m, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m.GetRoom() != "lobby" || m.GetUser() != user || m.GetText() != text || m.GetTime() == nil {
				t.Fatalf("got %v, want %s: %s in lobby with a time", m, user, text)
			}
		}
		send := func(s grpc.BidiStreamingClient[demov1.ChatMessage, demov1.ChatMessage], user, text string) {
			t.Helper()
			if err := s.Send(&demov1.ChatMessage{Room: "lobby", User: user, Text: text}); err != nil {
				t.Fatal(err)
			}
		}
		// Each step waits for what proves the previous one took effect: a
		// stream receives its own message only after it joined the room.
		send(ann, "ann", "a1")
		want(ann, "ann", "a1")
		send(bob, "bob", "b1")
		want(bob, "bob", "b1")
		want(ann, "bob", "b1")
		// A half-close reaches the backend as one and does not end the
		// call: bob keeps receiving.
		if err := bob.CloseSend(); err != nil {
			t.Fatal(err)
		}
		send(ann, "ann", "a2")
		want(ann, "ann", "a2")
		want(bob, "ann", "a2")
	})
}

func TestGRPCPassThroughClientStreaming(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	for _, texts := range [][]string{{"a", "b", "c"}, nil} {
		stream, err := env.conn.NewStream(t.Context(), ptBidi, "/wstest.v1.TestService/Collect")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range texts {
			if err := stream.SendMsg(newNote(s)); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		resp := newNote("")
		if err := stream.RecvMsg(resp); err != nil {
			t.Fatal(err)
		}
		if got, want := noteText(resp), strings.Join(texts, ","); got != want || noteCount(resp) != int64(len(texts)) {
			t.Errorf("response %q count %d, want %q count %d", got, noteCount(resp), want, len(texts))
		}
		if err := stream.RecvMsg(newNote("")); err != io.EOF {
			t.Fatalf("after the response: %v, want io.EOF", err)
		}
		if end := env.ended(t); end.code != codes.OK || end.received != int64(len(texts)) || end.sent != 1 {
			t.Errorf("metrics %+v, want OK with %d messages in and one out", end, len(texts))
		}
	}
}

func TestGRPCPassThroughIsByteExact(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	// A passtest.v1.Frame that no protobuf library would write: fields out
	// of order, text that is not UTF-8 (a bridge decoding the message would
	// reject it), count as an overlong varint, and field 99, which the
	// schema does not know.
	odd := []byte{
		0x1a, 0x01, 'b', // values = "b"
		0x0a, 0x02, 0xff, 0xfe, // text = invalid UTF-8
		0x10, 0x81, 0x80, 0x80, 0x00, // count = 1 in four bytes
		0x98, 0x06, 0x07, // field 99 = 7
	}
	stream, err := env.conn.NewStream(t.Context(), ptBidi, "/passtest.v1.RawService/Echo", grpc.ForceCodecV2(bytesCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range [][]byte{odd, {}, bytes.Repeat(odd, 5000)} {
		if err := stream.SendMsg(&msg); err != nil {
			t.Fatal(err)
		}
		var got []byte
		if err := stream.RecvMsg(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Errorf("response % x, want the request's bytes % x", truncateBytes(got), truncateBytes(msg))
		}
		select {
		case b := <-env.raw.received:
			if !bytes.Equal(b, msg) {
				t.Errorf("backend received % x, want % x", truncateBytes(b), truncateBytes(msg))
			}
		case <-time.After(ptSafetyTimeout):
			t.Fatal("the backend did not report the request")
		}
	}
	// The caller's codec reaches the backend: the client's content-subtype
	// is proto, so its Content-Type is application/grpc+proto.
	hdr, err := stream.Header()
	if err != nil || !slices.Equal(hdr.Get("x-content-type"), []string{"application/grpc+proto"}) {
		t.Errorf("backend saw Content-Type %v (%v), want application/grpc+proto", hdr.Get("x-content-type"), err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var rest []byte
	if err := stream.RecvMsg(&rest); err != io.EOF {
		t.Fatalf("after the half-close: %v, want io.EOF", err)
	}
}

func truncateBytes(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

func TestGRPCPassThroughDeadline(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	// Connect both hops first, so that the deadline is spent on the call.
	if _, err := testv1.NewInspectServiceClient(env.conn).InspectOnce(t.Context(), &testv1.InspectRequest{}); err != nil {
		t.Fatal(err)
	}
	env.ended(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	stream, err := env.conn.NewStream(ctx, ptBidi, "/wstest.v1.TestService/Hold")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(newNote("x")); err != nil {
		t.Fatal(err)
	}
	backend := env.heldCall(t)
	// The deadline itself travels, not just the cancellation.
	if d, ok := backend.Deadline(); !ok || time.Until(d) > 50*time.Millisecond {
		t.Errorf("backend deadline %v (set: %v), want one within the client's 50 ms", d, ok)
	}
	for {
		if err = stream.RecvMsg(newNote("")); err != nil {
			break
		}
	}
	wantStatus(t, err, codes.DeadlineExceeded, "")
	select {
	case <-backend.Done():
	case <-time.After(ptSafetyTimeout):
		t.Fatal("the backend call did not end at the deadline")
	}
	env.ended(t)
}

func TestGRPCPassThroughCancel(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := env.conn.NewStream(ctx, ptBidi, "/wstest.v1.TestService/Hold")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(newNote("x")); err != nil {
		t.Fatal(err)
	}
	echo := newNote("")
	if err := stream.RecvMsg(echo); err != nil || noteText(echo) != "x" {
		t.Fatalf("echo %q %v, want x", noteText(echo), err)
	}
	backend := env.heldCall(t)
	cancel()
	select {
	case <-backend.Done():
	case <-time.After(ptSafetyTimeout):
		t.Fatal("the backend call was not cancelled")
	}
	if end := env.ended(t); end.code != codes.Canceled {
		t.Errorf("metrics %+v, want Canceled", end)
	}
}

func TestGRPCPassThroughUnexposedMethod(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, []string{"demo.v1.TickerService"})
	for _, path := range []string{
		"/demo.v1.EchoService/Echo",       // served by the backend, not exposed
		"/no.such.v1.Service/Method",      // nowhere
		"/demo.v1.TickerService/NoMethod", // an exposed service's unknown method
	} {
		stream, err := env.conn.NewStream(t.Context(), ptBidi, path)
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.CloseSend()
		err = stream.RecvMsg(newNote(""))
		wantStatus(t, err, codes.Unimplemented, "unknown method "+path)
	}
	// An exposed method works next to them.
	stream, err := demov1.NewTickerServiceClient(env.conn).Watch(t.Context(), &demov1.WatchRequest{Symbol: "A", IntervalMs: 1, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
}

func TestGRPCPassThroughMessageLimit(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil, bridge.WithReadMaxBytes(1024))

	t.Run("request", func(t *testing.T) {
		t.Parallel()
		stream, err := demov1.NewEchoServiceClient(env.conn).Echo(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&demov1.EchoRequest{Payload: make([]byte, 512)}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("a message under the limit: %v", err)
		}
		if err := stream.Send(&demov1.EchoRequest{Payload: make([]byte, 2048)}); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantStatus(t, err, codes.ResourceExhausted, "")
	})

	t.Run("response", func(t *testing.T) {
		t.Parallel()
		stream, err := demov1.NewEchoServiceClient(env.conn).Stream(t.Context(), &demov1.StreamRequest{Count: 2, Size: 2048})
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantStatus(t, err, codes.ResourceExhausted, "")
	})
}

func TestGRPCPassThroughNeedsHTTP2(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	tests := []struct {
		name        string
		protocols   *http.Protocols // nil: HTTP/1.1
		contentType string
		wantHTTP    int
		wantMessage string
	}{
		{"HTTP/1.1", nil, "application/grpc", http.StatusHTTPVersionNotSupported, "native gRPC needs HTTP/2"},
		{"HTTP/1.1 with a codec", nil, "application/grpc+proto", http.StatusHTTPVersionNotSupported, "native gRPC needs HTTP/2"},
		{"gRPC-Web", h2c, "application/grpc-web+proto", http.StatusUnsupportedMediaType, "gRPC-Web is not served"},
		{"gRPC-Web over HTTP/1.1", nil, "application/grpc-web-text", http.StatusUnsupportedMediaType, "gRPC-Web is not served"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := &http.Transport{Protocols: tt.protocols}
			defer tr.CloseIdleConnections()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, env.url+"/demo.v1.EchoService/Echo", strings.NewReader("\x00\x00\x00\x00\x00"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tt.contentType)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st struct {
				Code    codes.Code `json:"code"`
				Message string     `json:"message"`
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantHTTP || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("HTTP %d %s %q, want %d with a JSON status", resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.wantHTTP)
			}
			if err := json.Unmarshal(body, &st); err != nil || st.Code != codes.InvalidArgument || !strings.Contains(st.Message, tt.wantMessage) {
				t.Errorf("status %s (%v), want INVALID_ARGUMENT saying %q", body, err, tt.wantMessage)
			}
		})
	}
}

func TestGRPCPassThroughHealthAndDrain(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	health := healthpb.NewHealthClient(env.conn)
	ctx := t.Context()

	if resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check %v %v, want SERVING", resp, err)
	}
	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch %v %v, want SERVING", resp, err)
	}

	// A live server stream, and a client-streaming call in progress.
	ticker, err := demov1.NewTickerServiceClient(env.conn).Watch(ctx, &demov1.WatchRequest{Symbol: "ACME", IntervalMs: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ticker.Recv(); err != nil {
		t.Fatal(err)
	}
	if m := env.started(t); m != "demo.v1.TickerService/Watch" {
		t.Fatalf("started %s, want the ticker", m)
	}
	collect, err := env.conn.NewStream(ctx, ptBidi, "/wstest.v1.TestService/Collect")
	if err != nil {
		t.Fatal(err)
	}
	if err := collect.SendMsg(newNote("before")); err != nil {
		t.Fatal(err)
	}
	if m := env.started(t); m != "wstest.v1.TestService/Collect" {
		t.Fatalf("started %s, want Collect", m)
	}

	// A bidi stream whose caller keeps its side open: at the drain the
	// bridge ends the call while the caller could still send.
	chat, err := demov1.NewChatServiceClient(env.conn).Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Send(&demov1.ChatMessage{Room: "r", User: "u", Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Recv(); err != nil {
		t.Fatal(err)
	}
	if m := env.started(t); m != "demo.v1.ChatService/Chat" {
		t.Fatalf("started %s, want Chat", m)
	}

	shutdownCtx, cancel := context.WithTimeout(ctx, ptSafetyTimeout)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- env.handler.Shutdown(shutdownCtx) }()

	// The watch sees NOT_SERVING, then ends.
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch during the drain: %v %v, want NOT_SERVING", resp, err)
	}
	_, err = watch.Recv()
	wantStatus(t, err, codes.Unavailable, "the bridge is shutting down")

	// The server stream ends with UNAVAILABLE.
	for {
		if _, err = ticker.Recv(); err != nil {
			break
		}
	}
	wantStatus(t, err, codes.Unavailable, "the bridge is shutting down")

	_, err = chat.Recv()
	wantStatus(t, err, codes.Unavailable, "the bridge is shutting down")

	// The client-streaming call may finish, and Shutdown waits for it.
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with a call still live", err)
	case <-time.After(20 * time.Millisecond):
	}
	if err := collect.SendMsg(newNote("during")); err != nil {
		t.Fatal(err)
	}
	if err := collect.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resp := newNote("")
	if err := collect.RecvMsg(resp); err != nil || noteText(resp) != "before,during" {
		t.Fatalf("Collect during the drain: %q %v, want before,during", noteText(resp), err)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v, want nil once every call ended", err)
	}

	// After the drain: NOT_SERVING, and new calls are refused as transient.
	if resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check after the drain: %v %v, want NOT_SERVING", resp, err)
	}
	_, err = testv1.NewInspectServiceClient(env.conn).InspectOnce(ctx, &testv1.InspectRequest{})
	wantStatus(t, err, codes.Unavailable, "the bridge is shutting down")
}

func TestGRPCPassThroughMaxStreamDuration(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil, bridge.WithMaxStreamDuration(50*time.Millisecond))
	// A unary call is not cut.
	if _, err := testv1.NewInspectServiceClient(env.conn).InspectOnce(t.Context(), &testv1.InspectRequest{}); err != nil {
		t.Fatal(err)
	}
	stream, err := demov1.NewTickerServiceClient(env.conn).Watch(t.Context(), &demov1.WatchRequest{Symbol: "ACME", IntervalMs: 5})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	wantStatus(t, err, codes.Unavailable, "the stream reached its maximum duration of 50ms")
}

// The bridge's address is all a gRPC client needs: the same port serves
// browsers.
func TestGRPCPassThroughSharesThePort(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil)
	if _, err := testv1.NewInspectServiceClient(env.conn).InspectOnce(t.Context(), &testv1.InspectRequest{}); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, env.url+"/bridgetest.v1.InspectService/InspectOnce?name=x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream") // a unary method answers plain JSON otherwise
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE on the same port: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
