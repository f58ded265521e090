package bridge

import (
	"context"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The WebSocket session's keepalive: pings, the pong check, the maximum
// duration and the drain, as timers and context callbacks rather than
// goroutines.

// watch starts what ends the session from outside the call: the ping
// check, the maximum duration, the drain and the server's shutdown. The
// request's context ends while the socket is open only when the server's
// base context does (net/http has let go of a hijacked connection): the
// bridge is shutting down, as it is when Handler.Shutdown starts the
// drain.
func (s *wsSession) watch() (stop func()) {
	stops := []func() bool{
		context.AfterFunc(s.h.streams.drainCtx, func() { s.end(goingAway) }),
		context.AfterFunc(s.r.Context(), func() { s.end(goingAway) }),
	}
	if d := s.h.cfg.maxStreamDuration; d > 0 {
		t := time.AfterFunc(s.h.cfg.streamLifetime(d), func() {
			s.end(callEnd(status.Newf(codes.Unavailable, "the stream reached its maximum duration of %v", d), nil))
		})
		stops = append(stops, t.Stop)
	}
	s.pinger = time.AfterFunc(s.h.cfg.pingInterval, s.pingTick)
	stops = append(stops, s.pinger.Stop)
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// pingTick is the ping timer's callback: it sends a ping every ping
// interval and, a pong timeout after each, checks that its pong came.
func (s *wsSession) pingTick() {
	if s.isEnded() {
		return
	}
	cfg := s.h.cfg
	now := s.since()
	if !s.awaitingPong {
		s.awaitingPong = true
		s.pingAt, s.checkFrom = now, now
		s.writeControl(websocket.PingMessage, nil)
		s.pinger.Reset(cfg.pongTimeout)
		return
	}
	switch {
	case s.lastPong.Load() >= s.pingAt:
		s.awaitingPong = false
		s.pinger.Reset(time.Duration(s.pingAt + int64(cfg.pingInterval) - now))
	case s.sending.Load() || s.sentAt.Load() > s.checkFrom:
		// The reader has been waiting on the backend instead of reading
		// the socket, where the pong may sit: no verdict on the peer yet.
		s.checkFrom = now
		s.pinger.Reset(cfg.pongTimeout)
	default:
		s.end(callEnd(status.Newf(codes.Unavailable, "client did not answer a ping within %v", cfg.pongTimeout), nil))
	}
}
