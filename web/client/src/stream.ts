// Server streams over Server-Sent Events: with EventSource (GET), or with
// fetch (GET or POST, with headers) and this library's own event-stream
// parser. Both decode each message event with the generated message type,
// resolve headers on the headers event, end on the end event, fail with a
// StatusError on a final error event, and reconnect with Last-Event-ID after
// a transient one (UNAVAILABLE, ABORTED) or a dropped connection.

import { fromJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { AsyncQueue, Deferred } from "./queue.js";
import { SSEParser, type SSEEvent } from "./sse.js";
import {
  Code,
  StatusError,
  isTransient,
  okStatus,
  parseMetadata,
  parseStatus,
  parseStatusText,
  type Metadata,
  type Status,
} from "./status.js";

/** The reconnection time before the bridge sends a retry field (WHATWG leaves it to the browser). */
export const defaultRetryMs = 2000;

/**
 * ConnectionState is where a stream's connection stands:
 * "connecting" before the first response, "open" while events can arrive,
 * "reconnecting" after a drop or a transient error, "closed" at the end.
 */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** StateInfo comes with each state change. */
export interface StateInfo {
  /** The last event id: a reconnect resumes after it. */
  readonly lastEventId: string;
  /** Why the stream reconnects: the transient status, or UNAVAILABLE for a dropped connection. */
  readonly reason?: Status;
  /** For "open" after "reconnecting": true. */
  readonly resumed?: boolean;
}

/** A server-streaming call read from an event stream. */
export interface ServerStream<T> extends AsyncIterable<T> {
  /**
   * Iterating yields each message; it ends after the end event and throws a
   * StatusError when the call fails. Iterate once.
   */
  [Symbol.asyncIterator](): AsyncIterator<T>;
  /** The backend's allow-listed response headers; {} when the call ends without them. */
  readonly headers: Promise<Metadata>;
  /** The final status; never rejects. CANCELED after close. */
  readonly status: Promise<Status>;
  /** The id of the last message that iteration returned: resume after it. */
  readonly lastEventId: string;
  /** close stops the stream and its reconnects; messages not yet iterated are dropped. */
  close(): void;
}

/** Options common to both kinds of server stream. */
export interface StreamOptions {
  /** Called on every change of the connection state. */
  onState?: (state: ConnectionState, info: StateInfo) => void;
  /** Aborting it closes the stream. */
  signal?: AbortSignal;
}

interface Item<T> {
  value: T;
  id: string;
}

/** BaseStream holds what both transports share: the queue, headers, status and state. */
abstract class BaseStream<O extends DescMessage> implements ServerStream<MessageShape<O>> {
  protected readonly queue: AsyncQueue<Item<MessageShape<O>>>;
  private readonly headersD = new Deferred<Metadata>();
  private readonly statusD = new Deferred<Status>();
  private state: ConnectionState = "connecting";
  private reconnecting = false;
  private consumedId = "";
  protected receivedId: string;
  protected done = false;

  constructor(
    protected readonly schema: O,
    protected readonly options: StreamOptions,
    lastEventId: string,
  ) {
    this.queue = new AsyncQueue(() => this.close());
    this.consumedId = lastEventId;
    this.receivedId = lastEventId;
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  get headers(): Promise<Metadata> {
    return this.headersD.promise;
  }

  get status(): Promise<Status> {
    return this.statusD.promise;
  }

  get lastEventId(): string {
    return this.consumedId;
  }

  [Symbol.asyncIterator](): AsyncIterator<MessageShape<O>> {
    const it = this.queue[Symbol.asyncIterator]();
    return {
      next: async () => {
        const r = await it.next();
        if (r.done) {
          return { value: undefined, done: true };
        }
        this.consumedId = r.value.id;
        return { value: r.value.value, done: false };
      },
      return: async () => {
        await it.return?.();
        return { value: undefined, done: true };
      },
    };
  }

  close(): void {
    if (this.done) {
      return;
    }
    this.finish({ code: Code.CANCELED, message: "closed by the client", details: [], trailers: {} }, false);
  }

  protected abstract stop(): void;

  protected setState(state: ConnectionState, reason?: Status): void {
    if (state === "reconnecting") {
      this.reconnecting = true;
    }
    const resumed = state === "open" && this.reconnecting;
    if (state === "open") {
      this.reconnecting = false;
    }
    if (state === this.state && state !== "reconnecting") {
      return;
    }
    this.state = state;
    this.options.onState?.(state, { lastEventId: this.receivedId, reason, resumed });
  }

  /** handle processes one event; it returns what the transport does next. */
  protected handle(ev: SSEEvent): "continue" | "reconnect" | "done" {
    switch (ev.type) {
      case "headers":
        this.headersD.resolve(parseMetadata(safeJSON(ev.data)));
        return "continue";
      case "message": {
        let value: MessageShape<O>;
        try {
          value = fromJson(this.schema, safeJSON(ev.data, true) as never, { ignoreUnknownFields: true });
        } catch (err) {
          this.finish({
            code: Code.INTERNAL,
            message: `cannot decode ${this.schema.typeName}: ${String(err)}`,
            details: [],
            trailers: {},
          });
          return "done";
        }
        this.receivedId = ev.lastEventId;
        this.headersD.resolve({});
        this.queue.push({ value, id: ev.lastEventId });
        return "continue";
      }
      case "end": {
        const st = parseStatusText(ev.data);
        this.finish(okStatus(st.trailers));
        return "done";
      }
      case "error": {
        const st = parseStatusText(ev.data);
        if (isTransient(st.code)) {
          this.setState("reconnecting", st);
          return "reconnect";
        }
        this.finish(st);
        return "done";
      }
      default:
        return "continue"; // event types of later versions
    }
  }

  /** finish ends the stream with st; iteration throws for a failure unless the client closed it. */
  protected finish(st: Status, fail = true): void {
    if (this.done) {
      return;
    }
    this.done = true;
    this.stop();
    this.headersD.resolve({});
    this.statusD.resolve(st);
    this.setState("closed", st.code === Code.OK ? undefined : st);
    // A stream that the client closed delivers nothing more, so that a
    // new stream can resume after lastEventId with no duplicate.
    this.queue.close(st.code !== Code.OK && fail ? StatusError.from(st) : undefined, !fail);
  }
}

function safeJSON(data: string, strict = false): unknown {
  try {
    return JSON.parse(data);
  } catch (err) {
    if (strict) {
      throw err;
    }
    return undefined;
  }
}

/** Options of openEventSource. */
export interface EventSourceOptions extends StreamOptions {
  /** Send cookies cross-origin (EventSource's withCredentials). */
  withCredentials?: boolean;
  /** The EventSource constructor; for tests. */
  EventSource?: typeof EventSource;
  /** fetch, used once to read the status of a request that the bridge refused; for tests. */
  fetch?: typeof fetch;
}

/**
 * openEventSource reads the server stream at url (a GET, the request in the
 * query string) with the browser's EventSource, which reconnects by itself
 * with Last-Event-ID. EventSource cannot send Last-Event-ID on a connection
 * it did not reconnect: to resume a stream that you closed, set the method's
 * resume field in the request, or use fetchEventStream with lastEventId.
 *
 * EventSource does not show the body of a non-200 answer, so when the bridge
 * refuses the request, the stream fetches the same URL once more to read the
 * status.
 */
export function openEventSource<O extends DescMessage>(
  schema: O,
  url: string | URL,
  options: EventSourceOptions = {},
): ServerStream<MessageShape<O>> {
  return new EventSourceStream(schema, String(url), options);
}

class EventSourceStream<O extends DescMessage> extends BaseStream<O> {
  private readonly es: EventSource;
  private readonly withCredentials: boolean;

  constructor(
    schema: O,
    private readonly url: string,
    options: EventSourceOptions,
  ) {
    super(schema, options, "");
    this.withCredentials = options.withCredentials ?? false;
    const ES = options.EventSource ?? globalThis.EventSource;
    this.es = new ES(url, { withCredentials: this.withCredentials });
    const on = (type: string, f: (e: MessageEvent<string>) => void) =>
      this.es.addEventListener(type, (e) => {
        if (!this.done) {
          f(e as MessageEvent<string>);
        }
      });
    this.es.onopen = () => {
      if (!this.done) {
        this.setState("open");
      }
    };
    for (const type of ["headers", "message", "end"]) {
      on(type, (e) => this.handle({ type, data: e.data, lastEventId: e.lastEventId }));
    }
    on("error", (e) => {
      if (typeof e.data === "string") {
        // The bridge's error event. After a transient one the response
        // ends, and EventSource reconnects with Last-Event-ID by itself.
        this.handle({ type: "error", data: e.data, lastEventId: e.lastEventId });
        return;
      }
      // EventSource's own error: a dropped connection, which it retries, or
      // a refused one, which it does not.
      if (this.es.readyState === ES.CLOSED) {
        void this.refused(options.fetch ?? globalThis.fetch.bind(globalThis));
      } else {
        this.setState("reconnecting", {
          code: Code.UNAVAILABLE,
          message: "connection lost",
          details: [],
          trailers: {},
        });
      }
    });
  }

  protected stop(): void {
    this.es.close();
  }

  private async refused(fetchImpl: typeof fetch): Promise<void> {
    let st: Status;
    try {
      const res = await fetchImpl(this.url, {
        headers: { Accept: "text/event-stream" },
        credentials: this.withCredentials ? "include" : "same-origin",
      });
      if (res.status === 200) {
        await res.body?.cancel();
        st = { code: Code.UNKNOWN, message: "EventSource failed on a 200 answer", details: [], trailers: {} };
      } else {
        st = await statusFromResponse(res);
      }
    } catch (err) {
      st = { code: Code.UNAVAILABLE, message: `connection failed: ${String(err)}`, details: [], trailers: {} };
    }
    this.finish(st);
  }
}

/** statusFromResponse reads the status of a non-200 answer: its JSON body, or the HTTP status. */
export async function statusFromResponse(res: Response): Promise<Status> {
  const text = await res.text().catch(() => "");
  const type = res.headers.get("Content-Type") ?? "";
  if (type.startsWith("application/json")) {
    const st = parseStatusText(text);
    if (st.code !== Code.UNKNOWN || !st.message.startsWith("malformed")) {
      return st;
    }
  }
  return parseStatus({ code: codeFromHTTP(res.status), message: `HTTP ${res.status}: ${text.slice(0, 200)}` });
}

/** codeFromHTTP maps an HTTP status without a status body to a gRPC code, as gRPC does. */
function codeFromHTTP(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return Code.INTERNAL;
    case 401:
      return Code.UNAUTHENTICATED;
    case 403:
      return Code.PERMISSION_DENIED;
    case 404:
      return Code.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.UNAVAILABLE;
    default:
      return Code.UNKNOWN;
  }
}

/** Options of fetchEventStream. */
export interface FetchStreamOptions extends StreamOptions {
  /** GET (request in the URL's query) or POST (request as the JSON body). Default: POST when body is set. */
  method?: "GET" | "POST";
  /** The request message in proto3 JSON, for POST. */
  body?: string;
  /** Request headers, such as Authorization. */
  headers?: HeadersInit;
  /** Resume after this event id: sent as Last-Event-ID on the first request. */
  lastEventId?: string;
  /** fetch's credentials mode. */
  credentials?: RequestCredentials;
  /** Messages queued before reading pauses; the default is 16. */
  highWaterMark?: number;
  /** Reconnect after a dropped connection or a transient error; default true. */
  reconnect?: boolean;
  /** fetch; for tests. */
  fetch?: typeof fetch;
}

/**
 * fetchEventStream reads the server stream at url with fetch, so it can POST
 * the request and send headers (Authorization). It parses the event stream
 * as a browser does and reconnects as EventSource does: after a dropped
 * connection or a transient error event, it waits the retry time and sends
 * Last-Event-ID. A non-200 answer is a final StatusError. It stops reading
 * while highWaterMark messages wait for the iterator, so a slow consumer
 * slows the backend.
 */
export function fetchEventStream<O extends DescMessage>(
  schema: O,
  url: string | URL,
  options: FetchStreamOptions = {},
): ServerStream<MessageShape<O>> {
  return new FetchStream(schema, String(url), options);
}

class FetchStream<O extends DescMessage> extends BaseStream<O> {
  private readonly abort = new AbortController();
  private readonly parser: SSEParser;

  constructor(
    schema: O,
    private readonly url: string,
    private readonly fopts: FetchStreamOptions,
  ) {
    super(schema, fopts, fopts.lastEventId ?? "");
    this.parser = new SSEParser(fopts.lastEventId ?? "");
    void this.run();
  }

  protected stop(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    const fetchImpl = this.fopts.fetch ?? globalThis.fetch.bind(globalThis);
    const method = this.fopts.method ?? (this.fopts.body !== undefined ? "POST" : "GET");
    while (!this.done) {
      const headers = new Headers(this.fopts.headers);
      headers.set("Accept", "text/event-stream");
      if (method === "POST") {
        headers.set("Content-Type", "application/json");
      }
      if (this.parser.lastEventId !== "") {
        headers.set("Last-Event-ID", this.parser.lastEventId);
      }
      let next: "reconnect" | "done";
      try {
        const res = await fetchImpl(this.url, {
          method,
          headers,
          body: method === "POST" ? (this.fopts.body ?? "{}") : undefined,
          signal: this.abort.signal,
          cache: "no-store",
          credentials: this.fopts.credentials,
        });
        next = await this.read(res);
      } catch (err) {
        if (this.done) {
          return;
        }
        this.setState("reconnecting", unavailable(`connection lost: ${String(err)}`));
        next = "reconnect";
      }
      if (next === "done" || this.done) {
        return;
      }
      if (this.fopts.reconnect === false) {
        this.finish(unavailable("connection lost"));
        return;
      }
      await sleep(this.parser.retry ?? defaultRetryMs, this.abort.signal);
    }
  }

  private async read(res: Response): Promise<"reconnect" | "done"> {
    if (res.status !== 200) {
      this.finish(await statusFromResponse(res));
      return "done";
    }
    const type = res.headers.get("Content-Type") ?? "";
    if (!type.startsWith("text/event-stream") || res.body === null) {
      await res.body?.cancel();
      this.finish({ code: Code.UNKNOWN, message: `unexpected content type ${JSON.stringify(type)}`, details: [], trailers: {} });
      return "done";
    }
    this.setState("open");
    this.parser.reset();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          this.setState("reconnecting", unavailable("the stream ended without an end event"));
          return "reconnect";
        }
        for (const ev of this.parser.push(value)) {
          const next = this.handle(ev);
          if (next !== "continue") {
            return next;
          }
        }
        await this.queue.space(this.fopts.highWaterMark ?? 16);
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

function unavailable(message: string): Status {
  return { code: Code.UNAVAILABLE, message, details: [], trailers: {} };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
