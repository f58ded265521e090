// Fakes of the browser APIs that the client library uses.

/** sseResponse is a 200 event stream whose body is the chunks. */
export function sseResponse(chunks: string[], keepOpen = false): Response {
  const enc = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (const chunk of chunks) {
        c.enqueue(enc.encode(chunk));
      }
      if (!keepOpen) {
        c.close();
      }
    },
  });
  return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream; charset=utf-8" } });
}

export interface FetchCall {
  url: string;
  init: RequestInit;
  headers: Headers;
}

/** fakeFetch answers the nth call with responses[n] and records the calls. */
export function fakeFetch(responses: (() => Response)[]): { fetch: typeof fetch; calls: FetchCall[] } {
  const calls: FetchCall[] = [];
  const f = async (url: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    calls.push({ url: String(url), init: init ?? {}, headers: new Headers(init?.headers) });
    const r = responses[calls.length - 1];
    if (r === undefined) {
      // Hang until aborted, like a server that has nothing to say.
      return new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(new Error("aborted"))));
    }
    return r();
  };
  return { fetch: f as typeof fetch, calls };
}

type Listener = (e: Event) => void;

/** FakeEventSource records its instances; tests drive them with emit. */
export class FakeEventSource {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;
  static instances: FakeEventSource[] = [];
  readyState = FakeEventSource.CONNECTING;
  onopen: ((e: Event) => void) | null = null;
  private listeners = new Map<string, Listener[]>();
  constructor(
    readonly url: string,
    readonly init?: EventSourceInit,
  ) {
    FakeEventSource.instances.push(this);
  }
  addEventListener(type: string, l: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), l]);
  }
  close(): void {
    this.readyState = FakeEventSource.CLOSED;
  }
  open(): void {
    this.readyState = FakeEventSource.OPEN;
    this.onopen?.(new Event("open"));
  }
  emit(type: string, data: string, lastEventId = ""): void {
    this.dispatch(type, new MessageEvent(type, { data, lastEventId }));
  }
  /** fail fires EventSource's own error: a drop (reconnecting) or a refusal (closed). */
  fail(closed: boolean): void {
    this.readyState = closed ? FakeEventSource.CLOSED : FakeEventSource.CONNECTING;
    this.dispatch("error", new Event("error"));
  }
  private dispatch(type: string, e: Event): void {
    for (const l of this.listeners.get(type) ?? []) {
      l(e);
    }
  }
}

/** FakeWebSocket records its instances and what they send. */
export class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  binaryType = "blob";
  protocol = "";
  sent: (string | Uint8Array)[] = [];
  closedWith: number | undefined;
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onclose: ((e: { code: number; reason: string }) => void) | null = null;
  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeWebSocket.instances.push(this);
  }
  send(frame: string | Uint8Array): void {
    if (this.protocol === "") {
      throw new Error("InvalidStateError: still connecting");
    }
    this.sent.push(frame);
  }
  close(code = 1000): void {
    this.closedWith = code;
  }
  open(protocol = "grpc-ws.v1"): void {
    this.protocol = protocol;
    this.onopen?.();
  }
  text(obj: unknown): void {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }
  binary(bytes: Uint8Array): void {
    this.onmessage?.({ data: bytes.slice().buffer });
  }
  serverClose(code: number, reason = ""): void {
    this.onclose?.({ code, reason });
  }
}

export async function collect<T>(it: AsyncIterable<T>): Promise<{ items: T[]; error: unknown }> {
  const items: T[] = [];
  try {
    for await (const v of it) {
      items.push(v);
    }
  } catch (error) {
    return { items, error };
  }
  return { items, error: undefined };
}
