package bridge

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/wirejson"
)

// checkRequest decides as proto.Unmarshal does, with and without its
// wirejson fast path, for message types the fast path handles and for
// inputs it declines.
func TestCheckRequestAgreesWithUnmarshal(t *testing.T) {
	t.Parallel()
	valid, _ := proto.Marshal(&demov1.EchoRequest{Text: "héllo", Payload: []byte{0, 1, 2}})
	stamp, _ := proto.Marshal(timestamppb.New(timestamppb.Now().AsTime()))
	field := func(num protowire.Number, typ protowire.Type, v []byte) []byte {
		return append(protowire.AppendTag(nil, num, typ), v...)
	}
	for _, tc := range []struct {
		name string
		desc protoreflect.MessageDescriptor
		data []byte
	}{
		{"valid", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), valid},
		{"empty", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), nil},
		{"unknown field", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), append(valid, field(9, protowire.VarintType, []byte{5})...)},
		{"invalid UTF-8 in a string", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), field(1, protowire.BytesType, []byte{2, 0xff, 0xfe})},
		{"truncated length", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), field(2, protowire.BytesType, []byte{9, 1})},
		{"truncated varint", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), []byte{0x08, 0x80}},
		{"wrong wire type", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), field(1, protowire.VarintType, []byte{1})},
		{"field number 0", (&demov1.EchoRequest{}).ProtoReflect().Descriptor(), []byte{0x00, 0x01}},
		{"a well-known type", (&timestamppb.Timestamp{}).ProtoReflect().Descriptor(), stamp},
		{"a timestamp out of range", (&timestamppb.Timestamp{}).ProtoReflect().Descriptor(), field(1, protowire.VarintType, protowire.AppendVarint(nil, 1<<62))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := proto.Unmarshal(tc.data, messageType(tc.desc).New().Interface())
			fast := &method{input: messageType(tc.desc)}
			if enc := wirejson.New(tc.desc); enc.Supported() {
				fast.inputJSON = enc
			}
			slow := &method{input: fast.input}
			for name, m := range map[string]*method{"with wirejson": fast, "without": slow} {
				if got := m.checkRequest(tc.data); (got == nil) != (want == nil) {
					t.Errorf("%s: checkRequest = %v; proto.Unmarshal = %v", name, got, want)
				}
			}
		})
	}
}

// Checking a request frame that wirejson handles allocates nothing: its
// scratch buffer comes from the pool and goes back to it.
func TestCheckRequestDoesNotAllocate(t *testing.T) { // not parallel: AllocsPerRun
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items on purpose: allocation counts mean nothing")
	}
	desc := (&demov1.EchoRequest{}).ProtoReflect().Descriptor()
	m := &method{input: messageType(desc), inputJSON: wirejson.New(desc)}
	data, _ := proto.Marshal(&demov1.EchoRequest{Text: "héllo", Payload: make([]byte, 60)})
	if err := m.checkRequest(data); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = m.checkRequest(data) }); allocs != 0 {
		t.Fatalf("checkRequest: %v allocations per call, want 0", allocs)
	}
}
