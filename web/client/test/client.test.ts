import { describe, expect, it } from "vitest";
import { BridgeClient, queryOf } from "../src/client.js";
import { StreamRequestSchema, EchoService } from "../../src/gen/demo/v1/echo_pb.js";
import { TickerService, WatchRequestSchema } from "../../src/gen/demo/v1/ticker_pb.js";

describe("BridgeClient", () => {
  it("puts each method at its gRPC path", () => {
    expect(new BridgeClient().url(TickerService.method.watch)).toBe("/demo.v1.TickerService/Watch");
    expect(new BridgeClient("https://bridge.example/").url(EchoService.method.stream)).toBe(
      "https://bridge.example/demo.v1.EchoService/Stream",
    );
  });

  it("encodes requests as query strings with proto field names, defaults left out", () => {
    expect(queryOf(WatchRequestSchema, { symbol: "A B", intervalMs: 50, afterSeq: 12345678901234567890n }).toString()).toBe(
      "symbol=A+B&interval_ms=50&after_seq=12345678901234567890",
    );
    expect(queryOf(StreamRequestSchema, { failCode: 9, failMessage: "x&y" }).toString()).toBe("fail_code=9&fail_message=x%26y");
    expect(queryOf(WatchRequestSchema, {}).toString()).toBe("");
  });
});
