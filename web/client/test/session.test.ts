import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BridgeClient } from "../src/client.js";
import { Session, carrierChoice, forgetCarrierChoices, type SessionInfo } from "../src/session.js";
import {
  FrameType,
  decodeFrames,
  encodeFrames,
  encodeHello,
  openPayload,
  readUvarintPayload,
  toBase64,
  uvarintPayload,
  type Frame,
} from "../src/session_frame.js";
import { Code } from "../src/status.js";
import { unary } from "../src/unary.js";
import { ChatMessageSchema, ChatService } from "../../src/gen/demo/v1/chat_pb.js";
import { EchoRequestSchema, EchoResponseSchema, EchoService } from "../../src/gen/demo/v1/echo_pb.js";
import { FakeWebSocket, collect } from "./fakes.js";

const WS = FakeWebSocket as unknown as typeof WebSocket;
const base = "http://b.test";
const sessionURL = "http://b.test/_bridge/session";
const echoPath = "/demo.v1.EchoService/Echo";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function hello(token: string, ack = 0, window = 256 << 10): Frame {
  const payload = encodeHello({ token, ack, maxCalls: 100, window, maxMessage: 4 << 20, graceMs: 1000 });
  return { type: FrameType.HELLO, seq: 0, call: 0, payload };
}
const ack = (n: number): Frame => ({ type: FrameType.ACK, seq: 0, call: 0, payload: uvarintPayload(n) });
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const echoed = (text: string) => toBinary(EchoResponseSchema, create(EchoResponseSchema, { text }));
const msg = (seq: number, call: number, text: string): Frame => ({ type: FrameType.MESSAGE, seq, call, payload: echoed(text) });
const headers = (seq: number, call: number): Frame => ({ type: FrameType.HEADERS, seq, call, payload: json({ headers: {} }) });
const ok = (seq: number, call: number): Frame => ({
  type: FrameType.STATUS,
  seq,
  call,
  payload: json({ status: { code: 0, message: "", details: [] }, trailers: { t: ["v"] } }),
});

/** brief is a frame as [type, seq, call], for comparisons. */
const brief = (f: Frame) => [f.type, f.seq, f.call];

function sentFrames(ws: FakeWebSocket): Frame[] {
  return ws.sent.flatMap((b) => decodeFrames(b as Uint8Array));
}

/** A request that the fake bridge got. */
interface Req {
  method: string;
  url: URL;
  body: Uint8Array;
  signal?: AbortSignal;
}

/** bridgeFetch is a fetch answered by handler, which records every request. */
function bridgeFetch(handler: (r: Req) => Response | Promise<Response>): { fetch: typeof fetch; reqs: Req[] } {
  const reqs: Req[] = [];
  const f = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const body = init.body === undefined || init.body === null ? new Uint8Array() : new Uint8Array(init.body as Uint8Array);
    const r: Req = { method: init.method ?? "GET", url: new URL(String(input)), body, signal: init.signal ?? undefined };
    reqs.push(r);
    return handler(r);
  };
  return { fetch: f as typeof fetch, reqs };
}

const octets = (frames: Frame[]) =>
  new Response(encodeFrames(frames) as BodyInit, { status: 200, headers: { "Content-Type": "application/octet-stream" } });

/** EventStream is a 200 text/event-stream answer that the test writes events to. */
class EventStream {
  private c!: ReadableStreamDefaultController<Uint8Array>;
  readonly response: Response;
  constructor() {
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (this.c = c) });
    this.response = new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
  }
  send(frames: Frame[], id?: number): void {
    const text = `${id === undefined ? "" : `id: ${id}\n`}data: ${toBase64(encodeFrames(frames))}\n\n`;
    this.c.enqueue(new TextEncoder().encode(text));
  }
  end(): void {
    this.c.close();
  }
}

/** hang is an answer that never comes, until the request is aborted. */
function hang(r: Req): Promise<Response> {
  return new Promise((_, reject) => r.signal?.addEventListener("abort", () => reject(new Error("aborted"))));
}

const statusError = (status: number, code: number, message: string) =>
  new Response(JSON.stringify({ code, message, details: [] }), { status, headers: { "Content-Type": "application/json" } });

beforeEach(() => {
  FakeWebSocket.instances = [];
  forgetCarrierChoices();
});

let sessions: Session[] = [];
function session(opts: ConstructorParameters<typeof Session>[1]): Session {
  const s = new Session(base, opts);
  sessions.push(s);
  return s;
}
afterEach(() => {
  for (const s of sessions) {
    s.close();
  }
  sessions = [];
});

describe("Session over a WebSocket", () => {
  it("tries a WebSocket first: numbered frames, a whole call, acknowledgements", async () => {
    const { fetch, reqs } = bridgeFetch(hang);
    const s = session({ WebSocket: WS, fetch });
    const ws = FakeWebSocket.instances[0]!;
    expect(ws.url).toBe("ws://b.test/_bridge/session");
    expect(ws.protocols).toEqual(["grpc-session.v1"]);
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    call.send({ text: "hi" });
    call.closeSend();
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T")]));
    await sleep(0);
    const up = sentFrames(ws);
    expect(up.map(brief)).toEqual([
      [FrameType.OPEN, 1, 1],
      [FrameType.MESSAGE, 2, 1],
      [FrameType.HALF_CLOSE, 3, 1],
    ]);
    expect(up[0]!.payload).toEqual(openPayload(0, echoPath));

    ws.binary(encodeFrames([ack(3), headers(1, 1), msg(2, 1, "hi"), ok(3, 1)]));
    const { items, error } = await collect(call);
    expect(error).toBeUndefined();
    expect(items.map((m) => m.text)).toEqual(["hi"]);
    expect(await call.status).toEqual({ code: 0, message: "", details: [], trailers: { t: ["v"] } });
    expect(s.carrier).toBe("websocket");
    expect(carrierChoice(sessionURL)).toBe("websocket");
    expect(reqs).toHaveLength(0);

    await sleep(150); // the acknowledgement is due within 100 ms
    const acks = sentFrames(ws).filter((f) => f.type === FrameType.ACK);
    expect(acks.map((f) => readUvarintPayload(f.payload, "ack"))).toEqual([3]);
  });

  it("after a cut, reattaches with sid and ack, resends only what the bridge lacks, and skips what it had", async () => {
    const states: [string, SessionInfo][] = [];
    const s = session({ WebSocket: WS, fetch: bridgeFetch(hang).fetch, onState: (st, info) => states.push([st, info]) });
    const ws1 = FakeWebSocket.instances[0]!;
    ws1.open("grpc-session.v1");
    ws1.binary(encodeFrames([hello("T1")]));
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    call.send({ text: "a" });
    call.send({ text: "b" });
    await sleep(0);
    expect(sentFrames(ws1).map(brief)).toEqual([
      [FrameType.OPEN, 1, 1],
      [FrameType.MESSAGE, 2, 1],
      [FrameType.MESSAGE, 3, 1],
    ]);
    ws1.binary(encodeFrames([ack(2), headers(1, 1), msg(2, 1, "x")]));
    ws1.serverClose(1006); // the bridge had up to seq 2 of ours; we have up to 2 of its
    await sleep(0);

    const ws2 = FakeWebSocket.instances[1]!;
    expect(ws2.url).toBe("ws://b.test/_bridge/session?sid=T1&ack=2");
    ws2.open("grpc-session.v1");
    ws2.binary(encodeFrames([hello("T2", 2)]));
    await sleep(0);
    expect(sentFrames(ws2).map(brief)).toEqual([[FrameType.MESSAGE, 3, 1]]);
    // The bridge resends seq 2, which the client had, then goes on.
    ws2.binary(encodeFrames([msg(2, 1, "x"), msg(3, 1, "y"), ok(4, 1)]));
    const { items } = await collect(call);
    expect(items.map((m) => m.text)).toEqual(["x", "y"]);
    expect(states.map(([st]) => st)).toEqual(["open", "reconnecting", "open"]);
    expect(states[2]![1].resumes).toBe(1);

    // The next reattach uses the latest token.
    ws2.serverClose(1006);
    await sleep(0);
    expect(FakeWebSocket.instances[2]!.url).toBe("ws://b.test/_bridge/session?sid=T2&ack=4");
  });

  it("cancel sends CANCEL and ends the call CANCELED; the session and other calls go on", async () => {
    const s = session({ WebSocket: WS, fetch: bridgeFetch(hang).fetch });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T")]));
    const a = s.open(EchoRequestSchema, EchoResponseSchema, echoPath, { metadata: { "x-k": ["v"] } });
    const b = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    a.cancel();
    await sleep(0);
    expect(sentFrames(ws).map(brief)).toEqual([
      [FrameType.OPEN, 1, 1],
      [FrameType.OPEN, 2, 2],
      [FrameType.CANCEL, 3, 1],
    ]);
    expect((await a.status).code).toBe(Code.CANCELED);
    // The bridge's STATUS for the canceled call is ignored; the other call is served.
    const canceled = json({ status: { code: 1, message: "canceled", details: [] }, trailers: {} });
    ws.binary(encodeFrames([{ type: FrameType.STATUS, seq: 1, call: 1, payload: canceled }, msg(2, 2, "b"), ok(3, 2)]));
    const { items } = await collect(b);
    expect(items.map((m) => m.text)).toEqual(["b"]);
    expect(await b.status).toEqual({ code: 0, message: "", details: [], trailers: { t: ["v"] } });
    expect(s.size).toBe(0);
    expect(s.ended).toBe(false);
  });

  it("a frame ahead of the next seq discards the rest of its batch", async () => {
    const s = session({ WebSocket: WS, fetch: bridgeFetch(hang).fetch });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T")]));
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    ws.binary(encodeFrames([msg(1, 1, "one"), msg(3, 1, "three"), msg(4, 1, "four")]));
    ws.binary(encodeFrames([msg(2, 1, "two"), msg(3, 1, "three"), ok(4, 1)]));
    const { items } = await collect(call);
    expect(items.map((m) => m.text)).toEqual(["one", "two", "three"]);
  });

  it("sends within the call's window and waits for WINDOW", async () => {
    const s = session({ WebSocket: WS, fetch: bridgeFetch(hang).fetch });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T", 0, 4)]));
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    call.send({ text: "ab" }); // 4 bytes: the whole window
    call.send({ text: "cd" });
    call.closeSend();
    await sleep(0);
    expect(sentFrames(ws).map(brief)).toEqual([
      [FrameType.OPEN, 1, 1],
      [FrameType.MESSAGE, 2, 1],
    ]);
    ws.binary(encodeFrames([{ type: FrameType.WINDOW, seq: 1, call: 1, payload: uvarintPayload(4) }]));
    await sleep(0);
    expect(sentFrames(ws).filter((f) => f.type !== FrameType.ACK).map(brief).slice(2)).toEqual([
      [FrameType.MESSAGE, 3, 1],
      [FrameType.HALF_CLOSE, 4, 1],
    ]);
  });

  it("grants downstream credit as the application takes messages", async () => {
    const s = session({ WebSocket: WS, fetch: bridgeFetch(hang).fetch });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T", 0, 8)]));
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    ws.binary(encodeFrames([msg(1, 1, "ab"), msg(2, 1, "cd")])); // 4 bytes each
    await sleep(0);
    const windows = () =>
      sentFrames(ws)
        .filter((f) => f.type === FrameType.WINDOW)
        .map((f) => readUvarintPayload(f.payload, "window"));
    expect(windows()).toEqual([]); // nothing taken yet
    const it = call[Symbol.asyncIterator]();
    await it.next();
    await sleep(0);
    expect(windows()).toEqual([4]); // half the window taken: granted back
    await it.next();
    await sleep(0);
    expect(windows()).toEqual([4, 4]);
  });

  it("GOAWAY ends every call with its status, and the next session is a new one", async () => {
    const client = new BridgeClient(base, { sessions: { WebSocket: WS, fetch: bridgeFetch(hang).fetch } });
    const first = client.session()!;
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T")]));
    const call = client.open(EchoService.method.echo);
    const goaway = json({ code: Code.UNAVAILABLE, message: "the bridge is shutting down", details: [] });
    ws.binary(encodeFrames([{ type: FrameType.GOAWAY, seq: 0, call: 0, payload: goaway }]));
    const st = await call.status;
    expect([st.code, st.message]).toEqual([Code.UNAVAILABLE, "the bridge is shutting down"]);
    expect(first.ended).toBe(true);
    expect(client.session()).not.toBe(first);
    client.closeSession();
  });
});

describe("Session carrier choice", () => {
  /** httpBridge answers the HTTP carrier: a create, event streams, and upstream POSTs acknowledged. */
  function httpBridge(opts: { stream?: (r: Req) => Response | Promise<Response>; post?: (r: Req) => Response | undefined } = {}) {
    let last = 0;
    const streams: EventStream[] = [];
    const bridge = bridgeFetch((r) => {
      const sid = r.url.searchParams.get("sid");
      if (r.method === "POST" && sid === null) {
        return octets([hello("T")]);
      }
      if (r.method === "POST") {
        const answer = opts.post?.(r);
        if (answer !== undefined) {
          return answer;
        }
        for (const f of decodeFrames(r.body)) {
          last = Math.max(last, f.seq);
        }
        return octets([ack(last)]);
      }
      if (opts.stream !== undefined) {
        return opts.stream(r);
      }
      const es = new EventStream();
      streams.push(es);
      es.send([hello(sid ?? "", last)]);
      return es.response;
    });
    return { ...bridge, streams };
  }

  it("falls back to the event stream and POSTs when the handshake fails, and remembers it", async () => {
    const bridge = httpBridge();
    const s = session({ WebSocket: WS, fetch: bridge.fetch });
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    call.send({ text: "hi" });
    call.closeSend();
    FakeWebSocket.instances[0]!.serverClose(1006); // refused: no open
    await sleep(10);
    expect(bridge.reqs.map((r) => `${r.method} ${r.url.search}`).sort()).toEqual([
      "GET ?sid=T&ack=0",
      "POST ?fallback=ws-error",
      "POST ?sid=T",
    ]);
    const up = bridge.reqs.find((r) => r.method === "POST" && r.url.searchParams.has("sid"))!;
    expect(decodeFrames(up.body).map(brief)).toEqual([
      [FrameType.OPEN, 1, 1],
      [FrameType.MESSAGE, 2, 1],
      [FrameType.HALF_CLOSE, 3, 1],
    ]);
    expect(up.url.pathname).toBe("/_bridge/session");
    bridge.streams[0]!.send([headers(1, 1), msg(2, 1, "hi"), ok(3, 1)], 3);
    const { items } = await collect(call);
    expect(items.map((m) => m.text)).toEqual(["hi"]);
    expect(s.carrier).toBe("sse");
    expect(carrierChoice(sessionURL)).toBe("sse");
    await sleep(150);
    const ackPost = bridge.reqs.at(-1)!;
    expect(ackPost.method).toBe("POST");
    expect(decodeFrames(ackPost.body).map((f) => [f.type, readUvarintPayload(f.payload, "ack")])).toEqual([[FrameType.ACK, 3]]);

    // Another session of the page does not try the WebSocket again.
    session({ WebSocket: WS, fetch: httpBridge().fetch });
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("falls back when the handshake times out, and skips WebSockets when told to", async () => {
    const slow = httpBridge();
    session({ WebSocket: WS, fetch: slow.fetch, handshakeTimeoutMs: 20 });
    await sleep(5);
    expect(slow.reqs).toHaveLength(0);
    await sleep(40);
    expect(slow.reqs[0]?.method).toBe("POST");
    expect(FakeWebSocket.instances[0]!.closedWith).toBe(1000);

    forgetCarrierChoices();
    const blocked = httpBridge();
    session({ WebSocket: WS, fetch: blocked.fetch, webSocket: false });
    await sleep(5);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(blocked.reqs.map((r) => r.method)).toEqual(["POST", "GET"]);
  });

  it("polls on the same endpoint when the event stream shows no first byte in time", async () => {
    let polls = 0;
    const bridge = httpBridge({
      stream: (r) => {
        if (r.url.searchParams.get("poll") !== "1") {
          return hang(r); // a buffering proxy: nothing until the end
        }
        polls++;
        if (polls === 1) {
          return octets([hello("T"), headers(1, 1), msg(2, 1, "polled"), ok(3, 1)]);
        }
        return hang(r);
      },
    });
    const s = session({ WebSocket: WS, fetch: bridge.fetch, webSocket: false, firstByteTimeoutMs: 20 });
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    call.send({ text: "polled" });
    call.closeSend();
    const { items } = await collect(call);
    expect(items.map((m) => m.text)).toEqual(["polled"]);
    expect(s.carrier).toBe("poll");
    expect(carrierChoice(sessionURL)).toBe("poll");
    const gets = bridge.reqs.filter((r) => r.method === "GET").map((r) => r.url.search);
    expect(gets).toEqual(["?sid=T&ack=0", "?sid=T&ack=0&poll=1&fallback=poll-no-first-byte", "?sid=T&ack=3&poll=1"]);
  });

  it("resends a POST that failed as it was: idempotent, in order", async () => {
    let fails = 1;
    const bridge = httpBridge({
      post: () => (fails-- > 0 ? statusError(503, Code.UNAVAILABLE, "draining") : undefined),
    });
    const s = session({ WebSocket: WS, fetch: bridge.fetch, webSocket: false });
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    call.send({ text: "once" });
    await sleep(250);
    const posts = bridge.reqs.filter((r) => r.method === "POST" && r.url.searchParams.has("sid"));
    expect(posts).toHaveLength(2);
    expect(posts[1]!.body).toEqual(posts[0]!.body);
    call.cancel();
  });

  it("a session the bridge no longer has ends its calls UNAVAILABLE", async () => {
    let gets = 0;
    const bridge = httpBridge({
      stream: (r) => {
        gets++;
        if (gets === 1) {
          const es = new EventStream();
          es.send([hello("T")]);
          setTimeout(() => es.end(), 10); // a proxy ends the long response
          return es.response;
        }
        return statusError(404, Code.NOT_FOUND, "no such session: it has ended");
      },
    });
    const s = session({ WebSocket: WS, fetch: bridge.fetch, webSocket: false });
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    const st = await call.status;
    expect(st.code).toBe(Code.UNAVAILABLE);
    expect(st.message).toContain("no such session");
    expect(s.ended).toBe(true);
  });

  /** told lists the fallback= values that the bridge got: method, "new" (a create) or "sid", reason. */
  const told = (reqs: Req[]) =>
    reqs
      .filter((r) => r.url.searchParams.has("fallback"))
      .map((r) => `${r.method} ${r.url.searchParams.has("sid") ? "sid" : "new"} ${r.url.searchParams.get("fallback")}`);

  it("tells the bridge why it fell back, on the creating POST: a failed handshake, a timeout, a blocked WebSocket, a remembered choice", async () => {
    const failed = httpBridge();
    session({ WebSocket: WS, fetch: failed.fetch });
    FakeWebSocket.instances[0]!.serverClose(1006);
    await sleep(10);
    expect(told(failed.reqs)).toEqual(["POST new ws-error"]);

    const remembered = httpBridge(); // the page fell back before
    session({ WebSocket: WS, fetch: remembered.fetch });
    await sleep(10);
    expect(told(remembered.reqs)).toEqual(["POST new remembered"]);

    forgetCarrierChoices();
    const wrong = httpBridge(); // a WebSocket without the session subprotocol
    session({ WebSocket: WS, fetch: wrong.fetch });
    FakeWebSocket.instances[1]!.open("");
    await sleep(10);
    expect(told(wrong.reqs)).toEqual(["POST new ws-error"]);

    forgetCarrierChoices();
    const slow = httpBridge();
    session({ WebSocket: WS, fetch: slow.fetch, handshakeTimeoutMs: 20 });
    await sleep(60);
    expect(told(slow.reqs)).toEqual(["POST new ws-timeout"]);

    forgetCarrierChoices();
    const blocked = httpBridge();
    session({ WebSocket: WS, fetch: blocked.fetch, webSocket: false });
    await sleep(10);
    expect(told(blocked.reqs)).toEqual(["POST new ws-blocked"]);
    expect(FakeWebSocket.instances).toHaveLength(3);
  });

  it("tells the bridge on the first downstream GET when a WebSocket session falls back on a reattach", async () => {
    const bridge = httpBridge();
    session({ WebSocket: WS, fetch: bridge.fetch });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T")]));
    ws.serverClose(1006); // a cut: the session reattaches over a WebSocket...
    await sleep(10);
    FakeWebSocket.instances[1]!.serverClose(1006); // ...which a proxy now refuses
    await sleep(10);
    bridge.streams[0]!.end(); // cut again: reattached without a reason
    await sleep(10);
    expect(bridge.reqs.filter((r) => r.method === "GET").map((r) => r.url.search)).toEqual([
      "?sid=T&ack=0&fallback=ws-error",
      "?sid=T&ack=0",
    ]);
  });

  it("tells the bridge on its first poll that the event stream showed no first byte, again only if that poll was refused", async () => {
    let polls = 0;
    const bridge = httpBridge({
      stream: (r) => {
        if (r.url.searchParams.get("poll") !== "1") {
          return hang(r); // a buffering proxy
        }
        polls++;
        if (polls === 1) {
          return statusError(503, Code.UNAVAILABLE, "draining"); // not counted: sent again
        }
        return polls < 4 ? octets([hello("T")]) : hang(r);
      },
    });
    session({ WebSocket: WS, fetch: bridge.fetch, webSocket: false, firstByteTimeoutMs: 20 });
    await sleep(400);
    expect(told(bridge.reqs)).toEqual(["POST new ws-blocked", "GET sid poll-no-first-byte", "GET sid poll-no-first-byte"]);
    expect(polls).toBe(4);
  });
});

describe("Session grace period and pings", () => {
  it("ends its calls UNAVAILABLE when the downstream stays cut past the grace period", async () => {
    let gets = 0;
    const { fetch } = bridgeFetch((r) => {
      if (r.method === "POST") {
        return octets(r.url.searchParams.has("sid") ? [ack(1)] : [hello("T")]);
      }
      gets++;
      if (gets > 1) {
        return Promise.reject(new TypeError("network error"));
      }
      const es = new EventStream();
      es.send([hello("T")]); // graceMs 1000
      setTimeout(() => es.end(), 10);
      return es.response;
    });
    const s = session({ WebSocket: WS, fetch, webSocket: false });
    const call = s.open(EchoRequestSchema, EchoResponseSchema, echoPath);
    const started = Date.now();
    const st = await call.status;
    expect(st.code).toBe(Code.UNAVAILABLE);
    expect(st.message).toContain("grace period of 1000 ms");
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(gets).toBeGreaterThan(2); // retried with a back-off meanwhile
  });

  it("answers a PING with a PONG of the same bytes", async () => {
    session({ WebSocket: WS, fetch: bridgeFetch(hang).fetch });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T"), { type: FrameType.PING, seq: 0, call: 0, payload: new Uint8Array([1, 2, 3]) }]));
    await sleep(0);
    expect(sentFrames(ws).map((f) => [f.type, [...f.payload]])).toEqual([[FrameType.PONG, [1, 2, 3]]]);
  });
});

describe("BridgeClient with sessions", () => {
  it("carries unary calls in the session, headers as metadata", async () => {
    const client = new BridgeClient(base, { sessions: { WebSocket: WS, fetch: bridgeFetch(hang).fetch } });
    expect(client.sessions).toBe(true);
    const ws = () => FakeWebSocket.instances[0]!;
    const answer = unary(client, ChatService.method.post, { room: "r", text: "u" }, { headers: { Authorization: "Bearer t" } });
    ws().open("grpc-session.v1");
    ws().binary(encodeFrames([hello("T")]));
    await sleep(0);
    const open = sentFrames(ws())[0]!;
    expect(open.type).toBe(FrameType.OPEN);
    expect(new TextDecoder().decode(open.payload)).toContain('{"metadata":{"authorization":["Bearer t"]}}');
    const posted = toBinary(ChatMessageSchema, create(ChatMessageSchema, { room: "r", text: "u" }));
    ws().binary(encodeFrames([headers(1, 1), { type: FrameType.MESSAGE, seq: 2, call: 1, payload: posted }, ok(3, 1)]));
    expect((await answer).text).toBe("u");
    expect(new TextDecoder().decode(open.payload)).toContain("/demo.v1.ChatService/Post");
    client.closeSession();
    expect(sentFrames(ws()).at(-1)!.type).toBe(FrameType.GOAWAY);
  });

  it("carries watch in the session: one request, then the stream; lastEventId counts messages", async () => {
    const client = new BridgeClient(base, { sessions: { WebSocket: WS, fetch: bridgeFetch(hang).fetch } });
    const stream = client.watch(EchoService.method.stream, { count: 2 });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("grpc-session.v1");
    ws.binary(encodeFrames([hello("T")]));
    await sleep(0);
    expect(sentFrames(ws).map(brief)).toEqual([
      [FrameType.OPEN, 1, 1],
      [FrameType.MESSAGE, 2, 1],
      [FrameType.HALF_CLOSE, 3, 1],
    ]);
    ws.binary(encodeFrames([headers(1, 1), msg(2, 1, "a"), msg(3, 1, "b"), ok(4, 1)]));
    const { items, error } = await collect(stream);
    expect(error).toBeUndefined();
    expect(items.map((m) => m.text)).toEqual(["a", "b"]);
    expect(stream.lastEventId).toBe("2");
    client.closeSession();
  });

  it("a bridge without sessions ends the calls with its refusal", async () => {
    const { fetch } = bridgeFetch(() => statusError(404, Code.NOT_FOUND, "no method at /_bridge/session"));
    const client = new BridgeClient(base, { sessions: { WebSocket: WS, fetch } });
    const call = client.open(EchoService.method.echo);
    FakeWebSocket.instances[0]!.serverClose(1006);
    const st = await call.status;
    expect([st.code, st.message]).toEqual([Code.NOT_FOUND, "no method at /_bridge/session"]);
  });

  it("without the option, calls keep their own transports", () => {
    expect(new BridgeClient(base).session()).toBeUndefined();
  });
});
