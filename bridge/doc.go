// Package bridge serves gRPC methods to browsers with the web platform's own
// APIs.
//
// A [Handler] is an [net/http.Handler] that exposes selected gRPC methods of
// one or more backends under their gRPC paths (/package.Service/Method):
//
//   - Server-streaming methods become Server-Sent Events: a GET builds the
//     request from the query string with grpc-gateway's query-parameter
//     rules, a POST takes it as a JSON body, and every response message
//     becomes one event whose data is the message in the proto3 JSON
//     mapping. Streams resume with the browser's Last-Event-ID.
//   - Unary methods answer as plain JSON, as grpc-gateway does (or as SSE
//     when the request's Accept names text/event-stream). GET reaches only
//     those that are safe to call from a link (idempotency_level
//     NO_SIDE_EFFECTS, or a google.api.http get rule); others answer 405.
//   - Methods with a google.api.http annotation are also served at the
//     annotated path and verb, with its body and response_body.
//   - Every method, and above all bidirectional streams, is served over a
//     WebSocket with the grpc-ws.v1 subprotocol: one protobuf message per
//     binary frame each way, JSON control objects (metadata, half-close,
//     headers, the final status) in text frames.
//   - With [WithSessions], one connection carries any number of calls of
//     every kind (grpc-session.v1 at /_bridge/session): over a WebSocket,
//     or, where WebSockets are blocked, an event stream down and POSTs up,
//     resumable after a cut and forwarded between replicas without sticky
//     load balancing.
//   - Native gRPC requests (a POST with Content-Type application/grpc, over
//     HTTP/2) from internal callers are proxied to the backend as raw
//     frames, never decoded, so gRPC clients can use the bridge's address
//     too. The bridge's own grpc.health.v1.Health answers there, and its
//     own server reflection, which lists and describes only what is
//     exposed. Requests from browsers (an Origin or a Sec-Fetch-* header)
//     are refused.
//
// The handler is descriptor-driven: requests and responses are
// [google.golang.org/protobuf/types/dynamicpb] messages built from the
// schema given with [WithFiles], so a new backend service needs no code
// change. (Messages of the compiled-in schema use their generated types,
// which decode faster.) Nothing is reachable unless [WithExpose] names it.
//
// Every browser-facing request passes the trust boundary first (trust.go,
// docs/config.md "Trust boundary"): its Origin must be the bridge's own or
// on the [WithAllowedOrigins] list, a page admitted only by "*" has no
// credentials forwarded, and statuses that the gRPC client makes about the
// connection to a backend reach browsers without addresses or other
// internals.
//
// [Handler.OpenAPI] and [Handler.AsyncAPI] describe what is exposed, from
// the live schema; [WithCompression] turns on gzip and permessage-deflate
// per method.
//
// Use [NewHandler] to build a handler, [WithBackend] and [WithServiceBackend]
// to connect it to gRPC backends, and [WithSSEOptions] to override the
// per-method options that proto files declare with (bridge.v1.method).
// Use [Handler.Shutdown] to drain live streams before the server stops.
//
// # Concurrency
//
// A Handler is safe for concurrent use by many goroutines. Each goroutine
// it starts has one owner and one way to end, and a stream's upstream call
// is cancelled on every path out of the stream. Heartbeats, pings, the
// maximum stream duration and the drain are timers and context callbacks,
// not goroutines.
//
// An SSE stream has one goroutine that receives the call: the HTTP handler
// goroutine over HTTP/2. Over HTTP/1.1 the stream takes the connection over
// from net/http (Hijack) before its first byte, the handler returns, and a
// goroutine of the stream's own receives the call, so that net/http's
// goroutine and buffers for the connection go away; on Linux one goroutine,
// shared by every taken-over connection and running only while there are
// any, notices with epoll when a browser closes its connection, and reads
// and discards what a client sends after its request (a stray CRLF, a
// pipelined request); the stream ends with a lingering close (a
// half-close, then reading until the client closes, for at most net/http's
// 500 ms), so that the close is never a reset that loses the stream's last
// events.
// The receiving goroutine appends each event to a bounded pending buffer; a
// writer goroutine, started only when there is something to write and none
// is running, writes everything pending in one write and exits when nothing
// is, so a quiet stream has no writer. The receiver waits for the writer
// when the buffer is full, so a slow browser slows the backend through gRPC
// flow control. A shared call has one receiver goroutine of its own, which
// hands each event to the subscribers' bounded queues; each subscriber's
// stream goroutine writes its own.
//
// A WebSocket uses two: a reader, the only one that reads the socket and
// sends to the backend (it opens the call, and answers pings), and the HTTP
// handler goroutine, the only one that receives from the backend; it
// writes a response that came alone itself, and hands those of a burst to
// a writer goroutine, started only while frames are queued, which writes
// everything queued in one write(2). The close frame goes last, after
// every data frame.
// Pings and pongs are written from the ping timer and the reader, which
// gorilla/websocket allows alongside a data write. The reader sends the
// next message only once the backend took the last, and the handler
// receives the next response only while fewer than 32 KiB are queued, so
// backpressure reaches both ends and nothing buffers without bound. The
// handler returns only after the reader has ended.
//
// A native gRPC call uses two: grpc-go's stream goroutine, the only one
// that receives from the backend and sends to the caller, and one pump, the
// only one that receives from the caller and sends to the backend. Each
// moves one message at a time. The HTTP handler returns only after both
// have ended.
//
// A panic in any of these goroutines (in the backend's
// [google.golang.org/grpc.ClientConnInterface], a [Metrics], a logger, a
// listener's connection) ends only its stream, with INTERNAL: an SSE error
// event (a 500 answer before the stream is committed), a WebSocket status
// frame and close code 1011, a native gRPC status. It is logged at Error
// with its stack and counted by a [Metrics] that implements
// [PanicMetrics]. net/http recovers a panic in a handler goroutine, but
// would leave the stream behind, and none in the goroutines a stream
// starts; grpc-go recovers none.
package bridge
