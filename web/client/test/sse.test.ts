import { describe, expect, it } from "vitest";
import { SSEParser } from "../src/sse.js";

function parseAll(chunks: string[], p = new SSEParser()) {
  return chunks.flatMap((c) => p.push(c));
}

describe("SSEParser", () => {
  it("reads the bridge's events", () => {
    const evs = parseAll([
      "retry: 2000\n\nevent: headers\ndata: {}\n\nid: 1\nevent: message\ndata: {\"seq\":\"1\"}\n\nevent: end\ndata: {\"code\":0}\n\n",
    ]);
    expect(evs).toEqual([
      { type: "headers", data: "{}", lastEventId: "" },
      { type: "message", data: '{"seq":"1"}', lastEventId: "1" },
      { type: "end", data: '{"code":0}', lastEventId: "1" },
    ]);
  });

  it.each([
    ["LF", "\n"],
    ["CR", "\r"],
    ["CRLF", "\r\n"],
  ])("ends lines with %s", (_name, eol) => {
    const text = ["id: 7", "data: a", "data: b", "", "data: c", "", ""].join(eol);
    expect(parseAll([text])).toEqual([
      { type: "message", data: "a\nb", lastEventId: "7" },
      { type: "message", data: "c", lastEventId: "7" },
    ]);
  });

  it("takes chunks split anywhere, CRLF split between chunks too", () => {
    const text = "id: 1\r\ndata: hello\r\n\r\nid: 2\r\ndata: world\r\n\r\n";
    const whole = parseAll([text]);
    for (let i = 0; i <= text.length; i++) {
      expect(parseAll([text.slice(0, i), text.slice(i)])).toEqual(whole);
    }
    expect(parseAll([...text])).toEqual(whole);
  });

  it("does not count a lone CR and LF as two line ends", () => {
    expect(parseAll(["data: x\r", "\n", "\r\n"])).toEqual([{ type: "message", data: "x", lastEventId: "" }]);
  });

  it("joins multi-line data with LF and keeps empty data lines", () => {
    expect(parseAll(["data: one\ndata\ndata:three\ndata:  four\n\n"])).toEqual([
      { type: "message", data: "one\n\nthree\n four", lastEventId: "" },
    ]);
  });

  it("ignores comments, unknown fields and blocks without data", () => {
    expect(parseAll([": ping\n\nfoo: bar\n\nevent: x\n\ndata: y\n\n"])).toEqual([
      { type: "message", data: "y", lastEventId: "" },
    ]);
  });

  it("resets the event type after each event", () => {
    expect(parseAll(["event: error\ndata: 1\n\ndata: 2\n\n"]).map((e) => e.type)).toEqual(["error", "message"]);
  });

  it("keeps the last event id until the server sets another", () => {
    const p = new SSEParser();
    expect(parseAll(["id: 5\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"], p).map((e) => e.lastEventId)).toEqual(["5", "5", ""]);
    // An id in a block without data still sets it.
    parseAll(["id: 9\n\n"], p);
    expect(p.lastEventId).toBe("9");
  });

  it("ignores an id that contains NUL", () => {
    expect(parseAll(["id: 1\ndata: a\n\nid: 2\0\ndata: b\n\n"]).map((e) => e.lastEventId)).toEqual(["1", "1"]);
  });

  it("takes retry with ASCII digits only", () => {
    const p = new SSEParser();
    parseAll(["retry: 1500\n\n"], p);
    expect(p.retry).toBe(1500);
    parseAll(["retry: 12a\n\nretry: -1\n\nretry: 1.5\n\n"], p);
    expect(p.retry).toBe(1500);
    parseAll(["retry:300\n\n"], p);
    expect(p.retry).toBe(300);
  });

  it("strips one leading byte order mark", () => {
    expect(parseAll(["\uFEFFdata: a\n\n"])).toEqual([{ type: "message", data: "a", lastEventId: "" }]);
  });

  it("discards an event that the stream ends before its blank line, after reset", () => {
    const p = new SSEParser("3");
    expect(p.push("id: 4\ndata: partial")).toEqual([]);
    p.reset();
    expect(p.lastEventId).toBe("3");
    expect(p.push("data: next\n\n")).toEqual([{ type: "message", data: "next", lastEventId: "3" }]);
  });

  it("splits a field at the first colon only", () => {
    expect(parseAll(['data: {"a":"b:c"}\n\n'])[0]?.data).toBe('{"a":"b:c"}');
  });
});
