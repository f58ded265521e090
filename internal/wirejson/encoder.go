// Package wirejson transcodes protobuf wire bytes straight to proto3 JSON,
// without unmarshalling into a message and running protojson.
//
// The output is byte for byte what protojson.MarshalOptions{} prints for the
// message proto.Unmarshal decodes from the same bytes (minus the random
// spaces protojson inserts after commas): lowerCamelCase names in
// declaration order, unpopulated fields omitted, 64-bit integers as strings,
// enums as names, map keys sorted, and the JSON forms of Timestamp,
// Duration and the wrapper types.
//
// # Fallback contract
//
// The encoder is exact or declines. When AppendJSON returns ok == false the
// input is something it does not handle (Any, Struct, Value, ListValue,
// FieldMask, groups, possible extensions, closed enums with unknown numbers,
// very deep nesting, ...) or something proto.Unmarshal or protojson would
// reject (malformed wire, invalid UTF-8, missing required fields,
// out-of-range timestamps, ...). The caller then truncates its buffer and
// runs proto.Unmarshal + protojson, which either produces the JSON or the
// proper error. Declining is always safe; printing something protojson
// would not is a bug.
package wirejson

import (
	"math"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Encoder transcodes the wire form of one message type to proto3 JSON.
type Encoder struct {
	root *msgPlan
}

// New returns the Encoder of md. It is safe for concurrent use; build once per
// message type, use many times. New walks every message type reachable from
// md, so it costs far more than one AppendJSON call.
func New(md protoreflect.MessageDescriptor) *Encoder {
	return &Encoder{root: buildPlans(md)}
}

// Supported reports whether AppendJSON can ever return ok for this type
// (false: it always falls back, so callers can skip it).
func (e *Encoder) Supported() bool {
	return e.root.canOK
}

// AppendJSON appends to dst the proto3 JSON of the message whose wire bytes
// are wire, exactly as protojson.MarshalOptions{} prints proto.Unmarshal(wire)
// (compare after json.Compact: protojson adds random spaces). ok is false
// when the encoder does not handle this input or the input is invalid; the
// bytes appended to dst after its original length are then garbage and the
// caller should truncate and fall back to proto.Unmarshal + protojson.
func (e *Encoder) AppendJSON(dst, wire []byte) (out []byte, ok bool) {
	if !e.root.canOK || len(wire) > math.MaxInt32 {
		return dst, false // occurrence offsets are int32
	}
	s := getScratch()
	s.occ = append(s.occ, occ{end: int32(len(wire))}) // the top-level message: occurrence 1
	out, ok = s.emitMessage(dst, e.root, wire, 1, true, 0)
	putScratch(s)
	return out, ok
}
