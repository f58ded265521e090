import { beforeEach, describe, expect, it } from "vitest";
import { fetchEventStream, openEventSource } from "../src/stream.js";
import { StatusError } from "../src/status.js";
import { TickSchema } from "../../src/gen/demo/v1/ticker_pb.js";
import { FakeEventSource, collect, fakeFetch, sseResponse } from "./fakes.js";

const tick = (seq: number) => `id: ${seq}\nevent: message\ndata: {"symbol":"ACME","seq":"${seq}","price":${seq}.5}\n\n`;
const end = 'event: end\ndata: {"code":0,"message":"","details":[],"trailers":{"x-k":["v"]}}\n\n';

describe("fetchEventStream", () => {
  it("decodes messages, resolves headers, ends on end", async () => {
    const { fetch, calls } = fakeFetch([
      () => sseResponse(["retry: 5\n\nevent: headers\ndata: {\"x-shard\":[\"7\"]}\n\n", tick(1), tick(2) + end]),
    ]);
    const s = fetchEventStream(TickSchema, "/demo.v1.TickerService/Watch", {
      fetch,
      body: '{"symbol":"ACME"}',
      headers: { Authorization: "Bearer t" },
    });
    const { items, error } = await collect(s);
    expect(error).toBeUndefined();
    expect(items.map((t) => [t.seq, t.price])).toEqual([
      [1n, 1.5],
      [2n, 2.5],
    ]);
    expect(s.lastEventId).toBe("2");
    expect(await s.headers).toEqual({ "x-shard": ["7"] });
    expect(await s.status).toEqual({ code: 0, message: "", details: [], trailers: { "x-k": ["v"] } });
    expect(calls).toHaveLength(1);
    expect(calls[0]?.init.method).toBe("POST");
    expect(calls[0]?.init.body).toBe('{"symbol":"ACME"}');
    expect(calls[0]?.headers.get("Authorization")).toBe("Bearer t");
    expect(calls[0]?.headers.get("Content-Type")).toBe("application/json");
    expect(calls[0]?.headers.get("Last-Event-ID")).toBeNull();
  });

  it("throws a final error event as a StatusError", async () => {
    const { fetch, calls } = fakeFetch([
      () => sseResponse([tick(1), 'event: error\ndata: {"code":9,"message":"boom","details":[{"@type":"t"}]}\n\n']),
    ]);
    const s = fetchEventStream(TickSchema, "/x", { fetch });
    const { items, error } = await collect(s);
    expect(items).toHaveLength(1);
    expect(error).toBeInstanceOf(StatusError);
    expect(error).toMatchObject({ code: 9, rawMessage: "boom", details: [{ "@type": "t" }] });
    expect((await s.status).code).toBe(9);
    expect(calls).toHaveLength(1);
  });

  it("reconnects with Last-Event-ID after a transient error, with the retry time", async () => {
    const states: string[] = [];
    const { fetch, calls } = fakeFetch([
      () => sseResponse(["retry: 1\n\n", tick(1), tick(2), 'retry: 1\nevent: error\ndata: {"code":14,"message":"down"}\n\n']),
      () => sseResponse([tick(3) + end]),
    ]);
    const s = fetchEventStream(TickSchema, "/x", {
      fetch,
      onState: (st, info) => states.push(`${st}:${info.lastEventId}${info.reason ? `:${info.reason.code}` : ""}`),
    });
    const { items, error } = await collect(s);
    expect(error).toBeUndefined();
    expect(items.map((t) => t.seq)).toEqual([1n, 2n, 3n]);
    expect(calls.map((c) => c.headers.get("Last-Event-ID"))).toEqual([null, "2"]);
    expect(states).toEqual(["open:", "reconnecting:2:14", "open:2", "closed:3"]);
  });

  it("reconnects after a dropped connection and discards the partial event", async () => {
    const { fetch, calls } = fakeFetch([
      () => sseResponse(["retry: 1\n\n", tick(1), "id: 2\nevent: message\ndata: {\"se"]),
      () => sseResponse([tick(2) + end]),
    ]);
    const { items } = await collect(fetchEventStream(TickSchema, "/x", { fetch, lastEventId: "" }));
    expect(items.map((t) => t.seq)).toEqual([1n, 2n]);
    expect(calls[1]?.headers.get("Last-Event-ID")).toBe("1");
  });

  it("resumes a new stream with lastEventId", async () => {
    const { fetch, calls } = fakeFetch([() => sseResponse([tick(8) + end])]);
    const s = fetchEventStream(TickSchema, "/x", { fetch, lastEventId: "7", method: "GET" });
    expect(s.lastEventId).toBe("7");
    await collect(s);
    expect(calls[0]?.headers.get("Last-Event-ID")).toBe("7");
    expect(calls[0]?.init.method).toBe("GET");
  });

  it("makes a non-200 JSON answer a final StatusError", async () => {
    const { fetch, calls } = fakeFetch([
      () =>
        new Response('{"code":3,"message":"symbol is required","details":[]}', {
          status: 400,
          headers: { "Content-Type": "application/json" },
        }),
    ]);
    const s = fetchEventStream(TickSchema, "/x", { fetch });
    const { error } = await collect(s);
    expect(error).toMatchObject({ code: 3, rawMessage: "symbol is required" });
    expect(calls).toHaveLength(1);
  });

  it("stops on close without an error, and without reconnecting", async () => {
    const { fetch, calls } = fakeFetch([() => sseResponse([tick(1)], true)]);
    const s = fetchEventStream(TickSchema, "/x", { fetch });
    const it = s[Symbol.asyncIterator]();
    expect((await it.next()).value?.seq).toBe(1n);
    s.close();
    expect((await it.next()).done).toBe(true);
    expect((await s.status).code).toBe(1);
    expect(calls).toHaveLength(1);
  });
});

describe("openEventSource", () => {
  beforeEach(() => {
    FakeEventSource.instances = [];
  });
  const ES = FakeEventSource as unknown as typeof EventSource;

  it("decodes messages with their ids and closes on end", async () => {
    const s = openEventSource(TickSchema, "/w?symbol=A", { EventSource: ES });
    const es = FakeEventSource.instances[0]!;
    expect(es.url).toBe("/w?symbol=A");
    es.open();
    es.emit("headers", "{}");
    es.emit("message", '{"seq":"1"}', "1");
    es.emit("message", '{"seq":"2"}', "2");
    es.emit("end", '{"code":0,"message":"","details":[]}');
    const { items, error } = await collect(s);
    expect(error).toBeUndefined();
    expect(items.map((t) => t.seq)).toEqual([1n, 2n]);
    expect(s.lastEventId).toBe("2");
    expect(es.readyState).toBe(FakeEventSource.CLOSED);
  });

  it("lets EventSource reconnect after a transient error event and a drop", async () => {
    const states: string[] = [];
    const s = openEventSource(TickSchema, "/w", { EventSource: ES, onState: (st, i) => states.push(`${st}:${i.lastEventId}`) });
    const es = FakeEventSource.instances[0]!;
    es.open();
    es.emit("message", '{"seq":"1"}', "1");
    es.emit("error", '{"code":14,"message":"backend down"}', "1");
    expect(es.readyState).not.toBe(FakeEventSource.CLOSED);
    es.fail(false); // the response ended; EventSource reconnects
    es.open();
    es.emit("message", '{"seq":"2"}', "2");
    es.emit("end", '{"code":0}');
    const { items } = await collect(s);
    expect(items.map((t) => t.seq)).toEqual([1n, 2n]);
    expect(states).toEqual(["open:", "reconnecting:1", "reconnecting:1", "open:1", "closed:2"]);
  });

  it("closes on a final error event and throws it", async () => {
    const s = openEventSource(TickSchema, "/w", { EventSource: ES });
    const es = FakeEventSource.instances[0]!;
    es.open();
    es.emit("error", '{"code":7,"message":"no"}');
    const { error } = await collect(s);
    expect(error).toMatchObject({ code: 7, rawMessage: "no" });
    expect(es.readyState).toBe(FakeEventSource.CLOSED);
  });

  it("reads the status of a refused request with one fetch", async () => {
    const { fetch, calls } = fakeFetch([
      () => new Response('{"code":5,"message":"no such method"}', { status: 404, headers: { "Content-Type": "application/json" } }),
    ]);
    const s = openEventSource(TickSchema, "/nope", { EventSource: ES, fetch });
    FakeEventSource.instances[0]!.fail(true);
    const { error } = await collect(s);
    expect(error).toMatchObject({ code: 5, rawMessage: "no such method" });
    expect(calls.map((c) => c.url)).toEqual(["/nope"]);
  });
});
