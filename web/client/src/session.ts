// Sessions (grpc-session.v1, docs/protocol.md "Sessions"): many calls of
// any kind over one logical connection to the bridge. The carrier is chosen
// here: a WebSocket first; when its handshake fails or times out, an event
// stream down (read with fetch) and POSTs up; when the event stream shows
// no first byte in time (a proxy that buffers responses), long polling.
// The choice is remembered for the page's lifetime. Frames are numbered,
// kept until acknowledged and resent after a cut, so a dropped downstream
// reattaches within the grace period with nothing lost or duplicated.

import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { AsyncQueue, Deferred } from "./queue.js";
import { SSEParser } from "./sse.js";
import {
  FrameType,
  decodeFrames,
  decodeHello,
  emptyPayload,
  encodeFrames,
  fromBase64,
  isSequenced,
  jsonPayload,
  openPayload,
  readUvarintPayload,
  uvarintPayload,
  type Frame,
  type Hello,
} from "./session_frame.js";
import { Code, StatusError, parseMetadata, parseStatus, type Metadata, type Status } from "./status.js";
import { statusFromResponse, type ConnectionState, type ServerStream, type StreamOptions } from "./stream.js";
import { webSocketURL, type WebSocketCall, type WebSocketOptions } from "./websocket.js";

/** The WebSocket subprotocol of sessions. */
export const sessionSubprotocol = "grpc-session.v1";

/** The path of every session request. */
export const sessionPath = "/_bridge/session";

/**
 * How a session reaches the bridge: a WebSocket, an event stream down with
 * POSTs up, or long polling down with POSTs up.
 */
export type SessionCarrier = "websocket" | "sse" | "poll";

/**
 * Why a session left the WebSocket carrier, or the event stream for
 * polling. The client tells the bridge with `fallback=` on the request that
 * creates the session over HTTP, or on the first downstream request over
 * the new carrier, for the bridge's metrics and logs (docs/protocol.md,
 * "URLs").
 */
export type FallbackReason =
  | "ws-error" // the handshake failed, or the WebSocket closed before HELLO
  | "ws-timeout" // no HELLO within handshakeTimeoutMs
  | "ws-blocked" // the page said so: webSocket: false
  | "remembered" // a session of the page fell back before
  | "poll-no-first-byte"; // the event stream showed no first byte within firstByteTimeoutMs

/** What a session's state change reports. */
export interface SessionInfo {
  /** The carrier of the downstream now, or of the last one. */
  readonly carrier: SessionCarrier | undefined;
  /** Why: a cut, a fallback, or the session's end. */
  readonly reason?: Status;
  /** How many times the downstream was reattached after a cut. */
  readonly resumes: number;
}

/** Options of sessions. */
export interface SessionOptions {
  /** false skips the WebSocket carrier, as a network that blocks WebSockets would. Default true. */
  webSocket?: boolean;
  /** The URL the WebSocket carrier connects to; default the session URL with ws: or wss:. */
  webSocketURL?: string;
  /** How long the WebSocket handshake (up to HELLO) may take before the fallback; default 3000 ms. */
  handshakeTimeoutMs?: number;
  /** How long the event stream may show no first byte before polling; default 3000 ms. */
  firstByteTimeoutMs?: number;
  /** Called on every change of a session's state. */
  onState?: (state: ConnectionState, info: SessionInfo) => void;
  /** fetch's credentials mode for the HTTP carrier. */
  credentials?: RequestCredentials;
  /** The WebSocket constructor; for tests. */
  WebSocket?: typeof WebSocket;
  /** fetch; for tests. */
  fetch?: typeof fetch;
}

/**
 * The carrier that a session to each URL settled on, for the page's
 * lifetime: a page behind a proxy that refuses WebSockets pays the failed
 * handshake once.
 */
const choices = new Map<string, SessionCarrier>();

/** carrierChoice is the carrier remembered for sessions to url, if any. */
export function carrierChoice(url: string): SessionCarrier | undefined {
  return choices.get(url);
}

/** forgetCarrierChoices forgets every remembered carrier; for tests. */
export function forgetCarrierChoices(): void {
  choices.clear();
}

// Acknowledge after this many frames or bytes received, or after ackDelayMs.
const ackFrames = 32;
const ackBytes = 64 << 10;
const ackDelayMs = 100;
const defaultGraceMs = 30_000;
const maxBackoffMs = 2000;
// An upstream POST body stays under the bridge's limit: a message plus 64 KiB.
const postOverhead = 32 << 10;

function unavailable(message: string): Status {
  return { code: Code.UNAVAILABLE, message, details: [], trailers: {} };
}

/** Outgoing is a sequenced frame kept until the bridge acknowledges it. */
interface Outgoing {
  readonly seq: number;
  readonly bytes: Uint8Array;
}

/** The calls' side of a session. */
interface CallSink {
  frame(f: Frame): void;
  hello(h: Hello): void;
  end(st: Status): void;
}

/**
 * Session is one grpc-session.v1 session: its carrier, its sequence numbers
 * both ways and its calls. BridgeClient makes one when a call needs it.
 */
export class Session {
  /** The session URL, http: or https:. */
  readonly url: string;
  private readonly opts: SessionOptions;
  private readonly fetchImpl: typeof fetch;
  private state: ConnectionState = "connecting";
  private carrierNow: SessionCarrier | undefined;
  private helloNow: Hello | undefined;
  private token = "";
  private closed = false;
  private resumes = 0;
  private viaWebSocket = false; // the carrier of the upstream: the WebSocket, or POSTs
  private fellBack: SessionCarrier | undefined; // this session's HTTP carrier, once it left the WebSocket
  private fallback: FallbackReason | undefined; // to tell the bridge, until a request with it is answered 200

  // Upstream: the last seq used, the frames not acknowledged, the highest
  // seq written on the current WebSocket.
  private outSeq = 0;
  private unacked: Outgoing[] = [];
  private sentSeq = 0;
  private control: Frame[] = []; // unsequenced frames to send: PONG, GOAWAY
  private flushQueued = false;
  private posting = false;

  // Downstream: the last seq taken, the last one acknowledged, and what
  // came since.
  private inSeq = 0;
  private ackedIn = 0;
  private inFrames = 0;
  private inBytes = 0;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;

  private readonly calls = new Map<number, CallSink>();
  private nextCall = 1;

  // The current downstream, and when it was cut (the grace period runs from there).
  private ws: WebSocket | undefined;
  private wsReady = false;
  private down: AbortController | undefined;
  private cutAt: number | undefined;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly onEnd: () => void;

  /** baseUrl is the bridge's origin or path prefix; onEnd runs once the session has ended. */
  constructor(baseUrl: string, options: SessionOptions = {}, onEnd: () => void = () => {}) {
    const base = typeof location === "undefined" ? undefined : location.href;
    this.url = new URL(`${baseUrl.replace(/\/+$/, "")}${sessionPath}`, base).toString();
    this.opts = options;
    this.onEnd = onEnd;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.connect();
  }

  /** The carrier in use, or the last one while reconnecting; undefined before the first HELLO. */
  get carrier(): SessionCarrier | undefined {
    return this.carrierNow;
  }

  /** The settings of the last HELLO. */
  get hello(): Hello | undefined {
    return this.helloNow;
  }

  /** Whether the session has ended: calls need a new one. */
  get ended(): boolean {
    return this.closed;
  }

  /** The number of calls open. */
  get size(): number {
    return this.calls.size;
  }

  /** open starts a call of the method at path (/package.Service/Method) over the session. */
  open<I extends DescMessage, O extends DescMessage>(
    input: I,
    output: O,
    path: string,
    options: WebSocketOptions = {},
  ): WebSocketCall<I, O> {
    return new SessionCall(this, input, output, path, options);
  }

  /**
   * close ends the session: a GOAWAY to the bridge, which cancels every
   * call; the calls here end CANCELED.
   */
  close(): void {
    if (this.closed) {
      return;
    }
    const goaway = encodeFrames([{ type: FrameType.GOAWAY, seq: 0, call: 0, payload: emptyPayload }]);
    if (this.ws !== undefined && this.wsReady) {
      this.ws.send(goaway);
      this.ws.close(1000);
    } else if (this.token !== "") {
      this.fetchImpl(this.upURL(), this.postInit(goaway, true)).catch(() => {});
    }
    this.end({ code: Code.CANCELED, message: "the session was closed by the client", details: [], trailers: {} });
  }

  /**
   * cut drops the current downstream, as a proxy that ends a long response
   * would: the session reattaches and its calls go on. For demos and tests.
   */
  cut(): void {
    if (this.closed) {
      return;
    }
    this.detach();
    this.reattach(unavailable("the downstream was cut by the client"));
  }

  // Calls ---------------------------------------------------------------

  /** register adds a call and returns its id; for the calls of this module. */
  register(sink: CallSink): number {
    const id = this.nextCall++;
    this.calls.set(id, sink);
    if (this.helloNow !== undefined) {
      sink.hello(this.helloNow);
    }
    if (this.closed) {
      queueMicrotask(() => sink.end(unavailable("the session has ended")));
    }
    return id;
  }

  /** unregister forgets a call: frames for its id are ignored from now on; for the calls of this module. */
  unregister(id: number): void {
    this.calls.delete(id);
  }

  /** send sends a sequenced frame of a call, now or when the carrier can take it; for the calls of this module. */
  send(type: number, call: number, payload: Uint8Array): void {
    if (this.closed) {
      return;
    }
    const seq = ++this.outSeq;
    this.unacked.push({ seq, bytes: encodeFrames([{ type, seq, call, payload }]) });
    this.scheduleFlush();
  }

  // Carriers ------------------------------------------------------------

  /** connect attaches a downstream, on the carrier chosen or remembered. */
  private connect(): void {
    if (this.closed) {
      return;
    }
    let choice = this.fellBack ?? choices.get(this.url) ?? "websocket";
    // A session being created says why it does not try a WebSocket.
    if (choice === "websocket" && this.opts.webSocket === false) {
      choice = "sse";
      if (this.token === "") {
        this.fallback = "ws-blocked";
      }
    } else if (choice !== "websocket" && this.fellBack === undefined && this.token === "") {
      this.fallback = "remembered";
    }
    this.viaWebSocket = choice === "websocket";
    if (choice === "websocket") {
      this.connectWebSocket();
    } else {
      void this.connectHTTP(choice);
    }
  }

  private connectWebSocket(): void {
    const WS = this.opts.WebSocket ?? globalThis.WebSocket;
    let url = webSocketURL(this.opts.webSocketURL ?? this.url);
    if (this.token !== "") {
      url += `${url.includes("?") ? "&" : "?"}sid=${this.token}&ack=${this.ackParam()}`;
    }
    let ws: WebSocket;
    try {
      ws = new WS(url, [sessionSubprotocol]);
    } catch (err) {
      this.fallBack("ws-error", `the WebSocket could not be opened: ${String(err)}`);
      return;
    }
    this.ws = ws;
    this.wsReady = false;
    ws.binaryType = "arraybuffer";
    let greeted = false;
    const timer = setTimeout(() => {
      if (this.ws === ws && !greeted) {
        this.ws = undefined;
        ws.close(1000);
        this.fallBack("ws-timeout", `no WebSocket session within ${this.handshakeTimeout()} ms`);
      }
    }, this.handshakeTimeout());
    ws.onopen = () => {
      if (this.ws === ws && ws.protocol !== sessionSubprotocol) {
        this.ws = undefined;
        clearTimeout(timer);
        ws.close(1000);
        this.fallBack("ws-error", `the bridge did not select the WebSocket subprotocol ${sessionSubprotocol}`);
      }
    };
    ws.onmessage = (e: MessageEvent) => {
      if (this.ws !== ws || !(e.data instanceof ArrayBuffer)) {
        return;
      }
      const bytes = new Uint8Array(e.data);
      if (!greeted) {
        greeted = true;
        clearTimeout(timer);
        choices.set(this.url, "websocket");
        this.sentSeq = 0; // set from the HELLO's ack: everything after it is resent
        this.wsReady = true;
        this.attached("websocket");
      }
      this.receive(bytes, true);
    };
    ws.onclose = (e: CloseEvent) => {
      if (this.ws !== ws) {
        return;
      }
      clearTimeout(timer);
      this.ws = undefined;
      this.wsReady = false;
      if (!greeted) {
        this.fallBack("ws-error", `the WebSocket handshake failed (close ${e.code})`);
        return;
      }
      this.reattach(unavailable(`the WebSocket closed (${e.code}${e.reason === "" ? "" : ` ${e.reason}`})`));
    };
  }

  private handshakeTimeout(): number {
    return this.opts.handshakeTimeoutMs ?? 3000;
  }

  /**
   * fallBack gives up on WebSockets and goes on with the HTTP carrier: for
   * the page, unless a WebSocket session worked on it before (then a failed
   * reattach is more likely a lost session or a network down, which the
   * HTTP carrier tells apart), and for this session in any case.
   */
  private fallBack(reason: FallbackReason, why: string): void {
    if (this.closed) {
      return;
    }
    this.fallback = reason;
    if (choices.get(this.url) !== "websocket") {
      choices.set(this.url, "sse");
    }
    this.fellBack = "sse";
    this.viaWebSocket = false;
    this.setState(this.token === "" ? "connecting" : "reconnecting", unavailable(why));
    void this.connectHTTP("sse");
  }

  /** connectHTTP creates the session with a POST when it has none yet, then attaches the downstream. */
  private async connectHTTP(mode: SessionCarrier): Promise<void> {
    if (this.token === "") {
      let res: Response;
      const reason = this.fallback;
      try {
        res = await this.fetchImpl(`${this.url}${this.fallbackParam("?", reason)}`, this.postInit(new Uint8Array(0)));
      } catch (err) {
        this.end(unavailable(`the session could not be created: ${String(err)}`));
        return;
      }
      if (res.status !== 200) {
        this.end(await statusFromResponse(res));
        return;
      }
      this.reported(reason);
      this.receive(new Uint8Array(await res.arrayBuffer()), false);
      if (this.closed || this.token === "") {
        this.end(unavailable("the bridge created no session"));
        return;
      }
      this.scheduleFlush();
    }
    if (mode === "poll") {
      void this.poll();
    } else {
      void this.eventStream();
    }
  }

  /** eventStream reads the downstream as an event stream, until it is cut. */
  private async eventStream(): Promise<void> {
    const ac = new AbortController();
    this.down = ac;
    let greeted = false;
    let slow = false;
    const timeout = this.opts.firstByteTimeoutMs ?? 3000;
    const timer = setTimeout(() => {
      if (!greeted) {
        slow = true;
        ac.abort();
      }
    }, timeout);
    const reason = this.fallback;
    try {
      const res = await this.fetchImpl(this.downURL(false, reason), {
        headers: { Accept: "text/event-stream" },
        signal: ac.signal,
        cache: "no-store",
        credentials: this.opts.credentials,
      });
      if (res.status !== 200 || res.body === null) {
        clearTimeout(timer);
        await this.refused(res);
        return;
      }
      this.reported(reason);
      const parser = new SSEParser();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done || this.down !== ac) {
            break;
          }
          for (const ev of parser.push(value)) {
            if (ev.type !== "message" || ev.data === "") {
              continue;
            }
            if (!greeted) {
              greeted = true;
              clearTimeout(timer);
              this.attached("sse");
            }
            this.receive(fromBase64(ev.data), false);
          }
        }
      } finally {
        reader.cancel().catch(() => {});
      }
    } catch (err) {
      if (this.down !== ac || this.closed) {
        return;
      }
      if (slow) {
        // A proxy that holds responses until they end: poll instead.
        this.down = undefined;
        choices.set(this.url, "poll");
        this.fellBack = "poll";
        this.fallback = "poll-no-first-byte";
        this.setState("reconnecting", unavailable(`the event stream showed no first byte within ${timeout} ms; polling`));
        void this.poll();
        return;
      }
      this.down = undefined;
      this.reattach(unavailable(`the event stream failed: ${String(err)}`));
      return;
    } finally {
      clearTimeout(timer);
    }
    if (this.down === ac) {
      this.down = undefined;
      this.reattach(unavailable("the event stream ended"));
    }
  }

  /** poll reads the downstream by long polling, until a poll fails. */
  private async poll(): Promise<void> {
    const ac = new AbortController();
    this.down = ac;
    while (!this.closed && this.down === ac) {
      let res: Response;
      let bytes: Uint8Array;
      const reason = this.fallback;
      try {
        const url = this.downURL(true, reason);
        res = await this.fetchImpl(url, { signal: ac.signal, cache: "no-store", credentials: this.opts.credentials });
        if (res.status !== 200) {
          await this.refused(res);
          return;
        }
        this.reported(reason);
        bytes = new Uint8Array(await res.arrayBuffer());
      } catch (err) {
        if (this.down === ac && !this.closed) {
          this.down = undefined;
          this.reattach(unavailable(`a poll failed: ${String(err)}`));
        }
        return;
      }
      if (this.down !== ac) {
        return;
      }
      this.attached("poll");
      this.receive(bytes, false);
    }
  }

  /** refused handles a non-200 answer to a downstream or upstream request. */
  private async refused(res: Response): Promise<void> {
    const st = await statusFromResponse(res);
    if (res.status === 404 || res.status === 403 || res.status === 400) {
      this.end(unavailable(`the session was lost: ${st.message}`));
      return;
    }
    this.detach();
    this.reattach(st);
  }

  /** attached records a downstream that delivered its HELLO. */
  private attached(carrier: SessionCarrier): void {
    const resumed = this.cutAt !== undefined;
    this.cutAt = undefined;
    this.attempt = 0;
    if (resumed) {
      this.resumes++;
    }
    const changed = carrier !== this.carrierNow;
    this.carrierNow = carrier;
    if (this.state !== "open" || changed) {
      this.setState("open");
    }
  }

  /** detach drops the current downstream without a word to the bridge. */
  private detach(): void {
    const ws = this.ws;
    this.ws = undefined;
    this.wsReady = false;
    ws?.close(1000);
    this.down?.abort();
    this.down = undefined;
  }

  /** reattach attaches a new downstream after a cut, with a back-off, within the grace period. */
  private reattach(reason: Status): void {
    if (this.closed || this.retryTimer !== undefined) {
      return;
    }
    const now = Date.now();
    this.cutAt ??= now;
    const grace = this.helloNow?.graceMs ?? defaultGraceMs;
    if (now - this.cutAt > grace) {
      this.end(unavailable(`the session could not be resumed within its grace period of ${grace} ms: ${reason.message}`));
      return;
    }
    this.setState("reconnecting", reason);
    const delay = this.attempt === 0 ? 0 : Math.min(maxBackoffMs, 100 * 2 ** this.attempt);
    this.attempt++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, delay);
  }

  private downURL(poll: boolean, reason: FallbackReason | undefined): string {
    return `${this.url}?sid=${this.token}&ack=${this.ackParam()}${poll ? "&poll=1" : ""}${this.fallbackParam("&", reason)}`;
  }

  /** fallbackParam is the query parameter that tells the bridge reason, if any. */
  private fallbackParam(sep: "?" | "&", reason: FallbackReason | undefined): string {
    return reason === undefined ? "" : `${sep}fallback=${reason}`;
  }

  /** reported forgets reason once a request that told it was answered 200: the bridge counted it. */
  private reported(reason: FallbackReason | undefined): void {
    if (this.fallback === reason) {
      this.fallback = undefined;
    }
  }

  /** ackParam is the ack of a reattach or a poll, which acknowledges what came so far. */
  private ackParam(): number {
    this.ackedIn = this.inSeq;
    this.inFrames = 0;
    this.inBytes = 0;
    return this.inSeq;
  }

  private upURL(): string {
    return `${this.url}?sid=${this.token}`;
  }

  private postInit(body: Uint8Array, keepalive = false): RequestInit {
    return {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: body as BodyInit,
      cache: "no-store",
      credentials: this.opts.credentials,
      keepalive,
    };
  }

  // Upstream ------------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushQueued) {
      return;
    }
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  /** flush writes what waits: on the WebSocket at once, over HTTP in the next POST. */
  private flush(): void {
    if (this.closed || this.token === "") {
      return;
    }
    if (this.viaWebSocket) {
      if (this.ws === undefined || !this.wsReady) {
        return; // sent after the next HELLO
      }
      const frames = this.takeControl();
      const body = this.concat(frames, this.unacked.filter((o) => o.seq > this.sentSeq));
      if (body.length > 0) {
        this.sentSeq = this.outSeq;
        this.ws.send(body);
      }
      return;
    }
    if (!this.posting) {
      void this.post();
    }
  }

  /** takeControl takes the unsequenced frames to send, with an ACK when one is due. */
  private takeControl(): Frame[] {
    const frames = this.control;
    this.control = [];
    if (this.inSeq > this.ackedIn) {
      frames.push({ type: FrameType.ACK, seq: 0, call: 0, payload: uvarintPayload(this.inSeq) });
      this.ackedIn = this.inSeq;
      this.inFrames = 0;
      this.inBytes = 0;
      clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
    }
    return frames;
  }

  private concat(control: Frame[], out: readonly Outgoing[]): Uint8Array {
    const parts = [encodeFrames(control), ...out.map((o) => o.bytes)];
    const n = parts.reduce((s, p) => s + p.length, 0);
    const body = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      body.set(p, at);
      at += p.length;
    }
    return body;
  }

  /**
   * post sends upstream POSTs, one at a time, until nothing waits. Each body
   * holds every frame not acknowledged yet (up to the size limit), so a POST
   * whose answer was lost is simply sent again: the bridge skips duplicates.
   */
  private async post(): Promise<void> {
    this.posting = true;
    let failedAt: number | undefined;
    let attempt = 0;
    try {
      while (!this.closed) {
        const ackedBefore = this.ackedIn;
        const control = this.takeControl();
        const limit = (this.helloNow?.maxMessage ?? 4 << 20) + postOverhead;
        const out: Outgoing[] = [];
        let size = 0;
        for (const o of this.unacked) {
          if (out.length > 0 && size + o.bytes.length > limit) {
            break;
          }
          out.push(o);
          size += o.bytes.length;
        }
        if (control.length === 0 && out.length === 0) {
          return;
        }
        let res: Response | undefined;
        let err: unknown;
        try {
          res = await this.fetchImpl(this.upURL(), this.postInit(this.concat(control, out)));
        } catch (e) {
          err = e;
        }
        if (this.closed) {
          return;
        }
        if (res !== undefined && res.status === 200) {
          this.receive(new Uint8Array(await res.arrayBuffer()), false);
          failedAt = undefined;
          if (out.length > 0 && this.unacked[0] === out[0]) {
            // Answered but not acknowledged: wait before sending it again.
            await new Promise((r) => setTimeout(r, Math.min(maxBackoffMs, 100 * 2 ** attempt++)));
          } else {
            attempt = 0;
          }
          continue;
        }
        // Not taken: the ACK is due again, and the frames are still kept.
        this.ackedIn = Math.min(this.ackedIn, ackedBefore);
        if (res !== undefined && (res.status === 404 || res.status === 403 || res.status === 400 || res.status === 413)) {
          const st = await statusFromResponse(res);
          this.end(unavailable(`the session was lost: ${st.message}`));
          return;
        }
        const now = Date.now();
        failedAt ??= now;
        const grace = this.helloNow?.graceMs ?? defaultGraceMs;
        if (now - failedAt > grace) {
          const why = res !== undefined ? `HTTP ${res.status}` : String(err);
          this.end(unavailable(`frames could not be sent within the grace period: ${why}`));
          return;
        }
        await res?.body?.cancel().catch(() => {});
        await new Promise((r) => setTimeout(r, Math.min(maxBackoffMs, 100 * 2 ** attempt++)));
      }
    } finally {
      this.posting = false;
    }
  }

  // Downstream ------------------------------------------------------------

  /** receive takes a batch of frames from the bridge. */
  private receive(bytes: Uint8Array, webSocket: boolean): void {
    let frames: Frame[];
    try {
      frames = decodeFrames(bytes);
    } catch (err) {
      this.end({ code: Code.INTERNAL, message: `the bridge sent a malformed frame: ${String(err)}`, details: [], trailers: {} });
      return;
    }
    for (const f of frames) {
      if (this.closed) {
        return;
      }
      if (isSequenced(f.type)) {
        if (f.seq <= this.inSeq) {
          continue; // resent after a cut: taken before
        }
        if (f.seq > this.inSeq + 1) {
          break; // a frame is missing: the rest is resent after the ack
        }
        this.inSeq = f.seq;
        this.inFrames++;
        this.inBytes += f.payload.length;
        this.calls.get(f.call)?.frame(f);
        continue;
      }
      switch (f.type) {
        case FrameType.HELLO:
          this.takeHello(decodeHello(f.payload), webSocket);
          break;
        case FrameType.ACK:
          this.acked(readUvarintPayload(f.payload, "ACK"));
          break;
        case FrameType.PING:
          this.control.push({ type: FrameType.PONG, seq: 0, call: 0, payload: f.payload.slice() });
          this.scheduleFlush();
          break;
        case FrameType.GOAWAY: {
          const json = jsonPayload(f.payload);
          const st = json === undefined ? unavailable("the bridge ended the session") : parseStatus(json);
          this.end(st.code === Code.OK ? unavailable(st.message || "the bridge ended the session") : st);
          return;
        }
        default:
        // PONG, and frame types of later revisions
      }
    }
    this.scheduleAck();
  }

  private takeHello(h: Hello, webSocket: boolean): void {
    const first = this.helloNow === undefined;
    this.helloNow = h;
    this.token = h.token;
    this.acked(h.ack);
    if (webSocket) {
      this.scheduleFlush(); // resends what the bridge has not received (sentSeq was reset on attach)
    }
    if (first) {
      for (const c of this.calls.values()) {
        c.hello(h);
      }
    }
  }

  /** acked drops the frames that the bridge has received. */
  private acked(n: number): void {
    let i = 0;
    while (i < this.unacked.length && (this.unacked[i] as Outgoing).seq <= n) {
      i++;
    }
    if (i > 0) {
      this.unacked.splice(0, i);
    }
    this.sentSeq = Math.max(this.sentSeq, n);
  }

  /** scheduleAck acknowledges what came: at once after 32 frames or 64 KiB, else within 100 ms. */
  private scheduleAck(): void {
    if (this.inSeq <= this.ackedIn || this.carrierNow === "poll") {
      return; // each poll's ack=N acknowledges
    }
    if (this.inFrames >= ackFrames || this.inBytes >= ackBytes) {
      this.scheduleFlush();
      return;
    }
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.scheduleFlush();
    }, ackDelayMs);
  }

  // State -----------------------------------------------------------------

  private setState(state: ConnectionState, reason?: Status): void {
    this.state = state;
    this.opts.onState?.(state, { carrier: this.carrierNow, reason, resumes: this.resumes });
  }

  /** end ends the session and every call in it with st. */
  private end(st: Status): void {
    if (this.closed) {
      return;
    }
    this.closed = true;
    clearTimeout(this.ackTimer);
    clearTimeout(this.retryTimer);
    this.detach();
    this.unacked = [];
    this.control = [];
    const calls = [...this.calls.values()];
    this.calls.clear();
    for (const c of calls) {
      c.end(st);
    }
    this.setState("closed", st);
    this.onEnd();
  }
}

/** A message received and the bytes to grant back once it is taken. */
interface Received<T> {
  readonly value: T;
  readonly size: number;
}

/**
 * SessionCall is one call in a session, with the API of a WebSocket call:
 * its messages both ways within the call's windows, half-close, cancel,
 * headers, status.
 */
class SessionCall<I extends DescMessage, O extends DescMessage> implements WebSocketCall<I, O>, CallSink {
  private readonly id: number;
  private readonly queue: AsyncQueue<Received<MessageShape<O>>>;
  private readonly headersD = new Deferred<Metadata>();
  private readonly statusD = new Deferred<Status>();
  private window: number | undefined; // upstream credit; undefined before HELLO
  private downWindow = 0;
  private credit = 0; // bytes taken by the application, not granted yet
  private pending: Uint8Array[] = []; // messages waiting for credit
  private sendClosed = false;
  private halfClosed = false;
  private done = false;

  constructor(
    private readonly session: Session,
    private readonly input: I,
    private readonly output: O,
    path: string,
    options: WebSocketOptions,
  ) {
    this.queue = new AsyncQueue(() => this.cancel());
    this.id = session.register(this);
    session.send(FrameType.OPEN, this.id, openPayload(0, path, options.metadata));
    options.signal?.addEventListener("abort", () => this.cancel(), { once: true });
  }

  get headers(): Promise<Metadata> {
    return this.headersD.promise;
  }

  get status(): Promise<Status> {
    return this.statusD.promise;
  }

  [Symbol.asyncIterator](): AsyncIterator<MessageShape<O>> {
    const it = this.queue[Symbol.asyncIterator]();
    return {
      next: async () => {
        const r = await it.next();
        if (r.done) {
          return { value: undefined, done: true };
        }
        this.grant(r.value.size);
        return { value: r.value.value, done: false };
      },
      return: async () => {
        await it.return?.();
        return { value: undefined, done: true };
      },
    };
  }

  send(message: MessageInitShape<I>): void {
    if (this.sendClosed) {
      throw new Error("send after closeSend");
    }
    if (this.done) {
      return; // the call has ended; its status tells why
    }
    this.pending.push(toBinary(this.input, create(this.input, message)));
    this.pump();
  }

  closeSend(): void {
    this.sendClosed = true;
    this.pump();
  }

  cancel(): void {
    if (this.done) {
      return;
    }
    this.session.send(FrameType.CANCEL, this.id, emptyPayload);
    this.finish({ code: Code.CANCELED, message: "canceled by the client", details: [], trailers: {} }, false);
  }

  /** pump sends the messages that the window allows, then the half-close. */
  private pump(): void {
    if (this.done || this.window === undefined) {
      return;
    }
    while (this.pending.length > 0 && this.window > 0) {
      const msg = this.pending.shift() as Uint8Array;
      this.window -= msg.length;
      this.session.send(FrameType.MESSAGE, this.id, msg);
    }
    if (this.sendClosed && this.pending.length === 0 && !this.halfClosed) {
      this.halfClosed = true;
      this.session.send(FrameType.HALF_CLOSE, this.id, emptyPayload);
    }
  }

  /** grant gives the bridge credit for what the application took, in batches of half the window. */
  private grant(size: number): void {
    this.credit += size;
    if (!this.done && this.credit > 0 && this.credit >= this.downWindow / 2) {
      this.session.send(FrameType.WINDOW, this.id, uvarintPayload(this.credit));
      this.credit = 0;
    }
  }

  hello(h: Hello): void {
    this.window = h.window;
    this.downWindow = h.window;
    this.pump();
  }

  frame(f: Frame): void {
    if (this.done) {
      return;
    }
    switch (f.type) {
      case FrameType.HEADERS: {
        const json = safeJSON(f.payload) as { headers?: unknown } | undefined;
        this.headersD.resolve(parseMetadata(json?.headers));
        return;
      }
      case FrameType.MESSAGE: {
        let msg: MessageShape<O>;
        try {
          msg = fromBinary(this.output, f.payload);
        } catch (err) {
          this.session.send(FrameType.CANCEL, this.id, emptyPayload);
          this.finish({ code: Code.INTERNAL, message: `cannot decode ${this.output.typeName}: ${String(err)}`, details: [], trailers: {} });
          return;
        }
        this.headersD.resolve({});
        this.queue.push({ value: msg, size: f.payload.length });
        return;
      }
      case FrameType.STATUS: {
        const json = safeJSON(f.payload) as { status?: unknown; trailers?: unknown } | undefined;
        this.finish(parseStatus(json?.status, json?.trailers));
        return;
      }
      case FrameType.WINDOW:
        if (this.window !== undefined) {
          this.window += readUvarintPayload(f.payload, "WINDOW");
          this.pump();
        }
        return;
      default:
    }
  }

  end(st: Status): void {
    this.finish(st);
  }

  private finish(st: Status, fail = true): void {
    if (this.done) {
      return;
    }
    this.done = true;
    this.pending = [];
    this.session.unregister(this.id);
    this.headersD.resolve({});
    this.statusD.resolve(st);
    this.queue.close(st.code !== Code.OK && fail ? StatusError.from(st) : undefined, !fail);
  }
}

function safeJSON(payload: Uint8Array): unknown {
  try {
    return jsonPayload(payload);
  } catch {
    return undefined;
  }
}

/**
 * SessionStream is a server-streaming (or unary) call in a session, with
 * the API of an event stream: lastEventId counts the messages taken.
 */
class SessionStream<I extends DescMessage, O extends DescMessage> implements ServerStream<MessageShape<O>> {
  private taken = 0;
  constructor(private readonly call: WebSocketCall<I, O>) {}

  get headers(): Promise<Metadata> {
    return this.call.headers;
  }

  get status(): Promise<Status> {
    return this.call.status;
  }

  get lastEventId(): string {
    return this.taken === 0 ? "" : String(this.taken);
  }

  close(): void {
    this.call.cancel();
  }

  [Symbol.asyncIterator](): AsyncIterator<MessageShape<O>> {
    const it = this.call[Symbol.asyncIterator]();
    return {
      next: async () => {
        const r = await it.next();
        if (!r.done) {
          this.taken++;
        }
        return r;
      },
      return: async () => {
        await it.return?.();
        return { value: undefined, done: true };
      },
    };
  }
}

/** sessionWatch starts a server stream over the session: one request, then the responses. */
export function sessionWatch<I extends DescMessage, O extends DescMessage>(
  session: Session,
  input: I,
  output: O,
  path: string,
  request: MessageInitShape<I>,
  options: StreamOptions = {},
): ServerStream<MessageShape<O>> {
  const call = session.open(input, output, path, { signal: options.signal });
  call.send(request);
  call.closeSend();
  const stream = new SessionStream(call);
  if (options.onState !== undefined) {
    options.onState("open", { lastEventId: "" });
    void call.status.then((st) =>
      options.onState?.("closed", { lastEventId: stream.lastEventId, reason: st.code === Code.OK ? undefined : st }),
    );
  }
  return stream;
}

/**
 * sessionUnary makes a unary call over the session and returns the
 * response; a failure throws a StatusError. headers become the call's
 * metadata.
 */
export async function sessionUnary<I extends DescMessage, O extends DescMessage>(
  session: Session,
  input: I,
  output: O,
  path: string,
  request: MessageInitShape<I>,
  options: { headers?: HeadersInit; signal?: AbortSignal } = {},
): Promise<MessageShape<O>> {
  const metadata: Metadata = {};
  new Headers(options.headers).forEach((v, k) => {
    metadata[k] = [...(metadata[k] ?? []), v];
  });
  const call = session.open(input, output, path, { metadata, signal: options.signal });
  call.send(request);
  call.closeSend();
  let out: MessageShape<O> | undefined;
  for await (const msg of call) {
    out ??= msg;
  }
  const st = await call.status;
  if (st.code !== Code.OK) {
    throw StatusError.from(st);
  }
  if (out === undefined) {
    throw new StatusError(Code.INTERNAL, "the call ended without a response");
  }
  return out;
}
