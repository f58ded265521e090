package wirejson

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

type benchCase struct {
	name string
	md   protoreflect.MessageDescriptor
	enc  *Encoder
	wire []byte
}

// benchCases are typical streamed events (a text + 60-byte payload +
// sequence number; a timestamped sample) and a large nested message.
func benchCases() []benchCase {
	s := schema()
	event := dynamicpb.NewMessage(s.event)
	set := func(m *dynamicpb.Message, name string, v protoreflect.Value) {
		m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(name)), v)
	}
	payload := make([]byte, 60)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	set(event, "text", protoreflect.ValueOfString("hello, world: the quick brown fox"))
	set(event, "payload", protoreflect.ValueOfBytes(payload))
	set(event, "seq", protoreflect.ValueOfUint64(1234567890123))

	tick := dynamicpb.NewMessage(s.tick)
	at := dynamicpb.NewMessage(s.tick.Fields().ByName("at").Message())
	now := time.Date(2025, 6, 1, 12, 30, 45, 123456000, time.UTC)
	set(at, "seconds", protoreflect.ValueOfInt64(now.Unix()))
	set(at, "nanos", protoreflect.ValueOfInt32(int32(now.Nanosecond())))
	set(tick, "at", protoreflect.ValueOfMessage(at))
	set(tick, "value", protoreflect.ValueOfFloat64(3.14159))
	set(tick, "name", protoreflect.ValueOfString("cpu.load"))
	set(tick, "seq", protoreflect.ValueOfUint64(42))

	// A large, deep message: descriptor.proto's own descriptor.
	file := dynamicpb.NewMessage((&descriptorpb.FileDescriptorProto{}).ProtoReflect().Descriptor())
	proto.Merge(file, protodesc.ToFileDescriptorProto(descriptorpb.File_google_protobuf_descriptor_proto))

	var cases []benchCase
	for _, c := range []struct {
		name string
		m    *dynamicpb.Message
	}{{"event", event}, {"tick", tick}, {"descriptor", file}} {
		wire, err := proto.Marshal(c.m)
		if err != nil {
			panic(err)
		}
		md := c.m.Descriptor()
		cases = append(cases, benchCase{c.name, md, New(md), wire})
	}
	return cases
}

func BenchmarkTranscode(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 1024)
			b.SetBytes(int64(len(c.wire)))
			b.ReportAllocs()
			for b.Loop() {
				var ok bool
				if buf, ok = c.enc.AppendJSON(buf[:0], c.wire); !ok {
					b.Fatal("declined")
				}
			}
		})
	}
}

// BenchmarkUnmarshalProtojson is the path AppendJSON replaces: decode into a
// dynamic message, print with protojson.
func BenchmarkUnmarshalProtojson(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 1024)
			opts := protojson.MarshalOptions{}
			b.SetBytes(int64(len(c.wire)))
			b.ReportAllocs()
			for b.Loop() {
				m := dynamicpb.NewMessage(c.md)
				if err := proto.Unmarshal(c.wire, m); err != nil {
					b.Fatal(err)
				}
				var err error
				if buf, err = opts.MarshalAppend(buf[:0], m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
