// Compile-time checks of the package's declarations, for tsc only (not
// bundled): if the .d.ts lost their types, these would pass silently as any,
// so each @ts-expect-error must find an error.

import { BridgeClient, unary, type ServerStream } from "@grpcbridge/client";
import { EchoService } from "./gen/demo/v1/echo_pb.js";
import { TickerService, type Tick } from "./gen/demo/v1/ticker_pb.js";

export function typeChecks(client: BridgeClient): void {
  const ticks: ServerStream<Tick> = client.watch(TickerService.method.watch, { symbol: "ACME" });
  void ticks;
  // @ts-expect-error: symbol is a string
  client.watch(TickerService.method.watch, { symbol: 1 });
  // @ts-expect-error: a bidirectional method is not served as Server-Sent Events
  client.watch(EchoService.method.echo, {});
  // @ts-expect-error: unary takes unary methods only
  void unary(client, TickerService.method.watch, { symbol: "ACME" });
  const echo = client.open(EchoService.method.echo);
  // @ts-expect-error: EchoRequest has no field user
  echo.send({ user: "ada" });
}
