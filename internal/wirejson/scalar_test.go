package wirejson

import (
	"bytes"
	"math"
	"math/rand"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// TestScalar compares Scalar with proto.Unmarshal + Get for every singular
// scalar field of random (reshaped) messages, proto3 and proto2 (defaults,
// closed enums, oneofs).
func TestScalar(t *testing.T) {
	s := schema()
	for i, md := range []protoreflect.MessageDescriptor{s.all, s.p2, s.ed, s.event, s.tick} {
		g := &gen{r: rand.New(rand.NewSource(int64(100 + i)))}
		var fds []protoreflect.FieldDescriptor
		for j := 0; j < md.Fields().Len(); j++ {
			fd := md.Fields().Get(j)
			if !fd.IsList() && !fd.IsMap() && fd.Message() == nil && fd.Kind() != protoreflect.GroupKind {
				fds = append(fds, fd)
			}
		}
		checked := 0
		for range 1000 {
			wire := g.wire(md)
			m := dynamicpb.NewMessage(md)
			if err := unmarshal(wire, m); err != nil {
				continue
			}
			for _, fd := range fds {
				got, ok := Scalar(wire, fd)
				if !ok {
					if fd.Enum() != nil && fd.Enum().IsClosed() {
						continue // unknown closed enum number: declined by design
					}
					t.Fatalf("%v: Scalar declined valid wire %x", fd.FullName(), wire)
				}
				if want := m.Get(fd); !sameValue(got, want) {
					t.Fatalf("%v: Scalar = %v, want %v (wire %x)", fd.FullName(), got, want, wire)
				}
				checked++
			}
		}
		t.Logf("%v: %d values checked", md.FullName(), checked)
	}
}

func sameValue(a, b protoreflect.Value) bool {
	switch x := a.Interface().(type) {
	case float32:
		return math.Float32bits(x) == math.Float32bits(float32(b.Float()))
	case float64:
		return math.Float64bits(x) == math.Float64bits(b.Float())
	case []byte:
		return bytes.Equal(x, b.Bytes())
	}
	return a.Interface() == b.Interface()
}

func TestScalarEdges(t *testing.T) {
	s := schema()
	fd := func(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
		return md.Fields().ByName(protoreflect.Name(name))
	}
	seq := fd(s.event, "seq")
	if v, ok := Scalar(nil, seq); !ok || v.Uint() != 0 {
		t.Errorf("absent: %v %v", v, ok)
	}
	if v, ok := Scalar(w(kv{3, 5}, kv{1, "x"}, kv{3, 9}), seq); !ok || v.Uint() != 9 {
		t.Errorf("last wins: %v %v", v, ok)
	}
	if v, ok := Scalar(w(kv{3, 5}, kv{3, fixed64(7)}), seq); !ok || v.Uint() != 5 {
		t.Errorf("wire type mismatch is unknown: %v %v", v, ok)
	}
	if _, ok := Scalar(w(kv{3, 5})[:1], seq); ok {
		t.Error("truncated wire accepted")
	}
	if _, ok := Scalar(nil, fd(s.tick, "at")); ok {
		t.Error("message field accepted")
	}
	if _, ok := Scalar(nil, fd(s.all, "r_i32")); ok {
		t.Error("repeated field accepted")
	}
	if _, ok := Scalar(w(kv{fd(s.all, "v_s").Number(), "\xff"}), fd(s.all, "v_s")); ok {
		t.Error("invalid UTF-8 in proto3 accepted")
	}
	if v, ok := Scalar(nil, fd(s.p2, "v_i32")); !ok || v.Int() != -7 {
		t.Errorf("proto2 default: %v %v", v, ok)
	}
	cStr, cInt := fd(s.all, "c_str"), fd(s.all, "c_int")
	wire := w(kv{cStr.Number(), "x"}, kv{cInt.Number(), 5})
	if v, ok := Scalar(wire, cStr); !ok || v.String() != "" {
		t.Errorf("cleared oneof member: %v %v", v, ok)
	}
	if v, ok := Scalar(wire, cInt); !ok || v.Int() != 5 {
		t.Errorf("oneof member: %v %v", v, ok)
	}
	_ = protowire.MinValidNumber
}
