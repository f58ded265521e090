// Package bridge serves gRPC methods to browsers with the web platform's own
// APIs.
//
// A [Handler] is an [net/http.Handler] that exposes selected gRPC methods of
// one or more backends under their gRPC paths (/package.Service/Method):
//
//   - Server-streaming and unary methods become Server-Sent Events: a GET
//     builds the request from the query string with grpc-gateway's
//     query-parameter rules, a POST takes it as a JSON body, and every
//     response message becomes one event whose data is the message in the
//     proto3 JSON mapping. Streams resume with the browser's Last-Event-ID.
//   - Methods with a google.api.http annotation are also served, as SSE, at
//     the annotated path and verb.
//   - Every method, and above all bidirectional streams, is served over a
//     WebSocket with the grpc-ws.v1 subprotocol: one protobuf message per
//     binary frame each way, JSON control objects (metadata, half-close,
//     headers, the final status) in text frames.
//   - Native gRPC requests (a POST with Content-Type application/grpc, over
//     HTTP/2) from internal callers are proxied to the backend as raw
//     frames, never decoded, so gRPC clients can use the bridge's address
//     too. The bridge's own grpc.health.v1.Health answers there.
//
// The handler is descriptor-driven: requests and responses are
// [google.golang.org/protobuf/types/dynamicpb] messages built from the
// schema given with [WithFiles], so a new backend service needs no code
// change. (Messages of the compiled-in schema use their generated types,
// which decode faster.) Nothing is reachable unless [WithExpose] names it.
//
// Use [NewHandler] to build a handler, [WithBackend] and [WithServiceBackend]
// to connect it to gRPC backends, and [WithSSEOptions] to override the
// per-method options that proto files declare with (bridge.v1.method).
// Use [Handler.Shutdown] to drain live streams before the server stops.
//
// # Concurrency
//
// A Handler is safe for concurrent use by many goroutines. Each SSE stream
// uses two goroutines: the HTTP handler goroutine owns the
// [net/http.ResponseWriter] (events, heartbeats, flushes, write deadlines),
// and one receiver goroutine reads from the gRPC stream into a small bounded
// queue. The receiver reads the next message only when the queue has room,
// so a slow browser slows the backend through gRPC flow control. The handler
// returns only after the receiver has ended, and the upstream call is
// cancelled on every path out of the handler.
//
// Each WebSocket uses three: a reader (the only one that reads the socket
// and sends to the backend), a receiver (the only one that receives from
// the backend) and the handler goroutine as the writer (the only one that
// writes the socket: messages, control frames, pings, the close). The
// receiver hands over one message at a time and the reader sends the next
// message only when the backend took the last, so backpressure reaches both
// ends and nothing buffers without bound.
//
// A native gRPC call uses two: grpc-go's stream goroutine, the only one
// that receives from the backend and sends to the caller, and one pump, the
// only one that receives from the caller and sends to the backend. Each
// moves one message at a time. The HTTP handler returns only after both
// have ended.
package bridge
