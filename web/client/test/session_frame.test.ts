import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  FrameError,
  FrameType,
  decodeFrames,
  decodeHello,
  encodeFrame,
  encodeFrames,
  encodeHello,
  encodeUvarint,
  fromBase64,
  jsonPayload,
  openPayload,
  readUvarintPayload,
  toBase64,
  uvarintPayload,
} from "../src/session_frame.js";
import { EchoRequestSchema, EchoResponseSchema } from "../../src/gen/demo/v1/echo_pb.js";

const text = (s: string) => new TextEncoder().encode(s);

/**
 * hex is bytes as docs/protocol.md writes them: each string is hex bytes
 * ("0c 00 ..."), each Uint8Array is added as it is (text(...) for quoted text).
 */
function hex(...parts: (string | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const part of parts) {
    if (typeof part === "string") {
      out.push(...part.split(/\s+/).filter((b) => b !== "").map((b) => Number.parseInt(b, 16)));
    } else {
      out.push(...part);
    }
  }
  return new Uint8Array(out);
}
const path = "/demo.v1.EchoService/Echo";

// The bytes of docs/protocol.md, "Sessions", "Example".
describe("session frames: the protocol's example", () => {
  it("uvarint: 300 is ac 02; up to 2^53-1", () => {
    expect(encodeUvarint(300)).toEqual(hex("ac 02"));
    expect(encodeUvarint(0)).toEqual(hex("00"));
    for (const v of [127, 128, 262144, 4194304, 30000, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER]) {
      expect(readUvarintPayload(encodeUvarint(v), "v")).toBe(v);
    }
    expect(encodeUvarint(262144)).toEqual(hex("80 80 10"));
    expect(encodeUvarint(4194304)).toEqual(hex("80 80 80 02"));
    expect(encodeUvarint(30000)).toEqual(hex("b0 ea 01"));
  });

  it("client frames: OPEN, MESSAGE, HALF_CLOSE, ACK, GOAWAY", () => {
    expect(encodeFrame({ type: FrameType.OPEN, seq: 1, call: 1, payload: openPayload(0, path) })).toEqual(
      hex("01 00 01 01 1b 00 19", text(path)),
    );
    const msg = toBinary(EchoRequestSchema, create(EchoRequestSchema, { text: "hi" }));
    expect(encodeFrame({ type: FrameType.MESSAGE, seq: 2, call: 1, payload: msg })).toEqual(hex("02 00 02 01 04 0a 02 68 69"));
    expect(encodeFrame({ type: FrameType.HALF_CLOSE, seq: 3, call: 1, payload: new Uint8Array() })).toEqual(hex("03 00 03 01 00"));
    expect(encodeFrame({ type: FrameType.ACK, seq: 0, call: 0, payload: uvarintPayload(4) })).toEqual(hex("08 00 00 00 01 04"));
    expect(encodeFrame({ type: FrameType.GOAWAY, seq: 0, call: 0, payload: new Uint8Array() })).toEqual(hex("0b 00 00 00 00"));
  });

  it("OPEN with metadata appends the grpc-ws.v1 metadata object", () => {
    const p = openPayload(1024, path, { authorization: ["Bearer t"] });
    expect(p).toEqual(hex("80 08 19", text(path), text('{"metadata":{"authorization":["Bearer t"]}}')));
  });

  it("bridge frames: HELLO, ACK, HEADERS, MESSAGE, WINDOW, STATUS", () => {
    const token = "t".repeat(96);
    const status = '{"status":{"code":0,"message":"","details":[]},"trailers":{}}';
    const all = hex(
      "0c 00 00 00 6d 60",
      text(token),
      "00 64 80 80 10 80 80 80 02 b0 ea 01",
      "08 00 00 00 01 03",
      "05 00 01 01 0e",
      text('{"headers":{}}'),
      "02 00 02 01 06 0a 02 68 69 18 01",
      "07 00 03 01 01 04",
      "06 00 04 01 3d",
      text(status),
    );
    const frames = decodeFrames(all);
    expect(frames.map((f) => [f.type, f.seq, f.call, f.payload.length])).toEqual([
      [FrameType.HELLO, 0, 0, 0x6d],
      [FrameType.ACK, 0, 0, 1],
      [FrameType.HEADERS, 1, 1, 14],
      [FrameType.MESSAGE, 2, 1, 6],
      [FrameType.WINDOW, 3, 1, 1],
      [FrameType.STATUS, 4, 1, 0x3d],
    ]);
    expect(decodeHello(frames[0]!.payload)).toEqual({
      token,
      ack: 0,
      maxCalls: 100,
      window: 262144,
      maxMessage: 4194304,
      graceMs: 30000,
    });
    expect(readUvarintPayload(frames[1]!.payload, "ACK")).toBe(3);
    expect(jsonPayload(frames[2]!.payload)).toEqual({ headers: {} });
    const resp = fromBinary(EchoResponseSchema, frames[3]!.payload);
    expect([resp.text, resp.seq]).toEqual(["hi", 1n]);
    expect(readUvarintPayload(frames[4]!.payload, "WINDOW")).toBe(4);
    expect(jsonPayload(frames[5]!.payload)).toEqual({ status: { code: 0, message: "", details: [] }, trailers: {} });
    expect(encodeFrames(frames)).toEqual(all);
  });

  it("an event's data is standard base64 of whole frames", () => {
    const frames = decodeFrames(fromBase64("BQABAQ57ImhlYWRlcnMiOnt9fQIAAgEGCgJoaRgB"));
    expect(frames.map((f) => [f.type, f.seq, f.call])).toEqual([
      [FrameType.HEADERS, 1, 1],
      [FrameType.MESSAGE, 2, 1],
    ]);
    expect(toBase64(encodeFrames(frames))).toBe("BQABAQ57ImhlYWRlcnMiOnt9fQIAAgEGCgJoaRgB");
  });
});

describe("session frames: bad input", () => {
  it("a frame cut short is a FrameError", () => {
    const whole = encodeFrame({ type: FrameType.MESSAGE, seq: 1, call: 1, payload: text("abc") });
    for (let n = 1; n < whole.length; n++) {
      expect(() => decodeFrames(whole.subarray(0, n)), `first ${n} bytes`).toThrow(FrameError);
    }
  });

  it("a uvarint over 10 bytes is a FrameError", () => {
    expect(() => decodeFrames(hex("02 00 ff ff ff ff ff ff ff ff ff ff 01 01 00"))).toThrow(/longer than 10 bytes/);
  });

  it("HELLO ignores the fields of later revisions", () => {
    const h = { token: "abc", ack: 7, maxCalls: 3, window: 10, maxMessage: 20, graceMs: 500 };
    const p = new Uint8Array([...encodeHello(h), 0x05, 0x06]);
    expect(decodeHello(p)).toEqual(h);
    expect(() => decodeHello(encodeHello(h).subarray(0, 6))).toThrow(FrameError);
  });
});
