// A page that uses @grpcbridge/client as an application would: installed
// from the packed tarball, imported by its package name, type-checked
// against the package's .d.ts and bundled with esbuild. It reads a few ticks
// over EventSource, quotes as plain JSON (once with a bad request), and
// echoes over a WebSocket, and records what it got in window.demo for
// e2e/npm_package_test.go. ?bridge= is the bridge's origin.

import { BridgeClient, Code, StatusError, codeName, unary, type Status } from "@grpcbridge/client";
import { EchoService } from "./gen/demo/v1/echo_pb.js";
import { TickerService, type Tick } from "./gen/demo/v1/ticker_pb.js";

const state = {
  ticker: { seqs: [] as number[], log: [] as string[], status: undefined as Status | undefined },
  quote: undefined as { symbol: string; price: number } | undefined,
  badQuote: undefined as { code: number; name: string; message: string } | undefined,
  echo: { texts: [] as string[], status: undefined as Status | undefined },
  failure: "",
  done: false,
};
(window as unknown as { demo: typeof state }).demo = state;

const client = new BridgeClient(new URLSearchParams(location.search).get("bridge") ?? "");

async function run(): Promise<void> {
  // Server stream over EventSource; limit ends it with the end event.
  const ticks = client.watch(TickerService.method.watch, { symbol: "ACME", intervalMs: 50, limit: 3 });
  for await (const tick of ticks) {
    state.ticker.seqs.push(Number(tick.seq));
    state.ticker.log.push(`#${ticks.lastEventId} ${tick.symbol} ${tick.price}`);
  }
  state.ticker.status = await ticks.status;

  // A unary call as plain JSON.
  const quote: Tick = await unary(client, TickerService.method.quote, { symbol: "ACME" });
  state.quote = { symbol: quote.symbol, price: quote.price };

  // A failing one throws the bridge's status as a StatusError.
  try {
    await unary(client, TickerService.method.quote, { symbol: "" });
  } catch (err) {
    if (!(err instanceof StatusError)) {
      throw err;
    }
    state.badQuote = { code: err.code, name: codeName(err.code), message: err.rawMessage };
  }

  // A bidirectional call over a WebSocket.
  const echo = client.open(EchoService.method.echo);
  echo.send({ text: "hello" });
  echo.send({ text: "from npm" });
  echo.closeSend();
  for await (const msg of echo) {
    state.echo.texts.push(msg.text);
  }
  state.echo.status = await echo.status;
  if (state.echo.status.code !== Code.OK) {
    throw new Error(`echo ended with ${codeName(state.echo.status.code)}`);
  }
}

run()
  .catch((err: unknown) => {
    state.failure = String(err);
  })
  .finally(() => {
    state.done = true;
  });
