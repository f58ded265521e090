package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

func TestTracingContinuesTheBrowsersTrace(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tr := newTracing(provider, provider.Shutdown)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := demo.NewServer()
	testv1.RegisterInspectServiceServer(backend, bridgetest.NewInspectServer())
	go func() { _ = backend.Serve(lis) }()
	t.Cleanup(backend.Stop)
	conn, err := dialBackend(BackendConfig{Target: lis.Addr().String()}, tr.dialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*", "bridgetest.v1.*"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tr.wrapHTTP(h))
	defer srv.Close()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/bridgetest.v1.InspectService/Inspect", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var got *testv1.InspectResponse
	r := bridgetest.NewSSEReader(strings.NewReader(string(body)))
	for ev, err := r.Next(); err == nil; ev, err = r.Next() {
		if ev.Type == "message" {
			got = &testv1.InspectResponse{}
			if err := protojson.Unmarshal([]byte(ev.Data), got); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got == nil {
		t.Fatalf("no message in %s", body)
	}
	parent := got.GetMetadata()["traceparent"]
	if !strings.HasPrefix(parent, "00-"+traceID+"-") || strings.Contains(parent, "00f067aa0ba902b7") {
		t.Fatalf("backend traceparent %q, want the browser's trace with the bridge's client span", parent)
	}

	// WebSockets still upgrade through the tracing wrapper.
	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(),
		"ws"+strings.TrimPrefix(srv.URL, "http")+"/demo.v1.EchoService/Echo", nil)
	if err != nil {
		t.Fatalf("WebSocket through the tracing wrapper: %v", err)
	}
	_ = ws.Close()

	if err := provider.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var server, client bool
	for _, s := range spans.Ended() {
		if s.SpanContext().TraceID().String() != traceID {
			continue
		}
		switch s.Name() {
		case "bridge GET":
			server = true
		case "bridgetest.v1.InspectService/Inspect":
			client = true
		}
	}
	if !server || !client {
		t.Fatalf("spans of the browser's trace: server %v, client %v; want both", server, client)
	}
}
