import { toBinary, create, fromBinary } from "@bufbuild/protobuf";
import { beforeEach, describe, expect, it } from "vitest";
import { openWebSocket, webSocketURL } from "../src/websocket.js";
import { EchoRequestSchema, EchoResponseSchema } from "../../src/gen/demo/v1/echo_pb.js";
import { FakeWebSocket, collect } from "./fakes.js";

const WS = FakeWebSocket as unknown as typeof WebSocket;

function echo(text: string, seq: number): Uint8Array {
  return toBinary(EchoResponseSchema, create(EchoResponseSchema, { text, seq: BigInt(seq) }));
}

describe("openWebSocket", () => {
  beforeEach(() => {
    FakeWebSocket.instances = [];
  });

  it("speaks grpc-ws.v1: metadata first, binary messages, end, headers and status", async () => {
    const call = openWebSocket(EchoRequestSchema, EchoResponseSchema, "http://127.0.0.1:8080/demo.v1.EchoService/Echo", {
      metadata: { authorization: ["Bearer t"] },
      WebSocket: WS,
    });
    const ws = FakeWebSocket.instances[0]!;
    expect(ws.url).toBe("ws://127.0.0.1:8080/demo.v1.EchoService/Echo");
    expect(ws.protocols).toEqual(["grpc-ws.v1"]);
    expect(ws.binaryType).toBe("arraybuffer");
    call.send({ text: "hi" }); // before open: queued
    ws.open();
    call.closeSend();
    expect(() => call.send({ text: "late" })).toThrow();
    expect(ws.sent[0]).toBe('{"metadata":{"authorization":["Bearer t"]}}');
    expect(fromBinary(EchoRequestSchema, ws.sent[1] as Uint8Array).text).toBe("hi");
    expect(ws.sent[2]).toBe('{"end":true}');

    ws.text({ headers: { "x-shard": ["1"] } });
    ws.binary(echo("hi", 1));
    ws.text({ status: { code: 0, message: "", details: [] }, trailers: { t: ["v"] } });
    ws.serverClose(1000);
    const { items, error } = await collect(call);
    expect(error).toBeUndefined();
    expect(items.map((m) => [m.text, m.seq])).toEqual([["hi", 1n]]);
    expect(await call.headers).toEqual({ "x-shard": ["1"] });
    expect(await call.status).toEqual({ code: 0, message: "", details: [], trailers: { t: ["v"] } });
  });

  it("throws the status frame's error", async () => {
    const call = openWebSocket(EchoRequestSchema, EchoResponseSchema, "ws://h/x", { WebSocket: WS });
    const ws = FakeWebSocket.instances[0]!;
    ws.open();
    ws.binary(echo("a", 1));
    ws.text({ status: { code: 8, message: "quota gone", details: [] }, trailers: {} });
    ws.serverClose(4008, "quota gone");
    const { items, error } = await collect(call);
    expect(items).toHaveLength(1);
    expect(error).toMatchObject({ code: 8, rawMessage: "quota gone" });
  });

  it("makes a close without a status UNAVAILABLE, a refused handshake too", async () => {
    const call = openWebSocket(EchoRequestSchema, EchoResponseSchema, "ws://h/x", { WebSocket: WS });
    FakeWebSocket.instances[0]!.serverClose(1006);
    const { error } = await collect(call);
    expect(error).toMatchObject({ code: 14 });
    expect((await call.status).message).toContain("1006");
  });

  it("fails when the server does not select the subprotocol", async () => {
    const call = openWebSocket(EchoRequestSchema, EchoResponseSchema, "ws://h/x", { WebSocket: WS });
    const ws = FakeWebSocket.instances[0]!;
    ws.open("other");
    expect((await call.status).code).toBe(12);
    expect(ws.closedWith).toBe(1000);
  });

  it("cancels: closes the socket, status CANCELED, iteration ends", async () => {
    const call = openWebSocket(EchoRequestSchema, EchoResponseSchema, "ws://h/x", { WebSocket: WS });
    const ws = FakeWebSocket.instances[0]!;
    ws.open();
    call.cancel();
    const { error } = await collect(call);
    expect(error).toBeUndefined();
    expect((await call.status).code).toBe(1);
    expect(ws.closedWith).toBe(1000);
  });

  it("maps http and https URLs to ws and wss", () => {
    expect(webSocketURL("https://b.example/x")).toBe("wss://b.example/x");
    expect(webSocketURL("ws://b.example/x")).toBe("ws://b.example/x");
  });
});
