// A new user's page: @grpcbridge/client from the packed tarball and the
// types that protoc-gen-es generated from the user's own feed.proto. It
// watches a few items over EventSource and chats over a WebSocket, and
// records what it got in window.demo (the global the e2e tabs wait for) for
// e2e/newuser_test.go. ?bridge= is the bridge's origin.

import { BridgeClient, Code, codeName, type Status } from "@grpcbridge/client";
import { Feed } from "./gen/acme/feed/v1/feed_pb.js";

const state = {
  watch: { seqs: [] as number[], ids: [] as string[], texts: [] as string[], status: undefined as Status | undefined },
  chat: { texts: [] as string[], status: undefined as Status | undefined },
  failure: "",
  done: false,
};
(window as unknown as { demo: typeof state }).demo = state;

const client = new BridgeClient(new URLSearchParams(location.search).get("bridge") ?? "");

async function run(): Promise<void> {
  // Server stream over EventSource; the limit ends it with the end event.
  const items = client.watch(Feed.method.watch, { feed: "news", limit: 3 });
  for await (const item of items) {
    state.watch.seqs.push(Number(item.seq));
    state.watch.ids.push(items.lastEventId);
    state.watch.texts.push(item.text);
  }
  state.watch.status = await items.status;

  // A bidirectional call over a WebSocket.
  const chat = client.open(Feed.method.chat);
  chat.send({ user: "ada", text: "hello" });
  chat.send({ user: "ada", text: "bye" });
  chat.closeSend();
  for await (const msg of chat) {
    state.chat.texts.push(msg.text);
  }
  state.chat.status = await chat.status;
  if (state.chat.status.code !== Code.OK) {
    throw new Error(`chat ended with ${codeName(state.chat.status.code)}`);
  }
}

run()
  .catch((err: unknown) => {
    state.failure = String(err);
  })
  .finally(() => {
    state.done = true;
  });
