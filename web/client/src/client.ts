// BridgeClient calls the methods of generated services through the bridge:
// the URL is the method's gRPC path, the request goes in the query string
// (EventSource), the JSON body (fetch) or binary frames (WebSocket). With
// sessions on, watch, open and unary calls share one session
// (grpc-session.v1) instead.

import {
  create,
  toJson,
  toJsonString,
  type DescMessage,
  type DescMethod,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  fetchEventStream,
  openEventSource,
  type EventSourceOptions,
  type FetchStreamOptions,
  type ServerStream,
} from "./stream.js";
import { Session, sessionWatch, type SessionOptions } from "./session.js";
import { openWebSocket, type WebSocketCall, type WebSocketOptions } from "./websocket.js";

/** A method of a generated service whose request and response types are I and O. */
export type Method<I extends DescMessage, O extends DescMessage> = DescMethod & {
  readonly input: I;
  readonly output: O;
};

/** A unary or server-streaming method: the ones served as Server-Sent Events. */
export type ServerStreamingMethod<I extends DescMessage, O extends DescMessage> = Method<I, O> & {
  readonly methodKind: "unary" | "server_streaming";
};

/** Options of BridgeClient. */
export interface BridgeClientOptions {
  /**
   * Carry watch, open and unary calls in one session (grpc-session.v1):
   * a WebSocket, or an event stream and POSTs where WebSockets are
   * blocked. true, or the session's options. Default off: a connection
   * per call.
   */
  sessions?: boolean | SessionOptions;
}

/** BridgeClient reaches the methods of one bridge. */
export class BridgeClient {
  private readonly sessionOptions: SessionOptions | undefined;
  private current: Session | undefined;

  /**
   * baseUrl is the bridge's origin (or a path prefix); the default, "", is
   * the page's own origin.
   */
  constructor(
    readonly baseUrl: string = "",
    options: BridgeClientOptions = {},
  ) {
    const s = options.sessions;
    this.sessionOptions = s === true ? {} : s === false || s === undefined ? undefined : s;
  }

  /** Whether calls go over a session. */
  get sessions(): boolean {
    return this.sessionOptions !== undefined;
  }

  /**
   * session returns the client's session, opening one when there is none
   * or the last one ended; undefined when sessions are off.
   */
  session(): Session | undefined {
    if (this.sessionOptions === undefined) {
      return undefined;
    }
    if (this.current === undefined || this.current.ended) {
      const s: Session = new Session(this.baseUrl, this.sessionOptions, () => {
        if (this.current === s) {
          this.current = undefined;
        }
      });
      this.current = s;
    }
    return this.current;
  }

  /** closeSession ends the client's session, if one is open: its calls end CANCELED. */
  closeSession(): void {
    this.current?.close();
    this.current = undefined;
  }

  /** url is the URL of a method: its gRPC path, /package.Service/Method. */
  url(method: DescMethod, query?: URLSearchParams): string {
    const path = `${this.baseUrl.replace(/\/+$/, "")}/${method.parent.typeName}/${method.name}`;
    const q = query?.toString() ?? "";
    return q === "" ? path : `${path}?${q}`;
  }

  /**
   * watch reads a server stream with EventSource: a GET with the request in
   * the query string; or, with sessions on, as a call in the session.
   */
  watch<I extends DescMessage, O extends DescMessage>(
    method: ServerStreamingMethod<I, O>,
    request: MessageInitShape<I>,
    options?: EventSourceOptions,
  ): ServerStream<MessageShape<O>> {
    const session = this.session();
    if (session !== undefined) {
      return sessionWatch(session, method.input, method.output, grpcPath(method), request, options);
    }
    return openEventSource(method.output, this.url(method, queryOf(method.input, request)), options);
  }

  /**
   * fetch reads a server stream with fetch: a POST with the request as the
   * JSON body, so that it can send headers such as Authorization.
   */
  fetch<I extends DescMessage, O extends DescMessage>(
    method: ServerStreamingMethod<I, O>,
    request: MessageInitShape<I>,
    options: Omit<FetchStreamOptions, "body" | "method"> = {},
  ): ServerStream<MessageShape<O>> {
    const body = toJsonString(method.input, create(method.input, request));
    return fetchEventStream(method.output, this.url(method), { ...options, method: "POST", body });
  }

  /** open starts a call of any kind over a WebSocket; or, with sessions on, in the session. */
  open<I extends DescMessage, O extends DescMessage>(
    method: Method<I, O>,
    options?: WebSocketOptions,
  ): WebSocketCall<I, O> {
    const session = this.session();
    if (session !== undefined) {
      return session.open(method.input, method.output, grpcPath(method), options);
    }
    return openWebSocket(method.input, method.output, this.url(method), options);
  }
}

/** grpcPath is a method's gRPC path, /package.Service/Method. */
export function grpcPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/**
 * queryOf encodes a request as a query string the way the bridge reads one
 * (grpc-gateway's rules): proto field names, nested fields dotted, repeated
 * fields repeating the key, values as in proto3 JSON. Fields at their default
 * value are left out. Repeated messages and maps cannot be expressed; they
 * are an error.
 */
export function queryOf<I extends DescMessage>(schema: I, request: MessageInitShape<I>): URLSearchParams {
  const json = toJson(schema, create(schema, request), { useProtoFieldName: true });
  const q = new URLSearchParams();
  addQuery(q, "", json);
  return q;
}

function addQuery(q: URLSearchParams, key: string, v: JsonValue): void {
  if (v === null) {
    return;
  }
  if (Array.isArray(v)) {
    for (const e of v) {
      if (typeof e === "object" && e !== null) {
        throw new Error(`${key}: repeated messages cannot be sent in a query string; use fetch (POST)`);
      }
      addQuery(q, key, e);
    }
    return;
  }
  if (typeof v === "object") {
    for (const [k, e] of Object.entries(v)) {
      addQuery(q, key === "" ? k : `${key}.${k}`, e);
    }
    return;
  }
  q.append(key, String(v));
}
