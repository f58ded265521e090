package bridge_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// TestMaxStreamDurationJitterEveryTransport checks that SSE, WebSocket and
// native gRPC streams all take their maximum duration from the one jitter
// helper: each draws once, from a spread of a tenth of the duration, and
// ends by the shortened limit.
func TestMaxStreamDurationJitterEveryTransport(t *testing.T) {
	t.Parallel()
	const d = 300 * time.Millisecond
	spreads := make(chan time.Duration, 8)
	env := newPTEnv(t, nil, bridge.WithMaxStreamDuration(d), bridge.WithRetryInterval(123*time.Millisecond),
		bridge.WithStreamJitter(func(spread time.Duration) time.Duration {
			spreads <- spread
			return spread // the shortest limit: 270 ms
		}))
	drew := func(transport string) {
		t.Helper()
		select {
		case s := <-spreads:
			if s != d/10 {
				t.Errorf("%s: jitter spread %v, want %v", transport, s, d/10)
			}
		default:
			t.Errorf("%s: the stream's maximum duration drew no jitter", transport)
		}
		if n := len(spreads); n != 0 {
			t.Errorf("%s: %d more draws, want one per stream", transport, n)
		}
	}

	start := time.Now()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, env.url+"/demo.v1.TickerService/Watch?symbol=A&interval_ms=5", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	evs := events(t, resp)
	if last := evs[len(evs)-1]; last.Type != "" || last.Retry != 123*time.Millisecond {
		t.Fatalf("SSE: last block %+v, want the hand-off's lone retry hint", last)
	}
	if el := time.Since(start); el < d-d/10-10*time.Millisecond {
		t.Fatalf("SSE stream ended after %v, before its limit of %v", el, d-d/10)
	}
	drew("SSE")

	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}}).DialContext(t.Context(),
		"ws"+strings.TrimPrefix(env.url, "http")+"/demo.v1.ChatService/Chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, data, err := ws.ReadMessage(); err != nil || !strings.Contains(string(data), "maximum duration") {
		t.Fatalf("WebSocket: %s %v, want the maximum duration's status", data, err)
	}
	drew("WebSocket")

	stream, err := demov1.NewTickerServiceClient(env.conn).Watch(t.Context(), &demov1.WatchRequest{Symbol: "A", IntervalMs: 5})
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = stream.Recv()
	}
	wantStatus(t, err, codes.Unavailable, "the stream reached its maximum duration of 300ms")
	drew("native gRPC")
}
