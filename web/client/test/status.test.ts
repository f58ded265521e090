import { describe, expect, it } from "vitest";
import { Code, StatusError, codeName, isTransient, parseStatus, parseStatusText } from "../src/status.js";
import { statusFromClose } from "../src/websocket.js";

describe("status", () => {
  it("parses the bridge's status JSON", () => {
    const st = parseStatusText('{"code":9,"message":"nope","details":[{"@type":"x"}],"trailers":{"k":["v"]}}');
    expect(st).toEqual({ code: 9, message: "nope", details: [{ "@type": "x" }], trailers: { k: ["v"] } });
  });

  it("makes anything else UNKNOWN", () => {
    expect(parseStatusText("not json").code).toBe(Code.UNKNOWN);
    expect(parseStatus([1, 2]).code).toBe(Code.UNKNOWN);
    expect(parseStatus({ code: "5" })).toEqual({ code: Code.UNKNOWN, message: "", details: [], trailers: {} });
  });

  it("StatusError carries code, message and details", () => {
    const err = StatusError.from(parseStatus({ code: 5, message: "no such room", details: [{ "@type": "t" }] }));
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("StatusError");
    expect(err.message).toBe("NOT_FOUND: no such room");
    expect(err.rawMessage).toBe("no such room");
    expect(err.details).toEqual([{ "@type": "t" }]);
    expect(new StatusError(14, "").message).toBe("UNAVAILABLE");
  });

  it("knows the transient codes", () => {
    expect([...Array(17).keys()].filter(isTransient)).toEqual([Code.ABORTED, Code.UNAVAILABLE]);
    expect(codeName(16)).toBe("UNAUTHENTICATED");
    expect(codeName(99)).toBe("CODE_99");
  });

  it("derives a status from a close without a status frame", () => {
    expect(statusFromClose(4009, "stop")).toMatchObject({ code: 9, message: "stop" });
    expect(statusFromClose(1008, "")).toMatchObject({ code: Code.INVALID_ARGUMENT });
    expect(statusFromClose(1009, "")).toMatchObject({ code: Code.RESOURCE_EXHAUSTED });
    expect(statusFromClose(1006, "")).toMatchObject({ code: Code.UNAVAILABLE, message: "connection closed (1006) without a status" });
  });
});
