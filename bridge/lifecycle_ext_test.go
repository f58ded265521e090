package bridge_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

func TestShutdownDrainsStreams(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t, bridge.WithRetryInterval(1234*time.Millisecond))

	// A live SSE stream, past its first messages.
	sse := env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=ACME&interval_ms=5", nil, "")
	stream := bridgetest.NewSSEReader(sse.Body)
	for seen := 0; seen < 2; {
		ev, err := stream.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "message" {
			seen++
		}
	}

	// A live WebSocket in a chat room.
	wsURL := "ws" + strings.TrimPrefix(env.url, "http") + "/demo.v1.ChatService/Chat"
	dialer := websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}
	ws, _, err := dialer.DialContext(t.Context(), wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	join, _ := proto.Marshal(&demov1.ChatMessage{Room: "r", User: "u"})
	if err := ws.WriteMessage(websocket.BinaryMessage, join); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- env.handler.Shutdown(ctx) }()

	// SSE: a retry hint, then the end of the response, with no end event,
	// so that EventSource reconnects (elsewhere) with Last-Event-ID.
	var last bridgetest.Event
	for {
		ev, err := stream.Next()
		if err != nil {
			break // io.EOF: the response ended
		}
		if ev.Type == "end" || ev.Type == "error" {
			t.Fatalf("draining SSE stream got an %s event; want only a retry hint", ev.Type)
		}
		last = ev
	}
	if last.Retry != 1234*time.Millisecond || last.Type != "" {
		t.Fatalf("last block %+v, want a lone retry: 1234", last)
	}

	// WebSocket: status UNAVAILABLE, then close 1001.
	typ, data, err := ws.ReadMessage()
	if err != nil || typ != websocket.TextMessage {
		t.Fatalf("frame %d %q %v, want the status frame", typ, data, err)
	}
	var frame struct {
		Status struct {
			Code codes.Code `json:"code"`
		} `json:"status"`
	}
	if err := json.Unmarshal(data, &frame); err != nil || frame.Status.Code != codes.Unavailable {
		t.Fatalf("status frame %s (%v), want UNAVAILABLE", data, err)
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after the status: %v, want close 1001", err)
	}

	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v, want nil once every stream ended", err)
	}

	// New streams are refused as transient: SSE keeps the browser retrying,
	// a WebSocket handshake gets 503.
	evs := events(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=ACME", nil, ""))
	if len(evs) != 2 || evs[1].Type != "error" || evs[1].Retry != 1234*time.Millisecond {
		t.Fatalf("SSE during drain: %+v, want retry then a retry-hinted error", evs)
	}
	if st := decodeStatus(t, evs[1].Data); st.Code != codes.Unavailable {
		t.Fatalf("SSE during drain: status %+v", st)
	}
	_, resp, err := dialer.DialContext(t.Context(), wsURL, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("WebSocket during drain: %v, %v; want a 503 refusal", err, resp)
	}
}

func TestShutdownHonoursContext(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	// A WebSocket whose client never answers the close handshake keeps the
	// session open for the pong timeout, longer than this context.
	wsURL := "ws" + strings.TrimPrefix(env.url, "http") + "/demo.v1.ChatService/Chat"
	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(), wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := env.handler.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
}

// holdSSE opens a stream that the backend holds open without a message,
// and returns once the bridge has committed it (the first heartbeat).
func holdSSE(t *testing.T, env *sseEnv, header http.Header) {
	t.Helper()
	resp := env.do(t, http.MethodGet, "/bridgetest.v1.InspectService/Inspect?hold=true", header, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("held stream: HTTP %d", resp.StatusCode)
	}
	if _, err := bridgetest.NewSSEReader(resp.Body).Next(); err != nil {
		t.Fatal(err)
	}
}

func TestStreamLimits(t *testing.T) {
	t.Parallel()
	t.Run("per client", func(t *testing.T) {
		t.Parallel()
		env := newSSEEnv(t, bridge.WithMaxStreamsPerClient(1), bridge.WithHeartbeatInterval(10*time.Millisecond))
		holdSSE(t, env, nil)
		st := errorBody(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A", nil, ""), http.StatusTooManyRequests)
		if st.Code != codes.ResourceExhausted || st.Message != "this client is at its limit of 1 concurrent streams" {
			t.Fatalf("SSE over the client limit: %+v", st)
		}
		_, resp, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(),
			"ws"+strings.TrimPrefix(env.url, "http")+"/demo.v1.ChatService/Chat", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("WebSocket over the client limit: %v %v, want 429 before the upgrade", err, resp)
		}
	})
	t.Run("per client behind a trusted proxy", func(t *testing.T) {
		t.Parallel()
		env := newSSEEnv(t, bridge.WithMaxStreamsPerClient(1), bridge.WithHeartbeatInterval(10*time.Millisecond),
			bridge.WithTrustedProxies(netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")))
		holdSSE(t, env, http.Header{"X-Forwarded-For": {"203.0.113.7, 10.1.2.3"}})
		// Another client behind the same proxy is not affected...
		holdSSE(t, env, http.Header{"X-Forwarded-For": {"203.0.113.8"}})
		// ...but the same client through another proxy hop is.
		st := errorBody(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A",
			http.Header{"X-Forwarded-For": {"203.0.113.7"}}, ""), http.StatusTooManyRequests)
		if st.Code != codes.ResourceExhausted {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("total", func(t *testing.T) {
		t.Parallel()
		env := newSSEEnv(t, bridge.WithMaxStreams(1), bridge.WithHeartbeatInterval(10*time.Millisecond))
		holdSSE(t, env, nil)
		evs := events(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A", nil, ""))
		if len(evs) != 2 || evs[1].Type != "error" || evs[1].Retry == 0 {
			t.Fatalf("SSE over the total limit: %+v, want a retry-hinted error", evs)
		}
		if st := decodeStatus(t, evs[1].Data); st.Code != codes.Unavailable || st.Message != "the bridge is at its limit of 1 concurrent streams" {
			t.Fatalf("status %+v", st)
		}
		_, resp, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(),
			"ws"+strings.TrimPrefix(env.url, "http")+"/demo.v1.ChatService/Chat", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("WebSocket over the total limit: %v %v, want 503 before the upgrade", err, resp)
		}
	})
}

func TestMaxStreamDuration(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t, bridge.WithMaxStreamDuration(100*time.Millisecond), bridge.WithRetryInterval(321*time.Millisecond))
	evs := events(t, env.do(t, http.MethodGet, "/demo.v1.TickerService/Watch?symbol=A&interval_ms=5", nil, ""))
	last := evs[len(evs)-1]
	if len(messages(evs)) == 0 || last.Type != "" || last.Retry != 321*time.Millisecond {
		t.Fatalf("SSE past its maximum duration: last block %+v after %d messages, want a lone retry hint", last, len(messages(evs)))
	}

	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(),
		"ws"+strings.TrimPrefix(env.url, "http")+"/demo.v1.ChatService/Chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, data, err := ws.ReadMessage()
	if err != nil || !strings.Contains(string(data), `"code":14`) || !strings.Contains(string(data), "maximum duration") {
		t.Fatalf("WebSocket past its maximum duration: %s %v, want an UNAVAILABLE status", data, err)
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, 4014) {
		t.Fatalf("close: %v, want 4014", err)
	}
}
