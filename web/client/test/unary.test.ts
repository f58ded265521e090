import { describe, expect, it } from "vitest";
import { BridgeClient } from "../src/client.js";
import { Code, StatusError } from "../src/status.js";
import { fetchUnary, unary } from "../src/unary.js";
import { ChatMessageSchema, ChatService } from "../../src/gen/demo/v1/chat_pb.js";
import { TickSchema, TickerService } from "../../src/gen/demo/v1/ticker_pb.js";
import { fakeFetch } from "./fakes.js";

const json = (body: string, status = 200, type = "application/json") => () =>
  new Response(body, { status, headers: { "Content-Type": type } });

/** failure awaits p and returns the StatusError it rejects with. */
async function failure(p: Promise<unknown>): Promise<StatusError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StatusError);
  return err as StatusError;
}

describe("unary", () => {
  it("POSTs the request as JSON to the method's gRPC path and decodes the answer", async () => {
    const { fetch, calls } = fakeFetch([json('{"symbol":"ACME","seq":"1764547200","price":12.5,"time":"2025-12-01T00:00:00Z","extra":1}')]);
    const tick = await unary(new BridgeClient("https://bridge.example/"), TickerService.method.quote, { symbol: "ACME" }, {
      fetch,
      headers: { Authorization: "Bearer t" },
    });
    expect([tick.symbol, tick.seq, tick.price, tick.time?.seconds]).toEqual(["ACME", 1764547200n, 12.5, 1764547200n]);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.url).toBe("https://bridge.example/demo.v1.TickerService/Quote");
    expect(calls[0]?.init.method).toBe("POST");
    expect(calls[0]?.init.body).toBe('{"symbol":"ACME"}');
    expect(calls[0]?.headers.get("Content-Type")).toBe("application/json");
    expect(calls[0]?.headers.get("Accept")).toBe("application/json");
    expect(calls[0]?.headers.get("Authorization")).toBe("Bearer t");
  });

  it("throws the JSON status of a non-2xx answer", async () => {
    const { fetch } = fakeFetch([json('{"code":3,"message":"text is required","details":[{"@type":"t"}]}', 400)]);
    const err = await failure(unary(new BridgeClient(), ChatService.method.post, { room: "lobby" }, { fetch }));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(err.rawMessage).toBe("text is required");
    expect(err.details).toEqual([{ "@type": "t" }]);
  });
});

describe("fetchUnary", () => {
  it("GETs a google.api.http path without a body", async () => {
    const { fetch, calls } = fakeFetch([json('{"room":"r","user":"u","text":"hi"}', 200, "application/json; charset=utf-8")]);
    const msg = await fetchUnary(ChatMessageSchema, "/v1/rooms/r/messages/1", {}, { fetch });
    expect([msg.room, msg.user, msg.text]).toEqual(["r", "u", "hi"]);
    expect(calls[0]?.init.method).toBe("GET");
    expect(calls[0]?.init.body).toBeUndefined();
    expect(calls[0]?.headers.get("Content-Type")).toBeNull();
  });

  it("POSTs a google.api.http body", async () => {
    const { fetch, calls } = fakeFetch([json('{"room":"r","user":"u","text":"hi","time":"2025-12-01T00:00:00Z"}')]);
    const msg = await fetchUnary(ChatMessageSchema, "/v1/rooms/r/messages", { body: '{"user":"u","text":"hi"}' }, { fetch });
    expect(msg.time?.seconds).toBe(1764547200n);
    expect(calls[0]?.init.method).toBe("POST");
    expect(calls[0]?.headers.get("Content-Type")).toBe("application/json");
  });

  it("derives a status from an answer without a status body", async () => {
    const { fetch } = fakeFetch([json("upstream down", 503, "text/plain")]);
    const err = await failure(fetchUnary(TickSchema, "/v1/tickers/A", {}, { fetch }));
    expect(err.code).toBe(Code.UNAVAILABLE);
    expect(err.rawMessage).toBe("HTTP 503: upstream down");
  });

  it("fails a connection error with UNAVAILABLE and an abort with CANCELED", async () => {
    const refused = (async () => {
      throw new TypeError("Failed to fetch");
    }) as typeof fetch;
    const err = await failure(fetchUnary(TickSchema, "/v1/tickers/A", {}, { fetch: refused }));
    expect(err.code).toBe(Code.UNAVAILABLE);
    expect(err.rawMessage).toContain("Failed to fetch");

    const { fetch: hang } = fakeFetch([]);
    const abort = new AbortController();
    const call = fetchUnary(TickSchema, "/v1/tickers/A", {}, { fetch: hang, signal: abort.signal });
    abort.abort();
    expect((await failure(call)).code).toBe(Code.CANCELED);
  });

  it("fails a 2xx answer that is not the response message with INTERNAL", async () => {
    for (const res of [
      json("<html>", 200, "text/html"),
      json("{not json"),
      json('{"seq":"not a number"}'),
    ]) {
      const { fetch } = fakeFetch([res]);
      expect((await failure(fetchUnary(TickSchema, "/v1/tickers/A", {}, { fetch }))).code).toBe(Code.INTERNAL);
    }
  });
});
