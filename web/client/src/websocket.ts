// Calls of any kind over a WebSocket with the grpc-ws.v1 subprotocol
// (docs/protocol.md): one binary frame per protobuf message, JSON control
// objects in text frames.

import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { AsyncQueue, Deferred } from "./queue.js";
import { Code, StatusError, parseMetadata, parseStatus, type Metadata, type Status } from "./status.js";

/** The WebSocket subprotocol of the bridge. */
export const subprotocol = "grpc-ws.v1";

/** A call over a WebSocket. */
export interface WebSocketCall<I extends DescMessage, O extends DescMessage> extends AsyncIterable<MessageShape<O>> {
  /**
   * Iterating yields each response; it ends with the call and throws a
   * StatusError when the call fails. Iterate once.
   */
  [Symbol.asyncIterator](): AsyncIterator<MessageShape<O>>;
  /** send sends one request message; messages sent before the socket opens wait for it. */
  send(message: MessageInitShape<I>): void;
  /** closeSend half-closes: no more messages. */
  closeSend(): void;
  /** cancel ends the call; the status is CANCELED. */
  cancel(): void;
  /** The backend's allow-listed response headers; {} when the call ends without them. */
  readonly headers: Promise<Metadata>;
  /** The final status, from the status frame; never rejects. */
  readonly status: Promise<Status>;
}

/** Options of openWebSocket. */
export interface WebSocketOptions {
  /** Request metadata, sent as the first frame (browsers cannot set headers on a WebSocket). */
  metadata?: Metadata;
  /** Aborting it cancels the call. */
  signal?: AbortSignal;
  /** The WebSocket constructor; for tests. */
  WebSocket?: typeof WebSocket;
}

/**
 * openWebSocket opens a call of the method at url (http:, https:, ws: or
 * wss:; relative to the page when relative). input and output are the
 * method's message types.
 */
export function openWebSocket<I extends DescMessage, O extends DescMessage>(
  input: I,
  output: O,
  url: string | URL,
  options: WebSocketOptions = {},
): WebSocketCall<I, O> {
  return new Call(input, output, webSocketURL(url), options);
}

/** webSocketURL resolves url against the page and gives it a ws: or wss: scheme. */
export function webSocketURL(url: string | URL): string {
  const base = typeof location === "undefined" ? undefined : location.href;
  const u = new URL(String(url), base);
  if (u.protocol === "http:") {
    u.protocol = "ws:";
  } else if (u.protocol === "https:") {
    u.protocol = "wss:";
  }
  return u.toString();
}

class Call<I extends DescMessage, O extends DescMessage> implements WebSocketCall<I, O> {
  private readonly ws: WebSocket;
  private readonly queue: AsyncQueue<MessageShape<O>>;
  private readonly headersD = new Deferred<Metadata>();
  private readonly statusD = new Deferred<Status>();
  private pending: (string | Uint8Array)[] = [];
  private open = false;
  private sendClosed = false;
  private done = false;
  private final: Status | undefined; // from the status frame

  constructor(
    private readonly input: I,
    private readonly output: O,
    url: string,
    options: WebSocketOptions,
  ) {
    this.queue = new AsyncQueue(() => this.cancel());
    const WS = options.WebSocket ?? globalThis.WebSocket;
    this.ws = new WS(url, [subprotocol]);
    this.ws.binaryType = "arraybuffer";
    if (options.metadata !== undefined) {
      this.pending.push(JSON.stringify({ metadata: options.metadata }));
    }
    options.signal?.addEventListener("abort", () => this.cancel(), { once: true });
    this.ws.onopen = () => this.opened();
    this.ws.onmessage = (e: MessageEvent) => this.received(e.data);
    this.ws.onclose = (e: CloseEvent) => this.closed(e.code, e.reason);
  }

  get headers(): Promise<Metadata> {
    return this.headersD.promise;
  }

  get status(): Promise<Status> {
    return this.statusD.promise;
  }

  [Symbol.asyncIterator](): AsyncIterator<MessageShape<O>> {
    return this.queue[Symbol.asyncIterator]();
  }

  send(message: MessageInitShape<I>): void {
    if (this.sendClosed) {
      throw new Error("send after closeSend");
    }
    if (this.done) {
      return; // the call has ended; its status tells why
    }
    this.write(toBinary(this.input, create(this.input, message)));
  }

  closeSend(): void {
    if (this.sendClosed || this.done) {
      this.sendClosed = true;
      return;
    }
    this.sendClosed = true;
    this.write(JSON.stringify({ end: true }));
  }

  cancel(): void {
    if (this.done) {
      return;
    }
    this.finish({ code: Code.CANCELED, message: "canceled by the client", details: [], trailers: {} }, false);
    this.ws.close(1000);
  }

  private write(frame: string | Uint8Array): void {
    if (this.open) {
      this.ws.send(frame);
    } else {
      this.pending.push(frame);
    }
  }

  private opened(): void {
    if (this.done) {
      return;
    }
    if (this.ws.protocol !== subprotocol) {
      this.finish({
        code: Code.UNIMPLEMENTED,
        message: `the server did not select the WebSocket subprotocol ${subprotocol}`,
        details: [],
        trailers: {},
      });
      this.ws.close(1000);
      return;
    }
    this.open = true;
    for (const frame of this.pending) {
      this.ws.send(frame);
    }
    this.pending = [];
  }

  private received(data: unknown): void {
    if (this.done || this.final !== undefined) {
      return;
    }
    if (typeof data === "string") {
      let ctl: Record<string, unknown>;
      try {
        ctl = JSON.parse(data) as Record<string, unknown>;
      } catch {
        this.fail(`the bridge sent a text frame that is not JSON: ${data.slice(0, 64)}`);
        return;
      }
      if ("status" in ctl) {
        this.final = parseStatus(ctl.status, ctl.trailers);
        this.headersD.resolve({});
      } else if ("headers" in ctl) {
        this.headersD.resolve(parseMetadata(ctl.headers));
      }
      return; // other keys: later versions of the protocol
    }
    if (!(data instanceof ArrayBuffer)) {
      return;
    }
    let msg: MessageShape<O>;
    try {
      msg = fromBinary(this.output, new Uint8Array(data));
    } catch (err) {
      this.fail(`cannot decode ${this.output.typeName}: ${String(err)}`);
      return;
    }
    this.headersD.resolve({});
    this.queue.push(msg);
  }

  private fail(message: string): void {
    this.finish({ code: Code.INTERNAL, message, details: [], trailers: {} });
    this.ws.close(1000);
  }

  private closed(code: number, reason: string): void {
    this.open = false;
    this.finish(this.final ?? statusFromClose(code, reason));
  }

  private finish(st: Status, fail = true): void {
    if (this.done) {
      return;
    }
    this.done = true;
    this.pending = [];
    this.headersD.resolve({});
    this.statusD.resolve(st);
    this.queue.close(st.code !== Code.OK && fail ? StatusError.from(st) : undefined, !fail);
  }
}

/**
 * statusFromClose is the outcome of a connection that closed without a
 * status frame: 4000 + code repeats a status; anything else, a failed
 * handshake (1006) included, leaves the outcome unknown, UNAVAILABLE.
 */
export function statusFromClose(code: number, reason: string): Status {
  let c: number = Code.UNAVAILABLE;
  if (code >= 4000 && code <= 4016) {
    c = code - 4000;
  } else if (code === 1008) {
    c = Code.INVALID_ARGUMENT;
  } else if (code === 1009) {
    c = Code.RESOURCE_EXHAUSTED;
  }
  const message = reason !== "" ? reason : `connection closed (${code}) without a status`;
  return { code: c, message, details: [], trailers: {} };
}
