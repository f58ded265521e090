package bridge

import "google.golang.org/grpc/codes"

// Transport names, as passed to [Metrics] and written in logs.
const (
	TransportSSE       = "sse"
	TransportWebSocket = "websocket"
	TransportGRPC      = "grpc"
	// TransportUnary is a unary call answered as plain JSON.
	TransportUnary = "unary"
)

// Metrics receives the handler's measurements, so that a program can
// export them (the bridge binary exports them to Prometheus) without this
// package depending on a metrics library. Method names come from the
// schema's exposed methods, never from raw URLs, so labels stay bounded.
//
// Implementations must be safe for concurrent use and cheap: the observer's
// message methods run once per message.
type Metrics interface {
	// StreamStarted is called when a stream is admitted: an SSE request
	// or a unary JSON call that passed validation, an upgraded WebSocket
	// (whose call opens with its first frame), a native gRPC call.
	// resumed tells whether an SSE request carried Last-Event-ID. It
	// returns the observer of that one stream.
	StreamStarted(method, transport string, resumed bool) StreamObserver
}

// StreamObserver receives the events of one stream. Its methods are called
// from the stream's goroutines, but never concurrently with each other for
// the same direction: MessageSent from the writer, MessageReceived from the
// reader, and StreamEnded once, after both have stopped.
type StreamObserver interface {
	// MessageSent counts one response message written to the browser, of
	// size bytes as encoded on the wire (JSON or protobuf).
	MessageSent(bytes int)
	// MessageReceived counts one request message from the browser.
	MessageReceived(bytes int)
	// StreamEnded reports the final status. closeCode is the WebSocket
	// close code sent (0 for other transports); slowClient tells whether
	// the stream ended because the browser did not take data in time.
	StreamEnded(code codes.Code, closeCode int, slowClient bool)
}

// PanicMetrics is implemented by a [Metrics] that counts panics. It is
// optional, so that a Metrics written before it still compiles: the
// handler checks for it with a type assertion.
type PanicMetrics interface {
	// StreamPanicked counts one panic that the handler recovered from in a
	// goroutine of a stream of method: that stream ended with INTERNAL (a
	// WebSocket with close code 1011), the process went on.
	StreamPanicked(method, transport string)
}

// SessionMetrics is implemented by a [Metrics] that counts sessions
// ([WithSessions]). It is optional, as [PanicMetrics] is. The calls of a
// session are streams of transport [TransportSession] for [Metrics].
type SessionMetrics interface {
	// SessionStarted counts a session created over carrier:
	// [SessionCarrierWebSocket] or [SessionCarrierHTTP].
	SessionStarted(carrier string)
	// SessionEnded reports the end of a session created over carrier, with
	// the number of calls it carried.
	SessionEnded(carrier string, calls int)
	// SessionResumed counts a downstream that reattached to a session
	// after a cut, over carrier: [SessionCarrierWebSocket],
	// [SessionCarrierSSE] or [SessionCarrierPoll] (every poll after the
	// first is one).
	SessionResumed(carrier string)
	// SessionForwarded counts a request for a session that another
	// replica owns, by outcome: [ForwardOutcomeForwarded],
	// [ForwardOutcomeRefused] (the owner is outside the peer set) or
	// [ForwardOutcomeFailed] (the owner could not be reached).
	SessionForwarded(outcome string)
}

// SessionFallbackMetrics is implemented by a [Metrics] that counts why
// sessions fell back from the WebSocket carrier (or from the event stream
// to polling), as clients report it. It is optional, as [PanicMetrics] is.
type SessionFallbackMetrics interface {
	// SessionFellBack counts one session that fell back, by reason: one
	// of the SessionFallback constants ([SessionFallbackWSError] ...,
	// [SessionFallbackOther] for any value outside the set). A session
	// counts each reason once.
	SessionFellBack(reason string)
}

// noSessionMetrics is the [SessionMetrics] of a Metrics without them.
type noSessionMetrics struct{}

func (noSessionMetrics) SessionStarted(string)    {}
func (noSessionMetrics) SessionEnded(string, int) {}
func (noSessionMetrics) SessionResumed(string)    {}
func (noSessionMetrics) SessionForwarded(string)  {}

// WithMetrics sets the receiver of the handler's measurements. Defaults to
// none.
func WithMetrics(m Metrics) Option {
	return optionFunc(func(c *config) { c.metrics = m })
}

// noMetrics is the default [Metrics]: it records nothing.
type noMetrics struct{}

func (noMetrics) StreamStarted(string, string, bool) StreamObserver { return noMetrics{} }
func (noMetrics) MessageSent(int)                                   {}
func (noMetrics) MessageReceived(int)                               {}
func (noMetrics) StreamEnded(codes.Code, int, bool)                 {}
