package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Panics in a stream's goroutines.
//
// net/http recovers a panic in a handler goroutine, but not in the
// goroutines that a handler starts, and grpc-go recovers none: a panic in
// one of them would end the process and every stream in it. Code that the
// bridge does not control runs there: the backend's
// grpc.ClientConnInterface, the program's [Metrics] and slog handler, a
// listener's connections, a middleware's ResponseWriter, protobuf-go on
// the backend's bytes. So every goroutine the bridge starts for a stream,
// and the handler goroutine's part of a stream, defers recoverStream,
// which ends that one stream with INTERNAL instead.

// errPanicked is the cause of a stream that a panic ended.
var errPanicked = errors.New("bridge: panic")

// recoverStream, deferred in a goroutine of one stream of method, ends
// that stream instead of the process when the goroutine panics: it
// recovers the panic, logs it at Error with its stack, counts it (see
// [PanicMetrics]) and calls end, when not nil, with the INTERNAL status
// that the stream ends with. It must be called by defer itself, not from
// a function that defer calls, for recover to stop the panic.
func (h *Handler) recoverStream(method, transport string, end func(*status.Status)) {
	v := recover()
	if v == nil {
		return
	}
	h.log.LogAttrs(context.Background(), slog.LevelError, "panic in a stream; the stream ends with INTERNAL",
		slog.String(logKeyMethod, method),
		slog.String(logKeyTransport, transport),
		slog.String(logKeyPanic, fmt.Sprint(v)),
		slog.String(logKeyStack, string(debug.Stack())))
	if pm, ok := h.cfg.metrics.(PanicMetrics); ok {
		pm.StreamPanicked(method, transport)
	}
	if end != nil {
		// What went wrong is in the log; the browser learns only that it
		// was the bridge's fault.
		end(status.New(codes.Internal, "internal error in the bridge"))
	}
}

// panicked ends a WebSocket session whose reader or receiver panicked:
// the status frame, then close code 1011 (RFC 6455 section 7.4.1: the
// server met an unexpected condition).
func (s *wsSession) panicked(st *status.Status) {
	s.end(wsEnd{st: st, closeCode: websocket.CloseInternalServerErr})
}
