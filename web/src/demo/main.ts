// The demo page: a live ticker, eight more tickers at once, an echo, quotes
// as plain JSON, a chat room, and a stream that fails on purpose, all
// through the client library. By default the tickers, the echo and the chat
// share one session (grpc-session.v1): a WebSocket, or an event stream and
// POSTs where WebSockets are blocked. Query parameters preset the forms:
// symbol (ticker and quote), interval_ms, transport (session, eventsource or
// fetch), watch=0 (do not start the tickers), room, user, sessions=0 (a
// connection per call), ws=0 (block WebSockets: the session falls back), and
// bridge (the bridge's origin, when it is not this page's).

import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  BridgeClient,
  StatusError,
  codeName,
  fetchUnary,
  queryOf,
  unary,
  type ConnectionState,
  type ServerStream,
  type SessionInfo,
  type Status,
  type WebSocketCall,
} from "@grpcbridge/client";
import { ChatMessageSchema, ChatService, type ChatMessage } from "../gen/demo/v1/chat_pb.js";
import { EchoRequestSchema, EchoResponseSchema, EchoService } from "../gen/demo/v1/echo_pb.js";
import { QuoteRequestSchema, TickSchema, TickerService, type Tick } from "../gen/demo/v1/ticker_pb.js";

const params = new URLSearchParams(location.search);
const bridge = params.get("bridge") ?? "";
/**
 * servesSessions asks whether the bridge serves sessions: a GET of the
 * session path without a session is 405 there, and 404 on a bridge without
 * them, where the page keeps a connection per call.
 */
async function servesSessions(base: string): Promise<boolean> {
  try {
    const res = await fetch(`${base.replace(/\/+$/, "")}/_bridge/session`, { cache: "no-store" });
    await res.body?.cancel();
    return res.status !== 404;
  } catch {
    return false;
  }
}
const sessionsOn = params.get("sessions") !== "0" && (await servesSessions(bridge));
const blockWebSockets = params.get("ws") === "0";
/** plain makes a connection per call: the per-call transports of the ticker's menu, quotes, errors. */
const plain = new BridgeClient(bridge);
/** client carries the tickers, the echo and the chat: in one session unless sessions=0. */
const client = sessionsOn
  ? new BridgeClient(bridge, { sessions: { webSocket: !blockWebSockets, onState: sessionState } })
  : plain;

/** What the page received, for people in the console and for the end-to-end tests. */
const state = {
  session: {
    on: sessionsOn,
    state: "idle" as string,
    carrier: "" as string,
    resumes: 0,
    log: [] as string[],
  },
  ticker: { seqs: [] as number[], log: [] as string[] },
  tickers: {} as Record<string, number[]>,
  echo: { replies: [] as string[], status: undefined as Status | undefined },
  quote: { tick: undefined as JsonValue | undefined },
  chat: { joined: false, messages: [] as { user: string; text: string }[], status: undefined as Status | undefined },
  errors: { messages: [] as string[], status: undefined as Status | undefined },
};

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
  return `${plain.baseUrl.replace(/\/+$/, "")}${path}`;
}

// Session --------------------------------------------------------------

function sessionLog(text: string, className = ""): void {
  state.session.log.push(text);
  item($("session-log"), `${new Date().toLocaleTimeString()}  ${text}`, className);
}

/** sessionState shows the session's carrier and state as they change. */
function sessionState(s: ConnectionState, info: SessionInfo): void {
  const before = state.session.carrier;
  state.session.state = s;
  state.session.carrier = info.carrier ?? "";
  state.session.resumes = info.resumes;
  $("session-state").textContent = s;
  $("session-carrier").textContent = carrierName(info.carrier);
  $("session-resumes").textContent = String(info.resumes);
  const why = info.reason === undefined ? "" : `: ${describe(info.reason)}`;
  if (s === "open") {
    sessionLog(
      before === "" || before === state.session.carrier
        ? `open over ${carrierName(info.carrier)}${info.resumes > 0 ? `, resumed (${info.resumes})` : ""}`
        : `now over ${carrierName(info.carrier)}`,
      info.resumes > 0 ? "resume" : "",
    );
  } else if (s === "connecting" && info.reason !== undefined) {
    sessionLog(`falling back${why}`);
  } else if (s === "reconnecting") {
    sessionLog(`reattaching${why}`);
  } else if (s === "closed") {
    sessionLog(`ended${why}`, "error");
  }
}

function carrierName(c: string | undefined): string {
  switch (c) {
    case "websocket":
      return "WebSocket (grpc-session.v1)";
    case "sse":
      return "event stream down, POST up";
    case "poll":
      return "long polling down, POST up";
    default:
      return "-";
  }
}

/** reloadWith reloads the page with a query parameter changed: the carrier choice lasts the page's lifetime. */
function reloadWith(key: string, value: string | undefined): void {
  const q = new URLSearchParams(location.search);
  if (value === undefined) {
    q.delete(key);
  } else {
    q.set(key, value);
  }
  location.search = q.toString();
}

$<HTMLInputElement>("session-on").checked = params.get("sessions") !== "0";
$<HTMLInputElement>("session-block-ws").checked = blockWebSockets;
$<HTMLInputElement>("session-block-ws").disabled = !sessionsOn;
$<HTMLButtonElement>("session-cut").disabled = !sessionsOn;
$("session-on").addEventListener("change", (e) => reloadWith("sessions", (e.target as HTMLInputElement).checked ? undefined : "0"));
$("session-block-ws").addEventListener("change", (e) => reloadWith("ws", (e.target as HTMLInputElement).checked ? "0" : undefined));
$("session-cut").addEventListener("click", () => {
  sessionLog("cut the downstream");
  client.session()?.cut();
});
if (!sessionsOn) {
  $("session-state").textContent =
    params.get("sessions") === "0" ? "off: a connection per call" : "not served by this bridge: a connection per call";
}
window.addEventListener("pagehide", () => client.closeSession());

// Ticker ---------------------------------------------------------------

let ticker: ServerStream<Tick> | undefined;
/** The seq of the last tick shown: a reopened stream resumes after it. */
let lastTick = "";

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
  const afterSeq = after === "" ? 0n : BigInt(after);
  if (transport === "session") {
    // In the session, a call resumes with the method's resume field.
    stream = client.watch(TickerService.method.watch, { symbol, intervalMs, afterSeq }, { onState });
  } else if (transport === "fetch") {
    // fetch sends Last-Event-ID itself, on the first request too.
    stream = plain.fetch(TickerService.method.watch, { symbol, intervalMs }, { onState, lastEventId: after });
  } else {
    // EventSource sends Last-Event-ID only on its own reconnects; to resume
    // a new one, set the resume field that the bridge would set from it.
    stream = plain.watch(TickerService.method.watch, { symbol, intervalMs, afterSeq }, { onState });
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
      lastTick = String(seq);
      const li = item(list, "", "", true);
      li.dataset.seq = String(seq);
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = `#${seq}`;
      const time = tick.time === undefined ? "" : timestampDate(tick.time).toLocaleTimeString();
      li.append(id, `${tick.symbol}  ${tick.price.toFixed(2)}  ${time}`);
      while (list.children.length > 50) {
        list.lastElementChild?.remove();
      }
      $("ticker-last").textContent = lastTick;
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
  lastTick = "";
  $("ticker-ticks").replaceChildren();
  watch("");
});
$("ticker-drop").addEventListener("click", () => {
  if (ticker === undefined) {
    return;
  }
  const after = lastTick;
  tickerLog(`dropped the connection after #${after || "-"}`);
  watch(after);
});
$("ticker-stop").addEventListener("click", () => {
  ticker?.close();
  ticker = undefined;
  setTickerState("stopped");
});

// Eight tickers ----------------------------------------------------------

/** The symbols of the ticker board: eight streams at once, in the session when it is on. */
const boardSymbols = ["AAPL", "AMZN", "GOOG", "META", "MSFT", "NFLX", "NVDA", "TSLA"];
let board: ServerStream<Tick>[] = [];

function startTickers(): void {
  for (const s of board) {
    s.close();
  }
  const intervalMs = Number($<HTMLInputElement>("ticker-interval").value) || 500;
  const grid = $("board");
  grid.replaceChildren();
  board = boardSymbols.map((symbol) => {
    const seqs: number[] = [];
    state.tickers[symbol] = seqs;
    const cell = document.createElement("div");
    cell.className = "cell";
    const name = document.createElement("b");
    name.textContent = symbol;
    const price = document.createElement("span");
    price.className = "price";
    price.textContent = "-";
    const count = document.createElement("small");
    count.textContent = "0 ticks";
    cell.append(name, price, count);
    grid.append(cell);
    const stream = client.watch(TickerService.method.watch, { symbol, intervalMs });
    void (async () => {
      try {
        for await (const tick of stream) {
          seqs.push(Number(tick.seq));
          price.textContent = tick.price.toFixed(2);
          count.textContent = `#${tick.seq}, ${seqs.length} ticks`;
        }
      } catch (err) {
        count.textContent = `failed: ${describe(statusOf(err))}`;
        cell.classList.add("error");
      }
    })();
    return stream;
  });
}

$("board-restart").addEventListener("click", () => startTickers());
$("board-restart").textContent = sessionsOn ? "Restart" : "Start (a connection each)";

// Echo -------------------------------------------------------------------

let echo: WebSocketCall<typeof EchoRequestSchema, typeof EchoResponseSchema> | undefined;

/** echoCall is the page's one Echo call (bidirectional), opened on first use; each line sent comes back. */
function echoCall(): WebSocketCall<typeof EchoRequestSchema, typeof EchoResponseSchema> {
  if (echo !== undefined) {
    return echo;
  }
  const call = client.open(EchoService.method.echo);
  echo = call;
  state.echo.status = undefined;
  void (async () => {
    try {
      for await (const r of call) {
        state.echo.replies.push(r.text);
        item($("echo-replies"), `#${r.seq}  ${r.text}`, "", true);
      }
    } catch {
      // The status says why.
    }
    state.echo.status = await call.status;
    item($("echo-replies"), `ended: ${describe(state.echo.status)}`, state.echo.status.code === 0 ? "" : "error", true);
    if (echo === call) {
      echo = undefined;
    }
  })();
  return call;
}

$("echo-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $<HTMLInputElement>("echo-text");
  if (input.value === "") {
    return;
  }
  echoCall().send({ text: input.value });
  input.value = "";
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
        tick = await fetchUnary(TickSchema, plain.url(TickerService.method.quote, queryOf(QuoteRequestSchema, { symbol })));
        break;
      case "post":
        tick = await unary(plain, TickerService.method.quote, { symbol });
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
 * post sends the input's text to the room with ChatService/Post: a unary
 * call in the session, or, without sessions, a plain JSON POST at its
 * google.api.http path. The message comes back, like everyone's, on the
 * page's Chat stream.
 */
async function post(input: HTMLInputElement): Promise<void> {
  const text = input.value;
  const { room, user } = member;
  try {
    if (client.sessions) {
      await unary(client, ChatService.method.post, { room, user, text });
    } else {
      await fetchUnary(ChatMessageSchema, bridgeURL(`/v1/rooms/${encodeURIComponent(room)}/messages`), {
        body: JSON.stringify({ user, text }),
      });
    }
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
  void showFailure(plain.watch(EchoService.method.stream, failRequest()));
});
$("error-fetch").addEventListener("click", () => {
  void showFailure(plain.fetch(EchoService.method.stream, failRequest()));
});
$("error-refused").addEventListener("click", () => {
  void showFailure(plain.watch(TickerService.method.watch, { symbol: "" }));
});

// Start ----------------------------------------------------------------

$<HTMLInputElement>("ticker-symbol").value = params.get("symbol") ?? "ACME";
$<HTMLInputElement>("ticker-interval").value = params.get("interval_ms") ?? "500";
$<HTMLSelectElement>("ticker-transport").value = params.get("transport") ?? (sessionsOn ? "session" : "eventsource");
$<HTMLInputElement>("quote-symbol").value = params.get("symbol") ?? "ACME";
$<HTMLInputElement>("chat-room").value = params.get("room") ?? "lobby";
$<HTMLInputElement>("chat-user").value = params.get("user") ?? `guest-${Math.floor(Math.random() * 1000)}`;
if (params.get("watch") !== "0") {
  watch("");
  // Without a session, eight more event streams would take the browser's
  // last connections to the bridge (six per host over HTTP/1.1): the board
  // then waits for its button.
  if (sessionsOn) {
    startTickers();
  }
}
// Last: the tests wait for window.demo, and find every handler in place.
(window as unknown as { demo: typeof state }).demo = state;
