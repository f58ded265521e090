// The frames of the grpc-session.v1 protocol (docs/protocol.md, "Sessions"):
// the same bytes on the WebSocket carrier, in upstream POST bodies, in poll
// answers, and in standard base64 in event-stream events.
//
//   type (1 byte) | flags (1 byte) | seq (uvarint) | call (uvarint) | length (uvarint) | payload

/** Frame types. OPEN to WINDOW are sequenced: numbered, kept until acknowledged, resent after a cut. */
export const FrameType = {
  OPEN: 0x01,
  MESSAGE: 0x02,
  HALF_CLOSE: 0x03,
  CANCEL: 0x04,
  HEADERS: 0x05,
  STATUS: 0x06,
  WINDOW: 0x07,
  ACK: 0x08,
  PING: 0x09,
  PONG: 0x0a,
  GOAWAY: 0x0b,
  HELLO: 0x0c,
} as const;

/** isSequenced reports whether frames of the type carry a sequence number. */
export function isSequenced(type: number): boolean {
  return type >= FrameType.OPEN && type <= FrameType.WINDOW;
}

/** One frame. seq and call are 0 for session frames. */
export interface Frame {
  readonly type: number;
  readonly flags?: number;
  readonly seq: number;
  readonly call: number;
  readonly payload: Uint8Array;
}

/** The settings of a HELLO frame. */
export interface Hello {
  /** The session token: the sid of every later request. */
  readonly token: string;
  /** The last upstream sequence number the bridge has received. */
  readonly ack: number;
  readonly maxCalls: number;
  /** Each call's initial upstream window, in bytes. */
  readonly window: number;
  readonly maxMessage: number;
  readonly graceMs: number;
}

/** FrameError is a frame that does not parse. */
export class FrameError extends Error {
  override readonly name = "FrameError";
}

const empty = new Uint8Array(0);
const utf8 = new TextEncoder();
const fromUTF8 = new TextDecoder();

/** Builder appends bytes to a growing buffer. */
class Builder {
  private buf = new Uint8Array(64);
  private n = 0;

  private grow(extra: number): void {
    if (this.n + extra <= this.buf.length) {
      return;
    }
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.n + extra));
    next.set(this.buf.subarray(0, this.n));
    this.buf = next;
  }

  byte(b: number): void {
    this.grow(1);
    this.buf[this.n++] = b;
  }

  uvarint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new FrameError(`uvarint ${v}: not a non-negative safe integer`);
    }
    // Division, not bit operations: those stop at 32 bits.
    while (v >= 0x80) {
      this.byte((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.byte(v);
  }

  bytes(b: Uint8Array): void {
    this.grow(b.length);
    this.buf.set(b, this.n);
    this.n += b.length;
  }

  done(): Uint8Array {
    return this.buf.slice(0, this.n);
  }
}

/** encodeUvarint is protobuf's base-128 varint of v: 300 is ac 02. */
export function encodeUvarint(v: number): Uint8Array {
  const b = new Builder();
  b.uvarint(v);
  return b.done();
}

/** Reader reads uvarints and bytes from a buffer, throwing a FrameError past its end. */
export class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  uvarint(what: string): number {
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) {
        throw new FrameError(`${what}: truncated uvarint`);
      }
      const b = this.buf[this.pos++] as number;
      v += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (!Number.isSafeInteger(v)) {
          throw new FrameError(`${what}: ${v} is too large`);
        }
        return v;
      }
      scale *= 0x80;
    }
    throw new FrameError(`${what}: uvarint longer than 10 bytes`);
  }

  bytes(n: number, what: string): Uint8Array {
    if (n > this.remaining) {
      throw new FrameError(`${what}: ${n} bytes wanted, ${this.remaining} left`);
    }
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
}

/** encodeFrames encodes frames back to back: one WebSocket message, POST body or event. */
export function encodeFrames(frames: readonly Frame[]): Uint8Array {
  const b = new Builder();
  for (const f of frames) {
    b.byte(f.type);
    b.byte(f.flags ?? 0);
    b.uvarint(f.seq);
    b.uvarint(f.call);
    b.uvarint(f.payload.length);
    b.bytes(f.payload);
  }
  return b.done();
}

/** encodeFrame encodes one frame. */
export function encodeFrame(f: Frame): Uint8Array {
  return encodeFrames([f]);
}

/**
 * decodeFrames splits bytes into whole frames. It throws a FrameError when
 * the last frame is cut short: a frame never spans two messages. Payloads
 * alias bytes.
 */
export function decodeFrames(bytes: Uint8Array): Frame[] {
  const r = new Reader(bytes);
  const out: Frame[] = [];
  while (r.remaining > 0) {
    if (r.remaining < 2) {
      throw new FrameError("truncated frame header");
    }
    const type = r.bytes(1, "type")[0] as number;
    const flags = r.bytes(1, "flags")[0] as number;
    const seq = r.uvarint("seq");
    const call = r.uvarint("call");
    const length = r.uvarint("length");
    out.push({ type, flags, seq, call, payload: r.bytes(length, "payload") });
  }
  return out;
}

/** decodeHello reads a HELLO payload; bytes after the known fields (later revisions) are ignored. */
export function decodeHello(payload: Uint8Array): Hello {
  const r = new Reader(payload);
  const token = fromUTF8.decode(r.bytes(r.uvarint("token length"), "token"));
  return {
    token,
    ack: r.uvarint("ack"),
    maxCalls: r.uvarint("max_calls"),
    window: r.uvarint("window"),
    maxMessage: r.uvarint("max_message"),
    graceMs: r.uvarint("grace_ms"),
  };
}

/** encodeHello is a HELLO payload; for tests and fakes. */
export function encodeHello(h: Hello): Uint8Array {
  const b = new Builder();
  const token = utf8.encode(h.token);
  b.uvarint(token.length);
  b.bytes(token);
  for (const v of [h.ack, h.maxCalls, h.window, h.maxMessage, h.graceMs]) {
    b.uvarint(v);
  }
  return b.done();
}

/** openPayload is an OPEN payload: the downstream window, the method's path and, optionally, metadata JSON. */
export function openPayload(window: number, path: string, metadata?: Record<string, string[]>): Uint8Array {
  const b = new Builder();
  b.uvarint(window);
  const p = utf8.encode(path);
  b.uvarint(p.length);
  b.bytes(p);
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    b.bytes(utf8.encode(JSON.stringify({ metadata })));
  }
  return b.done();
}

/** uvarintPayload is the payload of WINDOW and ACK: one uvarint. */
export function uvarintPayload(v: number): Uint8Array {
  return encodeUvarint(v);
}

/** readUvarintPayload reads the uvarint of a WINDOW or ACK payload. */
export function readUvarintPayload(payload: Uint8Array, what: string): number {
  return new Reader(payload).uvarint(what);
}

/** jsonPayload parses the JSON payload of HEADERS, STATUS and GOAWAY; undefined when empty. */
export function jsonPayload(payload: Uint8Array): unknown {
  if (payload.length === 0) {
    return undefined;
  }
  return JSON.parse(fromUTF8.decode(payload)) as unknown;
}

/** emptyPayload is the payload of HALF_CLOSE, CANCEL and a client's GOAWAY. */
export const emptyPayload = empty;

/** fromBase64 decodes standard base64 (an event's data) into bytes. */
export function fromBase64(text: string): Uint8Array {
  const bin = atob(text.trim());
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }
  return out;
}

/** toBase64 encodes bytes as standard base64; for tests and fakes. */
export function toBase64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) {
    bin += String.fromCharCode(b);
  }
  return btoa(bin);
}
