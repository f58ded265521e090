package bridge

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Attribute keys of the handler's structured logs.
const (
	logKeyMethod      = "method"
	logKeyTransport   = "transport"
	logKeyPeer        = "peer"
	logKeyCode        = "code"
	logKeyMessage     = "message"
	logKeyDuration    = "duration"
	logKeyMessages    = "messages"
	logKeyCloseCode   = "close_code"
	logKeyClientFault = "client_fault"
	logKeyPanic       = "panic" // a recovered panic's value (recoverStream)
	logKeyStack       = "stack" // and its goroutine's stack
	logKeyRequestID   = "request_id"
)

// streamEnd is what the one log line at the end of a stream reports.
type streamEnd struct {
	method, transport string
	st                *status.Status
	closeCode         int  // the WebSocket close code sent; 0 for other transports
	clientFault       bool // the client broke the protocol
	start             time.Time
	messages          int // response messages delivered
}

// logStreamEnd writes the one line of a stream's end: at Warn when the
// backend or the bridge failed (UNKNOWN, INTERNAL, DATA_LOSS), otherwise at
// Info, since OK, a client leaving, a client breaking the protocol, a
// drain hand-off and a limit are all expected endings.
// ctx is the request's context, and peer its RemoteAddr.
func (h *Handler) logStreamEnd(ctx context.Context, peer string, e streamEnd) {
	level := slog.LevelInfo
	switch e.st.Code() {
	case codes.Unknown, codes.Internal, codes.DataLoss:
		level = slog.LevelWarn
	}
	if !h.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String(logKeyMethod, e.method),
		slog.String(logKeyTransport, e.transport),
		slog.String(logKeyPeer, peer),
		slog.String(logKeyCode, e.st.Code().String()),
		slog.String(logKeyMessage, e.st.Message()),
		slog.Duration(logKeyDuration, time.Since(e.start)),
		slog.Int(logKeyMessages, e.messages),
	}
	if e.closeCode != 0 {
		attrs = append(attrs, slog.Int(logKeyCloseCode, e.closeCode))
	}
	if e.clientFault {
		attrs = append(attrs, slog.Bool(logKeyClientFault, true))
	}
	h.log.LogAttrs(context.Background(), level, "stream ended", attrs...)
}
