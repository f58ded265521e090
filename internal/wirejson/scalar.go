package wirejson

import (
	"bytes"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Scalar returns the value of the top-level singular scalar (non-message,
// non-repeated) field fd as proto.Unmarshal would set it: the last occurrence
// on the wire, or fd's default when absent (or when a later occurrence of
// another member of fd's oneof cleared it). ok is false for malformed wire
// and for an unsupported fd. Only the framing of the top-level fields is
// checked, not the contents of other fields. Bytes values are copied.
func Scalar(wire []byte, fd protoreflect.FieldDescriptor) (v protoreflect.Value, ok bool) {
	if fd == nil || fd.IsList() || fd.IsMap() || fd.IsExtension() {
		return v, false
	}
	kind := fd.Kind()
	wt := wireType(kind)
	if wt == protowire.StartGroupType || kind == protoreflect.MessageKind {
		return v, false
	}
	var oneof protoreflect.OneofDescriptor
	if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
		oneof = od
	}
	var closed protoreflect.EnumValueDescriptors
	if kind == protoreflect.EnumKind && fd.Enum().IsClosed() {
		closed = fd.Enum().Values()
	}
	validate := kind == protoreflect.StringKind && enforceUTF8(fd)

	var (
		found    bool
		raw      uint64
		off, end int
	)
	for i := 0; i < len(wire); {
		num, t, j := readTag(wire, i)
		if j < 0 {
			return v, false
		}
		x, o, e, next := readValue(wire, j, t)
		if next < 0 {
			return v, false
		}
		i = next
		switch {
		case protowire.Number(num) == fd.Number():
			if t != wt {
				continue // a wire type mismatch makes it an unknown field
			}
			if validate && !utf8.Valid(wire[o:e]) {
				return v, false // proto.Unmarshal rejects it
			}
			if closed != nil && closed.ByNumber(protoreflect.EnumNumber(int32(x))) == nil {
				return v, false // decoders disagree on where unknown closed enum numbers go
			}
			found, raw, off, end = true, x, o, e
		case oneof != nil:
			if other := oneof.Fields().ByNumber(protowire.Number(num)); other != nil && t == wireType(other.Kind()) {
				found = false // setting another member clears fd
			}
		}
	}
	if !found {
		return fd.Default(), true
	}
	switch kind {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(raw != 0), true
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(raw))), true
	case protoreflect.Int32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(raw)), true
	case protoreflect.Sint32Kind:
		return protoreflect.ValueOfInt32(int32(protowire.DecodeZigZag(raw & math.MaxUint32))), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(raw)), true
	case protoreflect.Int64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(raw)), true
	case protoreflect.Sint64Kind:
		return protoreflect.ValueOfInt64(protowire.DecodeZigZag(raw)), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(raw), true
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(math.Float32frombits(uint32(raw))), true
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(math.Float64frombits(raw)), true
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(wire[off:end])), true
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Clone(wire[off:end])), true
	}
	return v, false
}

// enforceUTF8 reports whether proto.Unmarshal rejects invalid UTF-8 in the
// string field fd (proto3, or editions with utf8_validation = VERIFY).
func enforceUTF8(fd protoreflect.FieldDescriptor) bool {
	if fd.Syntax() == protoreflect.Editions {
		if x, ok := fd.(interface{ EnforceUTF8() bool }); ok {
			return x.EnforceUTF8()
		}
	}
	return fd.Syntax() == protoreflect.Proto3
}
