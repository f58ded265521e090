// grpcbridge browser client: server streams over Server-Sent Events
// (EventSource or fetch), unary calls as plain JSON (fetch), calls of any
// kind over WebSockets (grpc-ws.v1), or all of them in one session
// (grpc-session.v1, with a fallback where WebSockets are blocked), typed with
// protobuf-es message types.

export { BridgeClient, grpcPath, queryOf, type BridgeClientOptions, type Method, type ServerStreamingMethod } from "./client.js";
export {
  Session,
  carrierChoice,
  forgetCarrierChoices,
  sessionPath,
  sessionSubprotocol,
  sessionUnary,
  sessionWatch,
  type SessionCarrier,
  type SessionInfo,
  type SessionOptions,
} from "./session.js";
export {
  FrameError,
  FrameType,
  decodeFrames,
  decodeHello,
  encodeFrames,
  type Frame,
  type Hello,
} from "./session_frame.js";
export {
  defaultRetryMs,
  fetchEventStream,
  openEventSource,
  statusFromResponse,
  type ConnectionState,
  type EventSourceOptions,
  type FetchStreamOptions,
  type ServerStream,
  type StateInfo,
  type StreamOptions,
} from "./stream.js";
export { SSEParser, type SSEEvent } from "./sse.js";
export {
  Code,
  StatusError,
  codeName,
  isTransient,
  parseStatus,
  parseStatusText,
  type Metadata,
  type Status,
} from "./status.js";
export { fetchUnary, unary, type UnaryMethod, type UnaryOptions, type UnaryRequest } from "./unary.js";
export {
  openWebSocket,
  statusFromClose,
  subprotocol,
  webSocketURL,
  type WebSocketCall,
  type WebSocketOptions,
} from "./websocket.js";
