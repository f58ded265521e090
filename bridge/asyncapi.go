package bridge

import (
	"net/http"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// The AsyncAPI 3.1 document of the WebSocket protocol grpc-ws.v1
// (docs/protocol.md, docs/api-docs.md): one channel per exposed method, at
// its gRPC path, with the method's request and response messages (binary
// frames) and the JSON control frames. It describes the bridge as the
// application: it receives what a browser sends and sends what a browser
// receives.

const (
	asyncAPIVersion = "3.1.0"
	// mediaTypeProtobuf is the content type of a binary frame: one message
	// in the protobuf binary encoding, no envelope.
	mediaTypeProtobuf = "application/x-protobuf"
	// wsBindingVersion is the AsyncAPI WebSockets bindings version.
	wsBindingVersion = "0.1.0"

	// Component message names of the control frames.
	messageMetadata = "grpcws.metadata"
	messageEnd      = "grpcws.end"
	messageHeaders  = "grpcws.headers"
	messageStatus   = "grpcws.status"
)

// buildAsyncAPI writes the AsyncAPI document of rt's methods, and of the
// session channel when sessions are on.
func buildAsyncAPI(rt *routes, sessions bool) ([]byte, error) {
	schemas := newSchemaSet()
	messages := controlMessages()
	channels, operations := jsonObject{}, jsonObject{}
	for _, m := range sortedMethods(rt) {
		id := strings.ReplaceAll(m.name, "/", ".")
		req := protoMessage(schemas, messages, m.desc.Input())
		resp := protoMessage(schemas, messages, m.desc.Output())
		chanMessages := jsonObject{
			"request":  messageRef(req),
			"response": messageRef(resp),
			"metadata": messageRef(messageMetadata),
			"end":      messageRef(messageEnd),
			"headers":  messageRef(messageHeaders),
			"status":   messageRef(messageStatus),
		}
		channel := jsonObject{
			"address":     m.path,
			"title":       m.name,
			"summary":     capitalize(methodKind(m.desc)) + " method " + m.name + " over a WebSocket, subprotocol " + wsSubprotocol + ".",
			"description": joinText(comments(m.desc), wsCallRule(m.desc)),
			"messages":    chanMessages,
			"bindings": jsonObject{"ws": jsonObject{
				"method": http.MethodGet,
				"headers": jsonObject{
					"type": "object",
					"properties": jsonObject{
						"Sec-WebSocket-Protocol": jsonObject{"type": "string", "const": wsSubprotocol, "description": "The client must offer " + wsSubprotocol + "; the handshake is refused (400) otherwise."},
					},
					"required": []string{"Sec-WebSocket-Protocol"},
				},
				"bindingVersion": wsBindingVersion,
			}},
		}
		channels[id] = channel
		chRef := "#/channels/" + id
		msgRef := func(key string) jsonObject { return jsonObject{"$ref": chRef + "/messages/" + key} }
		operations[id+".receive"] = jsonObject{
			"action":  "receive",
			"channel": jsonObject{"$ref": chRef},
			"title":   "Frames from the client",
			"summary": "An optional metadata frame first, the request message(s) as binary frames, and end to half-close.",
			"messages": []any{
				msgRef("metadata"), msgRef("request"), msgRef("end"),
			},
		}
		operations[id+".send"] = jsonObject{
			"action":  "send",
			"channel": jsonObject{"$ref": chRef},
			"title":   "Frames to the client",
			"summary": "The headers frame, the response message(s) as binary frames, then the status frame and the close.",
			"messages": []any{
				msgRef("headers"), msgRef("response"), msgRef("status"),
			},
		}
	}
	if sessions {
		addSessionChannel(channels, operations, messages)
	}
	doc := jsonObject{
		"asyncapi": asyncAPIVersion,
		"info": jsonObject{
			"title": "gRPC bridge: WebSocket protocol " + wsSubprotocol,
			"description": "Every exposed method opens as a WebSocket at its gRPC path with subprotocol " + wsSubprotocol +
				" (docs/protocol.md). Binary frames carry one protobuf message each, in the binary encoding, with no envelope; " +
				"their payload schemas show the messages' fields in the proto3 JSON mapping, for reference. Text frames are JSON control objects. " +
				"The close code repeats the final status: 1000 for OK, 4000 + the gRPC code otherwise.",
		},
		"defaultContentType": contentTypeJSON,
		"channels":           channels,
		"operations":         operations,
		"components": jsonObject{
			"schemas":  schemas.schemas,
			"messages": messages,
		},
	}
	return withContentVersion(doc)
}

// capitalize makes the first letter of s upper case (ASCII).
func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func messageRef(name string) jsonObject { return jsonObject{"$ref": "#/components/messages/" + name} }

// protoMessage adds the component message of a binary frame that carries
// md, once per full name, and returns its name.
func protoMessage(schemas *schemaSet, messages jsonObject, md protoreflect.MessageDescriptor) string {
	name := string(md.FullName())
	if _, ok := messages[name]; !ok {
		messages[name] = jsonObject{
			"name":        name,
			"title":       name,
			"contentType": mediaTypeProtobuf,
			"summary":     "A binary frame: one " + name + " in the protobuf binary encoding.",
			"description": joinText(comments(md), "The payload schema gives the message's fields in the proto3 JSON mapping, for reference; "+
				"on the wire the frame is the binary encoding, which any protobuf runtime decodes with the message's descriptor."),
			"payload":            schemas.message(md),
			"x-protobuf-message": name,
		}
	}
	return name
}

// wsCallRule says what a method of md's kind takes over a WebSocket.
func wsCallRule(md protoreflect.MethodDescriptor) string {
	if md.IsStreamingClient() {
		return "The client sends any number of request messages, then end."
	}
	return "The client sends exactly one request message (end after it is optional); the call starts at the client's first frame."
}

// controlMessages returns the component messages of the JSON control
// frames (docs/protocol.md, Frames).
func controlMessages() jsonObject {
	metadata := jsonObject{
		"type":                 "object",
		"additionalProperties": jsonObject{"type": "array", "items": jsonObject{"type": "string"}},
		"description":          "Keys are header names, case-insensitive; keys off the allow-list are dropped; -bin values are base64.",
	}
	control := func(name, summary string, payload jsonObject) jsonObject {
		return jsonObject{"name": name, "title": name, "contentType": contentTypeJSON, "summary": summary, "payload": payload}
	}
	strict := func(props jsonObject, required ...string) jsonObject {
		return jsonObject{"type": "object", "properties": props, "required": required, "additionalProperties": false}
	}
	return jsonObject{
		messageMetadata: control("metadata", "Request metadata: a text frame, only as the very first frame, once.",
			strict(jsonObject{"metadata": metadata}, "metadata")),
		messageEnd: control("end", "Half-close: the client sends no more messages.",
			strict(jsonObject{"end": jsonObject{"const": true}}, "end")),
		messageHeaders: control("headers", "The backend's allow-listed response headers, once, before the first message.",
			jsonObject{"type": "object", "properties": jsonObject{"headers": metadata}, "required": []string{"headers"}}),
		messageStatus: control("status", "The call's final status and allow-listed trailers: the last data frame, before the close frame.",
			jsonObject{
				"type": "object",
				"properties": jsonObject{
					"status":   ref(schemaStatus),
					"trailers": metadata,
				},
				"required": []string{"status", "trailers"},
			}),
	}
}

// AsyncAPI returns the AsyncAPI 3.1 document (JSON) of the WebSocket
// protocol grpc-ws.v1 for the exposed methods, from the current schema:
// one channel per method at its gRPC path, its request and response
// messages as binary frames and the JSON control frames. See
// docs/api-docs.md.
func (h *Handler) AsyncAPI() ([]byte, error) {
	return buildAsyncAPI(h.routes.Load(), h.cfg.sessions != nil)
}

// AsyncAPIHandler returns an [http.Handler] that serves [Handler.AsyncAPI]
// as [Handler.OpenAPIHandler] serves its document.
func (h *Handler) AsyncAPIHandler() http.Handler {
	return &apiDocHandler{h: h, build: func(rt *routes) ([]byte, error) { return buildAsyncAPI(rt, h.cfg.sessions != nil) }}
}
