package bridge

import (
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcbridge/grpcbridge/internal/wirejson"
)

// Responses of SSE calls arrive as wire bytes (rawCodec) and go to the
// browser as proto3 JSON. wirejson writes the JSON straight from the wire
// bytes, without decoding them into a message first; for the types and
// the rare inputs that it leaves alone, the response is decoded and
// encoded with protojson, which gives the same JSON.

// responseEncoder turns the responses of one method into JSON and event
// ids. It is not safe for concurrent use: each call has its own.
type responseEncoder struct {
	h   *Handler
	m   *method
	msg proto.Message // for the fallback, decoded into for each response that needs it
}

func newResponseEncoder(h *Handler, m *method) *responseEncoder {
	return &responseEncoder{h: h, m: m}
}

// encode appends the JSON of the response wire to dst and returns it with
// the response's event id (seq when the method has no cursor field).
func (e *responseEncoder) encode(dst, wire []byte, seq uint64) ([]byte, string, error) {
	m := e.m
	if m.json != nil {
		n := len(dst)
		if out, ok := m.json.AppendJSON(dst, wire); ok {
			if m.cursor == nil {
				return out, strconv.FormatUint(seq, 10), nil
			}
			if v, ok := wirejson.Scalar(wire, m.cursor); ok {
				return out, formatCursor(v, m.cursor), nil
			}
		}
		dst = dst[:n] // what AppendJSON appended is dropped
	}
	return e.slow(dst, wire, seq)
}

// slow decodes the response and encodes it with protojson.
func (e *responseEncoder) slow(dst, wire []byte, seq uint64) (out []byte, id string, err error) {
	m := e.m
	if e.msg == nil {
		e.msg = m.output.New().Interface()
	}
	// Decoding malformed map entries into a dynamic message can panic in
	// protobuf-go (proto/decode.go, "cannot convert nil to map key"): a
	// backend's bad bytes must end its stream, not the process.
	defer func() {
		if p := recover(); p != nil {
			out, id, err = dst, "", status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", p)
		}
	}()
	if err := proto.Unmarshal(wire, e.msg); err != nil {
		return dst, "", status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	if out, err = e.h.codec.marshal.MarshalAppend(dst, e.msg); err != nil {
		return dst, "", status.Errorf(codes.Internal, "encode %s as JSON: %v", m.desc.Output().FullName(), err)
	}
	return out, eventID(m, e.msg, seq), nil
}

// formatCursor formats the value of a cursor field as an event id. A value
// that cannot be an id (a string with a line break) gives no id, so the
// browser keeps the previous one rather than a corrupted stream.
func formatCursor(v protoreflect.Value, fd protoreflect.FieldDescriptor) string {
	var id string
	switch fd.Kind() {
	case protoreflect.StringKind:
		id = v.String()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		id = strconv.FormatUint(v.Uint(), 10)
	default:
		id = strconv.FormatInt(v.Int(), 10)
	}
	if !validEventID(id) {
		return ""
	}
	return id
}
