package bridge

import (
	"log/slog"
	"net/http"
	"slices"
)

// Session fallback reasons: why a client left the WebSocket carrier, or the
// event stream for polling. Only the browser knows, so it says so with
// ?fallback= on the POST that creates the session, or on the first
// downstream GET over the carrier it switched to. A value outside this set
// counts as [SessionFallbackOther], never as itself, so that the labels of
// [SessionFallbackMetrics] stay bounded whatever clients send.
const (
	// SessionFallbackWSError: the WebSocket handshake failed, or the
	// WebSocket closed before HELLO.
	SessionFallbackWSError = "ws-error"
	// SessionFallbackWSTimeout: no HELLO on the WebSocket in time.
	SessionFallbackWSTimeout = "ws-timeout"
	// SessionFallbackWSBlocked: the page turned the WebSocket carrier off.
	SessionFallbackWSBlocked = "ws-blocked"
	// SessionFallbackRemembered: the page fell back before, and went
	// straight to the carrier it remembers.
	SessionFallbackRemembered = "remembered"
	// SessionFallbackPollNoFirstByte: the event stream showed no first
	// byte in time (a proxy that buffers responses): long polling.
	SessionFallbackPollNoFirstByte = "poll-no-first-byte"
	// SessionFallbackOther is any other value of the parameter.
	SessionFallbackOther = "other"
)

// queryFallback is the query parameter that carries a fallback reason.
const queryFallback = "fallback"

// sessionFallbackReasons is the closed set; a reason's index is its bit in
// session.fallbacks.
var sessionFallbackReasons = [...]string{
	SessionFallbackWSError,
	SessionFallbackWSTimeout,
	SessionFallbackWSBlocked,
	SessionFallbackRemembered,
	SessionFallbackPollNoFirstByte,
	SessionFallbackOther,
}

// recordFallback counts and logs the fallback reason of r, a request that
// created s or attached a downstream to it over carrier, once per reason
// per session: a client that repeats the parameter (a retried poll) counts
// once. A request without the parameter records nothing.
func (srv *sessionServer) recordFallback(r *http.Request, s *session, carrier string) {
	v := r.URL.Query().Get(queryFallback)
	if v == "" {
		return
	}
	i := slices.Index(sessionFallbackReasons[:], v)
	if i < 0 {
		i = len(sessionFallbackReasons) - 1 // other
	}
	bit := uint8(1) << i
	s.mu.Lock()
	seen := s.fallbacks&bit != 0
	s.fallbacks |= bit
	s.mu.Unlock()
	if seen {
		return
	}
	reason := sessionFallbackReasons[i]
	if m, ok := srv.h.cfg.metrics.(SessionFallbackMetrics); ok {
		m.SessionFellBack(reason)
	}
	srv.h.log.LogAttrs(r.Context(), slog.LevelInfo, "session fell back",
		slog.String(logKeyCarrier, carrier), slog.String(logKeyReason, reason), slog.String(logKeyPeer, r.RemoteAddr))
}
