package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

func TestMetricsAfterKnownTraffic(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := newPromMetrics(reg, "bridge")
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*"), bridge.WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	drain := func(path string, hdr http.Header) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		req.Header = hdr
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	drain("/demo.v1.TickerService/Watch?symbol=A&limit=3&interval_ms=1", http.Header{})
	drain("/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1", http.Header{"Last-Event-Id": {"3"}})
	drain("/demo.v1.EchoService/Stream?count=3&size=10&fail_after=1&fail_code=9", http.Header{})

	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(),
		"ws"+strings.TrimPrefix(srv.URL, "http")+"/demo.v1.EchoService/Echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"a", "bb"} {
		b, _ := proto.Marshal(&demov1.EchoRequest{Text: text})
		if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"end":true}`)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			break // the close frame after the status
		}
	}
	_ = ws.Close()
	// The handler reports the end after the close handshake; wait for it.
	waitFor(t, func() bool {
		return testutil.ToFloat64(m.active.WithLabelValues("demo.v1.EchoService/Echo", "websocket")) == 0
	})

	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"ticker started", testutil.ToFloat64(m.started.WithLabelValues("demo.v1.TickerService/Watch", "sse")), 2},
		{"ticker finished OK", testutil.ToFloat64(m.finished.WithLabelValues("demo.v1.TickerService/Watch", "sse", "OK")), 2},
		{"ticker messages", testutil.ToFloat64(m.messages.WithLabelValues("demo.v1.TickerService/Watch", "sse", "to_client")), 5},
		{"ticker requests", testutil.ToFloat64(m.messages.WithLabelValues("demo.v1.TickerService/Watch", "sse", "from_client")), 2},
		{"ticker resumes", testutil.ToFloat64(m.resumes.WithLabelValues("demo.v1.TickerService/Watch")), 1},
		{"ticker active", testutil.ToFloat64(m.active.WithLabelValues("demo.v1.TickerService/Watch", "sse")), 0},
		{"stream failed", testutil.ToFloat64(m.finished.WithLabelValues("demo.v1.EchoService/Stream", "sse", "FailedPrecondition")), 1},
		{"echo messages in", testutil.ToFloat64(m.messages.WithLabelValues("demo.v1.EchoService/Echo", "websocket", "from_client")), 2},
		{"echo messages out", testutil.ToFloat64(m.messages.WithLabelValues("demo.v1.EchoService/Echo", "websocket", "to_client")), 2},
		{"echo bytes in", testutil.ToFloat64(m.bytes.WithLabelValues("demo.v1.EchoService/Echo", "websocket", "from_client")), 3 + 4},
		{"echo close 1000", testutil.ToFloat64(m.wsCloses.WithLabelValues("demo.v1.EchoService/Echo", "1000")), 1},
		{"echo finished OK", testutil.ToFloat64(m.finished.WithLabelValues("demo.v1.EchoService/Echo", "websocket", "OK")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.firstMessage); n != 3 {
		t.Errorf("first-message histograms: %d series, want 3 (ticker, stream, echo)", n)
	}
}

// waitFor polls cond for up to 10 s; the thing it waits for happens on
// another goroutine right after the client saw the stream end.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
