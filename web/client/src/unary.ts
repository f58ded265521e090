// Unary calls answered as plain JSON, as grpc-gateway answers them: the
// request is the JSON body (or the URL), a success is 200 application/json
// with the response message in proto3 JSON, and a failure is the mapped HTTP
// status with a JSON google.rpc.Status, thrown as a StatusError.

import {
  create,
  fromJson,
  toJsonString,
  type DescMessage,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { grpcPath, type BridgeClient, type Method } from "./client.js";
import { sessionUnary } from "./session.js";
import { Code, StatusError } from "./status.js";
import { statusFromResponse } from "./stream.js";

/** A unary method of a generated service. */
export type UnaryMethod<I extends DescMessage, O extends DescMessage> = Method<I, O> & {
  readonly methodKind: "unary";
};

/** Options of unary and fetchUnary. */
export interface UnaryOptions {
  /** Request headers, such as Authorization. */
  headers?: HeadersInit;
  /** fetch's credentials mode. */
  credentials?: RequestCredentials;
  /** Aborting it cancels the call, which then fails with CANCELED. */
  signal?: AbortSignal;
  /** fetch; for tests. */
  fetch?: typeof fetch;
}

/** The request of fetchUnary: the HTTP method and, for any but GET and DELETE, the JSON body. */
export interface UnaryRequest {
  /** Default: POST when body is set, GET otherwise. */
  method?: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** The JSON body: the request message in proto3 JSON, or the part of it a google.api.http rule's body names. */
  body?: string;
}

/**
 * unary calls a unary method at its gRPC path, /package.Service/Method, with
 * the request as the JSON body of a POST, and returns the response message.
 * It throws a StatusError when the call fails; see fetchUnary. With the
 * client's sessions on, the call goes in the session instead, its headers
 * as the call's metadata.
 */
export function unary<I extends DescMessage, O extends DescMessage>(
  client: BridgeClient,
  method: UnaryMethod<I, O>,
  request: MessageInitShape<I>,
  options?: UnaryOptions,
): Promise<MessageShape<O>> {
  const session = client.session();
  if (session !== undefined) {
    return sessionUnary(session, method.input, method.output, grpcPath(method), request, options);
  }
  const body = toJsonString(method.input, create(method.input, request));
  return fetchUnary(method.output, client.url(method), { method: "POST", body }, options);
}

/**
 * fetchUnary calls the unary method at url (its gRPC path with the request
 * in the query string or the body, or the path of a google.api.http rule)
 * and decodes the JSON answer with schema. It throws a StatusError: the
 * status of a non-2xx answer (its JSON google.rpc.Status, or one derived
 * from the HTTP status), UNAVAILABLE when the request fails to reach the
 * bridge, CANCELED when the signal aborts it, and INTERNAL when a 2xx answer
 * is not the response message in JSON.
 */
export async function fetchUnary<O extends DescMessage>(
  schema: O,
  url: string | URL,
  request: UnaryRequest = {},
  options: UnaryOptions = {},
): Promise<MessageShape<O>> {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const method = request.method ?? (request.body !== undefined ? "POST" : "GET");
  const headers = new Headers(options.headers);
  // The bridge answers a unary call as an event stream when Accept asks for one.
  headers.set("Accept", "application/json");
  if (request.body !== undefined) {
    headers.set("Content-Type", "application/json");
  }
  let res: Response;
  let text: string;
  try {
    res = await fetchImpl(String(url), {
      method,
      headers,
      body: request.body,
      signal: options.signal,
      cache: "no-store",
      credentials: options.credentials,
    });
    if (res.status < 200 || res.status > 299) {
      throw StatusError.from(await statusFromResponse(res));
    }
    text = await res.text();
  } catch (err) {
    if (err instanceof StatusError) {
      throw err;
    }
    if (options.signal?.aborted === true) {
      throw new StatusError(Code.CANCELED, "the call was canceled");
    }
    throw new StatusError(Code.UNAVAILABLE, `connection failed: ${String(err)}`);
  }
  const type = res.headers.get("Content-Type") ?? "";
  if (!type.startsWith("application/json")) {
    throw new StatusError(Code.INTERNAL, `unexpected content type ${JSON.stringify(type)}`);
  }
  let json: JsonValue;
  try {
    json = JSON.parse(text) as JsonValue;
  } catch {
    throw new StatusError(Code.INTERNAL, `malformed response: ${JSON.stringify(text.slice(0, 64))}`);
  }
  try {
    return fromJson(schema, json, { ignoreUnknownFields: true });
  } catch (err) {
    throw new StatusError(Code.INTERNAL, `malformed response: ${String(err)}`);
  }
}
