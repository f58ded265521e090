package bridge_test

import (
	"slices"
	"testing"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// testSessionOptions turn sessions on, for the session channel.
var testSessionOptions = bridge.SessionOptions{Keys: [][]byte{[]byte("apidocs-test-key-of-32-bytes-min")}}

func TestAsyncAPIDemo(t *testing.T) {
	t.Parallel()
	h := apiDocsHandler(t, "demo.v1.*")
	doc := decodeDoc(t, h.AsyncAPI)
	if doc["asyncapi"] != "3.1.0" {
		t.Errorf("asyncapi = %v, want 3.1.0", doc["asyncapi"])
	}
	channels := dig(t, doc, "channels").(map[string]any)
	var names []string
	for name := range channels {
		names = append(names, name)
	}
	slices.Sort(names)
	// Every exposed method, of every kind.
	want := []string{
		"demo.v1.ChatService.Chat", "demo.v1.ChatService.Post",
		"demo.v1.EchoService.Echo", "demo.v1.EchoService.Stream",
		"demo.v1.TickerService.Quote", "demo.v1.TickerService.Watch",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("channels %v, want %v", names, want)
	}

	echo := channels["demo.v1.EchoService.Echo"]
	if a := dig(t, echo, "address"); a != "/demo.v1.EchoService/Echo" {
		t.Errorf("address %v, want the gRPC path", a)
	}
	wantJSON(t, "ws binding", dig(t, echo, "bindings", "ws"), `{"method":"GET","bindingVersion":"0.1.0","headers":{"type":"object",
		"properties":{"Sec-WebSocket-Protocol":{"type":"string","const":"grpc-ws.v1","description":"The client must offer grpc-ws.v1; the handshake is refused (400) otherwise."}},
		"required":["Sec-WebSocket-Protocol"]}}`)
	wantJSON(t, "request message", dig(t, echo, "messages", "request"), `{"$ref":"#/components/messages/demo.v1.EchoRequest"}`)
	wantJSON(t, "response message", dig(t, echo, "messages", "response"), `{"$ref":"#/components/messages/demo.v1.EchoResponse"}`)

	messages := dig(t, doc, "components", "messages").(map[string]any)
	req := messages["demo.v1.EchoRequest"]
	if ct := dig(t, req, "contentType"); ct != "application/x-protobuf" {
		t.Errorf("binary frame content type %v", ct)
	}
	wantJSON(t, "binary frame payload", dig(t, req, "payload"), `{"$ref":"#/components/schemas/demo.v1.EchoRequest"}`)
	wantJSON(t, "proto3 JSON of the frame", dig(t, doc, "components", "schemas", "demo.v1.EchoRequest"),
		`{"type":"object","properties":{"text":{"type":"string"},"payload":{"type":"string","format":"byte","contentEncoding":"base64"}}}`)
	wantJSON(t, "end frame", dig(t, messages, "grpcws.end", "payload"),
		`{"type":"object","properties":{"end":{"const":true}},"required":["end"],"additionalProperties":false}`)
	wantJSON(t, "status frame", dig(t, messages, "grpcws.status", "payload", "properties", "status"), `{"$ref":"#/components/schemas/google.rpc.Status"}`)
	wantJSON(t, "metadata frame", dig(t, messages, "grpcws.metadata", "payload", "required"), `["metadata"]`)

	ops := dig(t, doc, "operations").(map[string]any)
	wantJSON(t, "the bridge receives", ops["demo.v1.EchoService.Echo.receive"], `{"action":"receive",
		"channel":{"$ref":"#/channels/demo.v1.EchoService.Echo"},
		"title":"Frames from the client",
		"summary":"An optional metadata frame first, the request message(s) as binary frames, and end to half-close.",
		"messages":[{"$ref":"#/channels/demo.v1.EchoService.Echo/messages/metadata"},{"$ref":"#/channels/demo.v1.EchoService.Echo/messages/request"},{"$ref":"#/channels/demo.v1.EchoService.Echo/messages/end"}]}`)
	wantJSON(t, "the bridge sends", dig(t, ops, "demo.v1.EchoService.Echo.send", "messages"),
		`[{"$ref":"#/channels/demo.v1.EchoService.Echo/messages/headers"},{"$ref":"#/channels/demo.v1.EchoService.Echo/messages/response"},{"$ref":"#/channels/demo.v1.EchoService.Echo/messages/status"}]`)
}

func TestAsyncAPIRecursiveMessage(t *testing.T) {
	t.Parallel()
	doc := decodeDoc(t, shapesSchema(t).AsyncAPI)
	// The bidirectional method that OpenAPI leaves out is a channel here.
	if !has(doc, "channels", "shapes.v1.Trees.Grow") {
		t.Fatal("no channel for the bidirectional Grow")
	}
	wantJSON(t, "recursive field", dig(t, doc, "components", "schemas", "shapes.v1.Node", "properties", "child"), `{"$ref":"#/components/schemas/shapes.v1.Node"}`)
	// Request and response of one type are one component message.
	grow := dig(t, doc, "channels", "shapes.v1.Trees.Grow", "messages")
	wantJSON(t, "one message for both", []any{dig(t, grow, "request"), dig(t, grow, "response")},
		`[{"$ref":"#/components/messages/shapes.v1.Node"},{"$ref":"#/components/messages/shapes.v1.Node"}]`)
}

func TestAsyncAPISessionChannel(t *testing.T) {
	t.Parallel()
	without := decodeDoc(t, apiDocsHandler(t, "demo.v1.*").AsyncAPI)
	if has(without, "channels", "grpcbridge.session") {
		t.Error("a session channel without WithSessions")
	}
	h := newAPIDocsHandler(t, bridge.WithExpose("demo.v1.*"), bridge.WithSessions(testSessionOptions))
	doc := decodeDoc(t, h.AsyncAPI)
	ch := dig(t, doc, "channels", "grpcbridge.session")
	if a := dig(t, ch, "address"); a != "/_bridge/session" {
		t.Errorf("address %v", a)
	}
	if p := dig(t, ch, "bindings", "ws", "headers", "properties", "Sec-WebSocket-Protocol", "const"); p != "grpc-session.v1" {
		t.Errorf("subprotocol %v", p)
	}
	var names []string
	for _, f := range asList(dig(t, doc, "components", "messages", "grpcsession.bridgeFrames", "x-frame-types")) {
		names = append(names, dig(t, f, "name").(string))
	}
	if want := []string{"HELLO", "MESSAGE", "HEADERS", "STATUS", "WINDOW", "ACK", "PING", "PONG", "GOAWAY"}; !slices.Equal(names, want) {
		t.Errorf("bridge frames %v, want %v", names, want)
	}
	wantJSON(t, "OPEN", asList(dig(t, doc, "components", "messages", "grpcsession.clientFrames", "x-frame-types"))[0],
		`{"type":1,"name":"OPEN","sequenced":true,"payload":"window uvarint, path length uvarint, the method's gRPC path, then optionally a grpc-ws.v1 metadata object"}`)
}
