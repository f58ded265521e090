// The demo page: a live ticker over Server-Sent Events, quotes as plain
// JSON, a chat room read over a WebSocket and posted to with fetch, and a
// stream that fails on purpose, all through the client library. Query
// parameters preset the forms: symbol (ticker and quote), interval_ms,
// transport (eventsource or fetch), watch=0 (do not start the ticker), room,
// user, and bridge (the bridge's origin, when it is not this page's).

import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  BridgeClient,
  StatusError,
  codeName,
  fetchUnary,
  queryOf,
  unary,
  type ServerStream,
  type Status,
  type WebSocketCall,
} from "@grpcbridge/client";
import { ChatMessageSchema, ChatService, type ChatMessage } from "../gen/demo/v1/chat_pb.js";
import { EchoService } from "../gen/demo/v1/echo_pb.js";
import { QuoteRequestSchema, TickSchema, TickerService, type Tick } from "../gen/demo/v1/ticker_pb.js";

const params = new URLSearchParams(location.search);
const client = new BridgeClient(params.get("bridge") ?? "");

/** What the page received, for people in the console and for the end-to-end tests. */
const state = {
  ticker: { seqs: [] as number[], log: [] as string[] },
  quote: { tick: undefined as JsonValue | undefined },
  chat: { joined: false, messages: [] as { user: string; text: string }[], status: undefined as Status | undefined },
  errors: { messages: [] as string[], status: undefined as Status | undefined },
};
(window as unknown as { demo: typeof state }).demo = state;

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error(`no element #${id}`);
  }
  return el as T;
}

function item(list: HTMLElement, text: string, className = "", first = false): HTMLLIElement {
  const li = document.createElement("li");
  li.textContent = text;
  li.className = className;
  if (first) {
    list.prepend(li);
  } else {
    list.append(li);
  }
  return li;
}

function describe(st: Status): string {
  return st.message === "" ? `${codeName(st.code)} (${st.code})` : `${codeName(st.code)} (${st.code}): ${st.message}`;
}

function statusOf(err: unknown): Status {
  if (err instanceof StatusError) {
    return err.toStatus();
  }
  return { code: 2, message: String(err), details: [], trailers: {} };
}

/** bridgeURL is the URL of a path on the bridge, such as a google.api.http rule's. */
function bridgeURL(path: string): string {
  return `${client.baseUrl.replace(/\/+$/, "")}${path}`;
}

// Ticker ---------------------------------------------------------------

let ticker: ServerStream<Tick> | undefined;

function tickerLog(text: string, className = ""): void {
  state.ticker.log.push(text);
  item($("ticker-log"), `${new Date().toLocaleTimeString()}  ${text}`, className);
}

function setTickerState(text: string): void {
  $("ticker-state").textContent = text;
}

/** watch starts the ticker; after is the event id to resume after ("" for a new stream). */
function watch(after: string): void {
  ticker?.close();
  const symbol = $<HTMLInputElement>("ticker-symbol").value;
  const intervalMs = Number($<HTMLInputElement>("ticker-interval").value) || 500;
  const transport = $<HTMLSelectElement>("ticker-transport").value;
  const onState = (s: string, info: { lastEventId: string; reason?: Status; resumed?: boolean }) => {
    setTickerState(s);
    if (s === "reconnecting") {
      const why = info.reason === undefined ? "" : `: ${describe(info.reason)}`;
      tickerLog(`connection lost after #${info.lastEventId || "-"}${why}; reconnecting with Last-Event-ID`);
    } else if (s === "open" && info.resumed) {
      tickerLog(`reconnected: resuming after #${info.lastEventId}`, "resume");
    }
  };
  let stream: ServerStream<Tick>;
  if (transport === "fetch") {
    // fetch sends Last-Event-ID itself, on the first request too.
    stream = client.fetch(TickerService.method.watch, { symbol, intervalMs }, { onState, lastEventId: after });
  } else {
    // EventSource sends Last-Event-ID only on its own reconnects; to resume
    // a new one, set the resume field that the bridge would set from it.
    const afterSeq = after === "" ? 0n : BigInt(after);
    stream = client.watch(TickerService.method.watch, { symbol, intervalMs, afterSeq }, { onState });
  }
  ticker = stream;
  if (after !== "") {
    tickerLog(`reopened over ${transport}: resuming after #${after}`, "resume");
  }
  void consumeTicks(stream);
}

async function consumeTicks(stream: ServerStream<Tick>): Promise<void> {
  const list = $("ticker-ticks");
  try {
    for await (const tick of stream) {
      const seq = Number(tick.seq);
      state.ticker.seqs.push(seq);
      const li = item(list, "", "", true);
      li.dataset.seq = String(seq);
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = `#${stream.lastEventId}`;
      const time = tick.time === undefined ? "" : timestampDate(tick.time).toLocaleTimeString();
      li.append(id, `${tick.symbol}  ${tick.price.toFixed(2)}  ${time}`);
      while (list.children.length > 50) {
        list.lastElementChild?.remove();
      }
      $("ticker-last").textContent = stream.lastEventId;
      $("ticker-count").textContent = String(state.ticker.seqs.length);
    }
    if (stream === ticker) {
      tickerLog(`ended: ${describe(await stream.status)}`);
    }
  } catch (err) {
    if (stream === ticker) {
      tickerLog(`failed: ${describe(statusOf(err))}`, "error");
    }
  }
}

$("ticker-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.ticker.seqs.length = 0;
  $("ticker-ticks").replaceChildren();
  watch("");
});
$("ticker-drop").addEventListener("click", () => {
  if (ticker === undefined) {
    return;
  }
  const after = ticker.lastEventId;
  tickerLog(`dropped the connection after #${after || "-"}`);
  watch(after);
});
$("ticker-stop").addEventListener("click", () => {
  ticker?.close();
  ticker = undefined;
  setTickerState("stopped");
});

// Quote ----------------------------------------------------------------

/**
 * quote asks for the latest tick of a symbol, answered as plain JSON: at the
 * method's google.api.http path, at its gRPC path with GET (it has no side
 * effects), or with the client library's unary POST.
 */
async function quote(): Promise<void> {
  const symbol = $<HTMLInputElement>("quote-symbol").value;
  const out = $("quote-json");
  out.textContent = "…";
  try {
    let tick: Tick;
    switch ($<HTMLSelectElement>("quote-via").value) {
      case "get":
        tick = await fetchUnary(TickSchema, client.url(TickerService.method.quote, queryOf(QuoteRequestSchema, { symbol })));
        break;
      case "post":
        tick = await unary(client, TickerService.method.quote, { symbol });
        break;
      default:
        tick = await fetchUnary(TickSchema, bridgeURL(`/v1/tickers/${encodeURIComponent(symbol)}`));
    }
    state.quote.tick = toJson(TickSchema, tick);
    out.textContent = JSON.stringify(state.quote.tick, null, 2);
  } catch (err) {
    state.quote.tick = undefined;
    out.textContent = "failed: the status is under Errors";
    showError(`Quote ${JSON.stringify(symbol)}`, err);
  }
}

$("quote-form").addEventListener("submit", (e) => {
  e.preventDefault();
  void quote();
});

// Chat -----------------------------------------------------------------

/** The text of the message a page sends after it joins; its own copy coming back confirms the join. */
const joinText = "joined the room";

let chat: WebSocketCall<typeof ChatMessageSchema, typeof ChatMessageSchema> | undefined;
/** The room and name the page joined with: what it posts as. */
let member = { room: "", user: "" };

function setChatState(text: string): void {
  $("chat-state").textContent = text;
}

function enableChat(on: boolean): void {
  $<HTMLInputElement>("chat-text").disabled = !on;
  $<HTMLButtonElement>("chat-send-button").disabled = !on;
  $<HTMLButtonElement>("chat-leave").disabled = !on;
}

function join(): void {
  chat?.cancel();
  const room = $<HTMLInputElement>("chat-room").value;
  const user = $<HTMLInputElement>("chat-user").value;
  const call = client.open(ChatService.method.chat);
  chat = call;
  member = { room, user };
  state.chat.joined = false;
  state.chat.status = undefined;
  $("chat-messages").replaceChildren();
  setChatState("joining");
  call.send({ room, user }); // empty text: join only
  call.send({ room, user, text: joinText });
  void consumeChat(call, room, user);
}

async function consumeChat(
  call: WebSocketCall<typeof ChatMessageSchema, typeof ChatMessageSchema>,
  room: string,
  user: string,
): Promise<void> {
  try {
    for await (const msg of call) {
      if (!state.chat.joined && msg.user === user && msg.text === joinText) {
        state.chat.joined = true;
        setChatState(`in room ${room}`);
        enableChat(true);
      }
      showChat(msg);
    }
  } catch {
    // The status below says why.
  }
  const st = await call.status;
  if (call === chat) {
    state.chat.status = st;
    state.chat.joined = false;
    enableChat(false);
    setChatState(st.code === 0 || st.code === 1 ? "left" : `closed: ${describe(st)}`);
  }
}

function showChat(msg: ChatMessage): void {
  state.chat.messages.push({ user: msg.user, text: msg.text });
  const li = document.createElement("li");
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = msg.time === undefined ? "" : timestampDate(msg.time).toLocaleTimeString();
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = msg.user || "(anonymous)";
  li.append(time, who, msg.text);
  const list = $("chat-messages");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

$("chat-join").addEventListener("submit", (e) => {
  e.preventDefault();
  join();
});
$("chat-send").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>("chat-text");
  if (chat === undefined || input.value === "") {
    return;
  }
  void post(input);
});

/**
 * post sends the input's text to the room with ChatService/Post at its
 * google.api.http path; the message comes back, like everyone's, on the
 * page's Chat stream.
 */
async function post(input: HTMLInputElement): Promise<void> {
  const text = input.value;
  const { room, user } = member;
  try {
    await fetchUnary(ChatMessageSchema, bridgeURL(`/v1/rooms/${encodeURIComponent(room)}/messages`), {
      body: JSON.stringify({ user, text }),
    });
    if (input.value === text) {
      input.value = "";
    }
  } catch (err) {
    showError(`Post to ${room}`, err);
  }
}

$("chat-leave").addEventListener("click", () => {
  // The chat server keeps delivering after a half-close (closeSend), so
  // leaving closes the socket: the bridge cancels the call.
  chat?.cancel();
});

// Errors ---------------------------------------------------------------

/** resetErrors empties the error panel for a new attempt and returns its output list. */
function resetErrors(): HTMLElement {
  const out = $("error-output");
  out.replaceChildren();
  state.errors.messages = [];
  state.errors.status = undefined;
  $("error-status").textContent = "waiting";
  return out;
}

function errorText(err: unknown): string {
  return err instanceof StatusError ? `StatusError: ${err.message}` : String(err);
}

/** showError puts the failure of a unary call (a quote, a chat post) in the error panel. */
function showError(what: string, err: unknown): void {
  const out = resetErrors();
  item(out, `${what}: ${errorText(err)}`, "error");
  state.errors.status = statusOf(err);
  $("error-status").textContent = describe(state.errors.status);
}

async function showFailure(stream: ServerStream<{ seq: bigint }>): Promise<void> {
  const out = resetErrors();
  try {
    for await (const msg of stream) {
      state.errors.messages.push(String(msg.seq));
      item(out, `message #${stream.lastEventId}: seq ${msg.seq}`);
    }
  } catch (err) {
    item(out, errorText(err), "error");
  }
  const st = await stream.status;
  state.errors.status = st;
  $("error-status").textContent = describe(st);
}

function failRequest() {
  return {
    count: 3,
    failAfter: 2,
    failCode: Number($<HTMLSelectElement>("error-code").value),
    failMessage: $<HTMLInputElement>("error-message").value,
  };
}

$("error-form").addEventListener("submit", (e) => {
  e.preventDefault();
  void showFailure(client.watch(EchoService.method.stream, failRequest()));
});
$("error-fetch").addEventListener("click", () => {
  void showFailure(client.fetch(EchoService.method.stream, failRequest()));
});
$("error-refused").addEventListener("click", () => {
  void showFailure(client.watch(TickerService.method.watch, { symbol: "" }));
});

// Start ----------------------------------------------------------------

$<HTMLInputElement>("ticker-symbol").value = params.get("symbol") ?? "ACME";
$<HTMLInputElement>("ticker-interval").value = params.get("interval_ms") ?? "500";
$<HTMLSelectElement>("ticker-transport").value = params.get("transport") ?? "eventsource";
$<HTMLInputElement>("quote-symbol").value = params.get("symbol") ?? "ACME";
$<HTMLInputElement>("chat-room").value = params.get("room") ?? "lobby";
$<HTMLInputElement>("chat-user").value = params.get("user") ?? `guest-${Math.floor(Math.random() * 1000)}`;
if (params.get("watch") !== "0") {
  watch("");
}
