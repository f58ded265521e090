// gRPC statuses as the bridge sends them: the proto3 JSON form of
// google.rpc.Status, {"code": 5, "message": "...", "details": [...]}, with the
// allow-listed trailers beside it when there are any.

/** Metadata as the bridge sends and takes it: lower-case keys, arrays of values. */
export type Metadata = Record<string, string[]>;

/** gRPC status codes. */
export const Code = {
  OK: 0,
  CANCELED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const codeNames: readonly string[] = Object.keys(Code);

/** codeName returns the name of a gRPC code, such as "NOT_FOUND", or "CODE_42". */
export function codeName(code: number): string {
  return codeNames[code] ?? `CODE_${code}`;
}

/**
 * isTransient reports whether a call that failed with code may succeed when
 * repeated: the codes for which the bridge sends a retry hint (UNAVAILABLE
 * and ABORTED), so that a stream resumes with Last-Event-ID.
 */
export function isTransient(code: number): boolean {
  return code === Code.UNAVAILABLE || code === Code.ABORTED;
}

/** The final status of a call. code 0 is success. */
export interface Status {
  readonly code: number;
  readonly message: string;
  /** google.protobuf.Any values in proto3 JSON ({"@type": ..., ...}). */
  readonly details: readonly unknown[];
  /** Allow-listed trailers; empty when the bridge sent none. */
  readonly trailers: Metadata;
}

/**
 * StatusError is a call's failure: the gRPC status that the backend or the
 * bridge ended it with. message is "CODE_NAME: text"; rawMessage is the
 * status's own message.
 */
export class StatusError extends Error {
  override readonly name = "StatusError";
  readonly code: number;
  readonly rawMessage: string;
  readonly details: readonly unknown[];
  readonly trailers: Metadata;

  constructor(code: number, message: string, details: readonly unknown[] = [], trailers: Metadata = {}) {
    super(message === "" ? codeName(code) : `${codeName(code)}: ${message}`);
    this.code = code;
    this.rawMessage = message;
    this.details = details;
    this.trailers = trailers;
  }

  /** from makes a StatusError from a Status. */
  static from(st: Status): StatusError {
    return new StatusError(st.code, st.message, st.details, st.trailers);
  }

  /** status returns the error as a Status. */
  toStatus(): Status {
    return { code: this.code, message: this.rawMessage, details: this.details, trailers: this.trailers };
  }
}

/**
 * parseStatus reads a status object as the bridge sends it (the data of an
 * end or error event, a non-200 body, the status of a WebSocket status frame).
 * Anything that is not such an object is UNKNOWN, with the text quoted.
 */
export function parseStatus(json: unknown, trailers?: unknown): Status {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return { code: Code.UNKNOWN, message: `malformed status: ${preview(json)}`, details: [], trailers: {} };
  }
  const o = json as Record<string, unknown>;
  const code = typeof o.code === "number" && Number.isInteger(o.code) && o.code >= 0 ? o.code : Code.UNKNOWN;
  const message = typeof o.message === "string" ? o.message : "";
  const details = Array.isArray(o.details) ? o.details : [];
  return { code, message, details, trailers: parseMetadata(trailers ?? o.trailers) };
}

/** parseStatusText parses the JSON text of a status; see parseStatus. */
export function parseStatusText(text: string): Status {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { code: Code.UNKNOWN, message: `malformed status: ${preview(text)}`, details: [], trailers: {} };
  }
  return parseStatus(json);
}

/** parseMetadata keeps the entries of a metadata object whose values are arrays of strings. */
export function parseMetadata(json: unknown): Metadata {
  const md: Metadata = {};
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return md;
  }
  for (const [k, v] of Object.entries(json)) {
    if (Array.isArray(v) && v.every((s) => typeof s === "string")) {
      md[k] = v;
    }
  }
  return md;
}

/** okStatus is the status of a call that succeeded. */
export function okStatus(trailers: Metadata = {}): Status {
  return { code: Code.OK, message: "", details: [], trailers };
}

function preview(v: unknown): string {
  const s = typeof v === "string" ? v : String(JSON.stringify(v));
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}...` : s);
}
