package bridge_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// endRecorder is a [bridge.Metrics] and a log sink that report how each
// stream ended, as the bridge's metrics and its "stream ended" log line
// see it.
type endRecorder struct {
	metrics chan endMetric
	logs    chan []byte // one JSON log record per Write
}

type endMetric struct {
	code      codes.Code
	closeCode int
}

// endLog is the "stream ended" log line.
type endLog struct {
	Msg         string `json:"msg"`
	Code        string `json:"code"`
	Message     string `json:"message"`
	CloseCode   int    `json:"close_code"`
	ClientFault bool   `json:"client_fault"`
}

func newEndRecorder() *endRecorder {
	return &endRecorder{metrics: make(chan endMetric, 16), logs: make(chan []byte, 64)}
}

// options returns the options that make the bridge report to r.
func (r *endRecorder) options() []bridge.Option {
	log := slog.New(slog.NewJSONHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return []bridge.Option{bridge.WithMetrics(r), bridge.WithLogger(log)}
}

func (r *endRecorder) Write(p []byte) (int, error) {
	r.logs <- bytes.Clone(p)
	return len(p), nil
}

func (r *endRecorder) StreamStarted(string, string, bool) bridge.StreamObserver { return r }
func (r *endRecorder) MessageSent(int)                                          {}
func (r *endRecorder) MessageReceived(int)                                      {}
func (r *endRecorder) StreamEnded(code codes.Code, closeCode int, _ bool) {
	r.metrics <- endMetric{code: code, closeCode: closeCode}
}

// ended waits for the one stream's end, and checks that the metrics and
// the log line both record code and closeCode as a client's fault, with a
// status message that contains msg.
func (r *endRecorder) ended(t *testing.T, code codes.Code, closeCode int, msg string) {
	t.Helper()
	select {
	case m := <-r.metrics:
		if m.code != code || m.closeCode != closeCode {
			t.Errorf("metrics: stream ended %v with close code %d, want %v and %d", m.code, m.closeCode, code, closeCode)
		}
	case <-time.After(wsSafetyTimeout):
		t.Fatal("metrics: the stream did not end")
	}
	for {
		select {
		case b := <-r.logs:
			var l endLog
			if err := json.Unmarshal(b, &l); err != nil {
				t.Fatalf("log line %s: %v", b, err)
			}
			if l.Msg != "stream ended" {
				continue
			}
			if l.Code != code.String() || l.CloseCode != closeCode || !l.ClientFault || !strings.Contains(l.Message, msg) {
				t.Errorf("log line %s, want code %v, close_code %d, client_fault and a message containing %q", b, code, closeCode, msg)
			}
			return
		case <-time.After(wsSafetyTimeout):
			t.Fatal("log: no stream ended line")
		}
	}
}

// clientFrame encodes one client-to-server frame: first is the byte with
// FIN, RSV and the opcode; the payload is masked unless unmasked is set.
// The payload must be shorter than 126 bytes.
func clientFrame(first byte, unmasked bool, payload []byte) []byte {
	if unmasked {
		return append([]byte{first, byte(len(payload))}, payload...)
	}
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	b := append([]byte{first, 0x80 | byte(len(payload))}, key[:]...)
	for i, p := range payload {
		b = append(b, p^key[i%4])
	}
	return b
}

// A frame that breaks RFC 6455's framing makes gorilla/websocket fail the
// connection with 1002 at once; the bridge's logs and metrics say so
// (INVALID_ARGUMENT, close code 1002, the client's fault), not that the
// client left, and the call is cancelled.
func TestWSBadFramingClosesWithProtocolError(t *testing.T) {
	t.Parallel()
	note, err := proto.Marshal(newNote("x"))
	if err != nil {
		t.Fatal(err)
	}
	const (
		fin    = 0x80
		rsv1   = 0x40
		rsv3   = 0x10
		text   = 0x1
		binary = 0x2
		closeF = 0x8
		ping   = 0x9
	)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string // in the status message
		// statusFrame says that the bridge, not gorilla, sends the close:
		// the status frame comes before it.
		statusFrame bool
	}{
		{"reserved bit set", clientFrame(fin|rsv1|binary, false, note), "WebSocket protocol error: RSV1 set", false},
		{"another reserved bit", clientFrame(fin|rsv3|text, false, []byte(`{"end":true}`)), "RSV3 set", false},
		{"unmasked client frame", clientFrame(fin|binary, true, note), "bad MASK", false},
		{"fragmented control frame", clientFrame(ping, false, []byte("p")), "FIN not set on control", false},
		{"unknown opcode", clientFrame(fin|0x3, false, note), "bad opcode 3", false},
		{"continuation without a start", clientFrame(fin, false, note), "continuation after FIN", false},
		{"invalid close code", clientFrame(fin|closeF, false, []byte{0x03, 0xe7}), "bad close code 999", false},
		{"length with the top bit set", []byte{fin | binary, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, "frame length out of range", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := newEndRecorder()
			env := newWSEnv(t, nil, rec.options()...)
			c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
			c.sendMsg(newNote("a"))
			ctx := env.heldCall(t)
			c.recv(newNote(""))
			if _, err := c.c.NetConn().Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			if tc.statusFrame {
				c.end(false, codes.InvalidArgument, websocket.CloseProtocolError)
			} else if code, _ := c.closed(); code != websocket.CloseProtocolError {
				t.Errorf("close code %d, want %d", code, websocket.CloseProtocolError)
			}
			wantCancelled(t, ctx)
			rec.ended(t, codes.InvalidArgument, websocket.CloseProtocolError, tc.want)
		})
	}
}

// A text frame that is not UTF-8 fails the connection with 1007 (RFC 6455
// sections 7.4.1 and 8.1), after a status frame with INVALID_ARGUMENT.
// UTF-8 is a property of the message, not of each frame: a character
// split across two frames is valid.
func TestWSInvalidUTF8ClosesWith1007(t *testing.T) {
	t.Parallel()
	t.Run("one frame", func(t *testing.T) {
		t.Parallel()
		rec := newEndRecorder()
		env := newWSEnv(t, nil, rec.options()...)
		c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
		c.sendText("{\"end\":\xff}")
		sf := c.end(false, codes.InvalidArgument, websocket.CloseInvalidFramePayloadData)
		if !strings.Contains(sf.Status.Message, "not valid UTF-8") {
			t.Errorf("status message %q does not say what is wrong", sf.Status.Message)
		}
		rec.ended(t, codes.InvalidArgument, websocket.CloseInvalidFramePayloadData, "not valid UTF-8")
	})
	t.Run("after the call opened", func(t *testing.T) {
		t.Parallel()
		env := newWSEnv(t, nil)
		c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
		c.sendMsg(newNote("a"))
		ctx := env.heldCall(t)
		c.sendText("\xc3\x28")
		c.end(true, codes.InvalidArgument, websocket.CloseInvalidFramePayloadData)
		wantCancelled(t, ctx)
	})
	t.Run("character split across frames", func(t *testing.T) {
		t.Parallel()
		env := newWSEnv(t, nil)
		c := env.dial(t, "/wstest.v1.TestService/Hold", nil)
		// {"x-é": ...}: valid UTF-8 once joined, so the violation is the
		// key, with 1008, not the encoding.
		msg := []byte(`{"metadata":{"x-` + "\xc3\xa9" + `":["v"]}}`)
		cut := bytes.IndexByte(msg, 0xc3) + 1
		frames := append(clientFrame(0x1, false, msg[:cut]), clientFrame(0x80, false, msg[cut:])...)
		if _, err := c.c.NetConn().Write(frames); err != nil {
			t.Fatal(err)
		}
		sf := c.end(false, codes.InvalidArgument, websocket.ClosePolicyViolation)
		if !strings.Contains(sf.Status.Message, "not a valid gRPC metadata key") {
			t.Errorf("status message %q, want the key's error", sf.Status.Message)
		}
	})
}
