package bridge

// The session channel of the AsyncAPI document: grpc-session.v1 on its
// WebSocket carrier (docs/protocol.md, "Sessions"), present when
// WithSessions turns sessions on.

const (
	sessionChannelID    = "grpcbridge.session"
	messageClientFrames = "grpcsession.clientFrames"
	messageBridgeFrames = "grpcsession.bridgeFrames"
	mediaTypeOctets     = "application/octet-stream"
)

// sessionFrameLayout is the layout of every frame, for the descriptions.
const sessionFrameLayout = "One binary WebSocket message holds one or more whole frames, back to back. Each frame is " +
	"type (1 byte) | flags (1 byte, 0) | seq (uvarint) | call (uvarint) | length (uvarint) | payload (length bytes); " +
	"uvarints are protobuf's base-128 varints. OPEN to WINDOW are sequenced (seq and call set, kept until acknowledged " +
	"and resent after a cut); the others have seq and call 0."

// sessionFrameDoc describes one frame type for a direction's message.
type sessionFrameDoc struct {
	typ     frameType
	payload string
}

// Frames by direction, with their payloads (docs/protocol.md, Frames).
var (
	clientSessionFrames = []sessionFrameDoc{
		{frameOpen, "window uvarint, path length uvarint, the method's gRPC path, then optionally a grpc-ws.v1 metadata object"},
		{frameMessage, "one request message, protobuf binary"},
		{frameHalfClose, "empty"},
		{frameCancel, "empty"},
		{frameWindow, "increment uvarint, in bytes"},
		{frameAck, "uvarint: the last sequence number received"},
		{framePing, "0 to 64 opaque bytes"},
		{framePong, "the ping's bytes"},
		{frameGoaway, "empty, or a JSON status"},
	}
	bridgeSessionFrames = []sessionFrameDoc{
		{frameHello, "token length uvarint, token, ack, max_calls, window, max_message, grace_ms (uvarints)"},
		{frameMessage, "one response message, protobuf binary"},
		{frameHeaders, `JSON {"headers":{...}}`},
		{frameStatus, `JSON {"status":{...},"trailers":{...}}`},
		{frameWindow, "increment uvarint, in bytes"},
		{frameAck, "uvarint: the last sequence number received"},
		{framePing, "0 to 64 opaque bytes"},
		{framePong, "the ping's bytes"},
		{frameGoaway, "a JSON status: why the session ends"},
	}
)

// addSessionChannel adds the session channel, its two operations and its
// two messages (the frames each way).
func addSessionChannel(channels, operations, messages jsonObject) {
	frames := func(name, summary string, docs []sessionFrameDoc) jsonObject {
		types := make([]any, 0, len(docs))
		for _, d := range docs {
			types = append(types, jsonObject{"type": int(d.typ), "name": d.typ.String(), "sequenced": d.typ.sequenced(), "payload": d.payload})
		}
		return jsonObject{
			"name": name, "title": name, "contentType": mediaTypeOctets, "summary": summary,
			"description":   sessionFrameLayout,
			"payload":       jsonObject{"type": "string", "format": "binary"},
			"x-frame-types": types,
		}
	}
	messages[messageClientFrames] = frames("clientFrames", "Frames from the client: OPEN, MESSAGE, HALF_CLOSE, CANCEL, WINDOW, ACK, PING, PONG, GOAWAY.", clientSessionFrames)
	messages[messageBridgeFrames] = frames("bridgeFrames", "Frames from the bridge: HELLO first, then MESSAGE, HEADERS, STATUS, WINDOW, ACK, PING, PONG, GOAWAY.", bridgeSessionFrames)
	channels[sessionChannelID] = jsonObject{
		"address": sessionPath,
		"title":   "Sessions (" + sessionSubprotocol + ")",
		"summary": "Any number of concurrent calls of any exposed methods over one WebSocket, subprotocol " + sessionSubprotocol + ".",
		"description": "A GET without sid creates a session; with sid (the token of the latest HELLO) and ack it reattaches one within the grace period. " +
			"The HTTP carrier (a POST creates the session, an event stream or long polls carry frames down, POSTs carry them up) moves the same frames.",
		"messages": jsonObject{"clientFrames": messageRef(messageClientFrames), "bridgeFrames": messageRef(messageBridgeFrames)},
		"bindings": jsonObject{"ws": jsonObject{
			"method": "GET",
			"query": jsonObject{
				"type": "object",
				"properties": jsonObject{
					"sid": jsonObject{"type": "string", "description": "The session token, to reattach; absent to create a session."},
					"ack": jsonObject{"type": "integer", "minimum": 0, "description": "The last downstream sequence number received, with sid."},
				},
			},
			"headers": jsonObject{
				"type":       "object",
				"properties": jsonObject{"Sec-WebSocket-Protocol": jsonObject{"type": "string", "const": sessionSubprotocol}},
				"required":   []string{"Sec-WebSocket-Protocol"},
			},
			"bindingVersion": wsBindingVersion,
		}},
	}
	chRef := "#/channels/" + sessionChannelID
	operations[sessionChannelID+".receive"] = jsonObject{
		"action": "receive", "channel": jsonObject{"$ref": chRef}, "title": "Frames from the client",
		"messages": []any{jsonObject{"$ref": chRef + "/messages/clientFrames"}},
	}
	operations[sessionChannelID+".send"] = jsonObject{
		"action": "send", "channel": jsonObject{"$ref": chRef}, "title": "Frames to the client",
		"messages": []any{jsonObject{"$ref": chRef + "/messages/bridgeFrames"}},
	}
}
