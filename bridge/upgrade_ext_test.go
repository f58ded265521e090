package bridge_test

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// rawGet sends a GET with exactly the header lines given, as curl does, over
// a connection of its own, and returns the response.
func rawGet(t *testing.T, env *sseEnv, path string, headerLines ...string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(env.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(wsSafetyTimeout))
	req := "GET " + path + " HTTP/1.1\r\nHost: bridge\r\nAccept: text/event-stream\r\n" +
		strings.Join(headerLines, "\r\n") + "\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// An upgrade the bridge does not perform is ignored (RFC 9110 section
// 7.8): the request is served as events. Only a request that asks for a
// WebSocket without a complete handshake is refused, with what is missing.
func TestUpgradeIgnoredUnlessWebSocket(t *testing.T) {
	t.Parallel()
	env := newSSEEnv(t)
	const watch = "/demo.v1.TickerService/Watch?symbol=ACME&limit=2&interval_ms=1"
	for _, tc := range []struct {
		name   string
		header []string
	}{
		// What curl --http2 sends on a cleartext URL.
		{"h2c as curl --http2 asks", []string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"}},
		{"unknown protocol", []string{"Connection: upgrade", "Upgrade: foo/2, bar"}},
		{"Upgrade without Connection", []string{"Upgrade: h2c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			evs := events(t, rawGet(t, env, watch, tc.header...))
			if msgs := messages(evs); len(msgs) != 2 {
				t.Fatalf("events %+v, want two ticks", evs)
			}
			if st := decodeStatus(t, lastOfType(t, evs, "end").Data); st.Code != codes.OK {
				t.Fatalf("end %+v, want OK", st)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		header []string
	}{
		{"websocket without Connection: Upgrade", []string{"Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="}},
		{"websocket among others, Connection keep-alive", []string{"Connection: keep-alive", "Upgrade: h2c, WebSocket"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := errorBody(t, rawGet(t, env, watch, tc.header...), http.StatusBadRequest)
			if st.Code != codes.InvalidArgument || !strings.Contains(st.Message, "incomplete WebSocket handshake: send Connection: Upgrade") {
				t.Fatalf("status %+v, want INVALID_ARGUMENT naming the missing Connection: Upgrade", st)
			}
		})
	}
}
