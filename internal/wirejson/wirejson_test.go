package wirejson

import (
	"bytes"
	"math"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRandom runs the differential oracle on random messages of the test
// schema, reshaped on the wire. For the plain runs (no values that decline by
// design, no corruption) it also requires that AppendJSON never declines, so
// that the fast path is really taken.
func TestRandom(t *testing.T) {
	s := schema()
	cases := []struct {
		name       string
		md         protoreflect.MessageDescriptor
		n          int
		fallbacks  bool
		minHitRate float64 // of the inputs protojson accepts
	}{
		{"all/plain", s.all, 3000, false, 1},
		{"all/fallbacks", s.all, 3000, true, 0},
		{"inner/plain", s.inner, 1000, false, 1},
		{"p2/plain", s.p2, 2000, false, 0.75},
		{"p2/fallbacks", s.p2, 2000, true, 0},
		{"ed/plain", s.ed, 1000, false, 0.9},
		{"ed/fallbacks", s.ed, 1000, true, 0},
		{"event/plain", s.event, 500, false, 1},
		{"tick/plain", s.tick, 500, false, 1},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := &gen{r: rand.New(rand.NewSource(int64(i + 1))), fallbacks: c.fallbacks, corrupt: c.fallbacks}
			enc := New(c.md)
			var counts [3]int
			n := c.n
			if raceEnabled {
				n /= 4
			}
			for range n {
				counts[checkWire(t, enc, c.md, g.wire(c.md))]++
			}
			accepted := counts[hit] + counts[fellBack]
			rate := float64(counts[hit]) / float64(max(accepted, 1))
			t.Logf("hit %d, fell back %d, rejected %d: hit rate %.3f", counts[hit], counts[fellBack], counts[rejected], rate)
			if rate < c.minHitRate {
				t.Errorf("hit rate %.3f < %.3f", rate, c.minHitRate)
			}
		})
	}
}

// TestGeneratedTypes checks real generated types, whose proto.Unmarshal
// takes the fast (non-reflective) path: the output must match both decoders.
func TestGeneratedTypes(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	g := &gen{r: r}

	t.Run("FileDescriptorProto", func(t *testing.T) {
		md := (&descriptorpb.FileDescriptorProto{}).ProtoReflect().Descriptor()
		enc := New(md)
		if !enc.Supported() {
			t.Fatal("FileDescriptorProto not supported")
		}
		newMsg := func() proto.Message { return new(descriptorpb.FileDescriptorProto) }
		var counts [3]int
		// Real descriptors, as they are and reshaped.
		var wires [][]byte
		for _, fd := range []protoreflect.FileDescriptor{
			descriptorpb.File_google_protobuf_descriptor_proto,
			structpb.File_google_protobuf_struct_proto,
			schema().all.ParentFile(), schema().p2.ParentFile(),
		} {
			w, err := proto.Marshal(protodesc.ToFileDescriptorProto(fd))
			if err != nil {
				t.Fatal(err)
			}
			wires = append(wires, w)
			for range 50 {
				wires = append(wires, g.mutate(md, bytes.Clone(w), 0))
			}
		}
		for range 1000 {
			wires = append(wires, g.wire(md))
		}
		for _, w := range wires {
			counts[checkWire(t, enc, md, w, newMsg)]++
		}
		t.Logf("hit %d, fell back %d, rejected %d", counts[hit], counts[fellBack], counts[rejected])
		if counts[hit] < len(wires)/2 {
			t.Errorf("too few hits")
		}
	})

	for _, m := range []proto.Message{
		&timestamppb.Timestamp{}, &durationpb.Duration{}, &emptypb.Empty{},
		&wrapperspb.BoolValue{}, &wrapperspb.Int32Value{}, &wrapperspb.Int64Value{},
		&wrapperspb.UInt32Value{}, &wrapperspb.UInt64Value{}, &wrapperspb.FloatValue{},
		&wrapperspb.DoubleValue{}, &wrapperspb.StringValue{}, &wrapperspb.BytesValue{},
	} {
		md := m.ProtoReflect().Descriptor()
		t.Run(string(md.Name()), func(t *testing.T) {
			enc := New(md)
			if !enc.Supported() {
				t.Fatal("not supported")
			}
			newMsg := func() proto.Message { return m.ProtoReflect().New().Interface() }
			g := &gen{r: r, corrupt: true}
			var counts [3]int
			for range 300 {
				counts[checkWire(t, enc, md, g.wire(md), newMsg)]++
			}
			if counts[fellBack] > 0 {
				t.Errorf("fell back %d times", counts[fellBack])
			}
		})
	}
}

func TestSupported(t *testing.T) {
	s := schema()
	for _, c := range []struct {
		md   protoreflect.MessageDescriptor
		want bool
	}{
		{s.all, true}, {s.p2, true}, {s.req, true}, {s.selfReq, false},
		{(&structpb.Struct{}).ProtoReflect().Descriptor(), false},
		{(&structpb.Value{}).ProtoReflect().Descriptor(), false},
		{(&structpb.ListValue{}).ProtoReflect().Descriptor(), false},
		{(&emptypb.Empty{}).ProtoReflect().Descriptor(), true},
	} {
		enc := New(c.md)
		if enc.Supported() != c.want {
			t.Errorf("%v: Supported() = %v, want %v", c.md.FullName(), enc.Supported(), c.want)
		}
		if !c.want {
			if _, ok := enc.AppendJSON(nil, nil); ok {
				t.Errorf("%v: unsupported type but AppendJSON ok", c.md.FullName())
			}
		}
	}
}

// w builds wire by hand: a list of (field number, value) pairs where the
// value's Go type selects the wire type.
type kv struct {
	num protowire.Number
	val any // uint64: varint, fixed32/fixed64 types, string/[]byte: bytes, []kv: nested message, raw: as is
}

type (
	fixed32 uint32
	fixed64 uint64
	raw     []byte
)

func w(fields ...kv) []byte {
	var b []byte
	for _, f := range fields {
		switch v := f.val.(type) {
		case int:
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		case uint64:
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		case fixed32:
			b = protowire.AppendTag(b, f.num, protowire.Fixed32Type)
			b = protowire.AppendFixed32(b, uint32(v))
		case fixed64:
			b = protowire.AppendTag(b, f.num, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, uint64(v))
		case string:
			b = protowire.AppendTag(b, f.num, protowire.BytesType)
			b = protowire.AppendString(b, v)
		case []byte:
			b = protowire.AppendTag(b, f.num, protowire.BytesType)
			b = protowire.AppendBytes(b, v)
		case []kv:
			b = protowire.AppendTag(b, f.num, protowire.BytesType)
			b = protowire.AppendBytes(b, w(v...))
		case raw:
			b = append(b, v...)
		default:
			panic("bad kv")
		}
	}
	return b
}

func varints(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendVarint(b, v)
	}
	return b
}

// TestHandMade covers wire shapes a marshaller never produces. want is the
// expected compact JSON, "" when AppendJSON must decline; in both cases the
// oracle must agree.
func TestHandMade(t *testing.T) {
	s := schema()
	all := func(name string) protowire.Number {
		return s.all.Fields().ByName(protoreflect.Name(name)).Number()
	}
	ts := func(secs int64, nanos int32) []kv {
		return []kv{{1, uint64(secs)}, {2, uint64(int64(nanos))}}
	}
	cases := []struct {
		name string
		md   protoreflect.MessageDescriptor
		wire []byte
		want string
	}{
		{"empty", s.all, nil, `{}`},
		{"declaration order", s.all, w(kv{all("v_i32"), 1}, kv{all("v_e"), 1}, kv{all("v_s"), "x"}),
			`{"vE":"RED","vS":"x","vI32":1}`},
		{"last wins, implicit zero omitted", s.all, w(kv{all("v_i32"), 5}, kv{all("v_i32"), 0}, kv{all("v_s"), "a"}, kv{all("v_s"), ""}), `{}`},
		{"explicit zero printed", s.all, w(kv{all("o_i32"), 0}, kv{all("o_s"), ""}, kv{all("o_b"), 0}), `{"oI32":0,"oB":false,"oS":""}`},
		{"int32 truncation", s.all, w(kv{all("v_i32"), uint64(1<<32 + 5)}, kv{all("v_u32"), uint64(1 << 32)}, kv{all("v_b"), 2}),
			`{"vB":true,"vI32":5}`},
		{"negative int32 as 10 bytes", s.all, w(kv{all("v_i32"), -1}, kv{all("v_s32"), 1}), `{"vS32":-1,"vI32":-1}`},
		{"packed and unpacked mixed", s.all, w(
			kv{all("r_i32"), varints(1, 2)}, kv{all("r_i32"), 3}, kv{all("r_i32"), []byte{}}, kv{all("r_i32"), varints(4)}),
			`{"rI32":[1,2,3,4]}`},
		{"only empty packed", s.all, w(kv{all("r_i32"), []byte{}}), `{}`},
		{"packed fixed", s.all, w(kv{all("r_f32"), []byte{1, 0, 0, 0, 2, 0, 0, 0}}, kv{all("r_db"), protowire.AppendFixed64(nil, math.Float64bits(1e-7))}),
			`{"rF32":[1,2],"rDb":[1e-7]}`},
		{"bad packed length", s.all, w(kv{all("r_f32"), []byte{1, 0, 0}}), ``},
		{"unknown fields ignored", s.all, w(kv{200, 1}, kv{201, fixed32(1)}, kv{202, fixed64(1)}, kv{203, "x"}, kv{all("v_i32"), 7}), `{"vI32":7}`},
		{"unknown group declines", s.all, w(kv{200, raw{0xc3, 0x0c, 0xc4, 0x0c}}), ``},
		{"wire type mismatch is unknown", s.all, w(kv{all("v_i32"), fixed32(7)}, kv{all("v_s"), 3}, kv{all("inner"), 1}), `{}`},
		{"message merge", s.all, w(kv{all("inner"), []kv{{1, 1}, {2, "x"}}}, kv{all("inner"), []kv{{1, 2}, {4, []kv{{1, 9}}}}}),
			`{"inner":{"a":2,"b":"x","kids":[{"a":9}]}}`},
		{"empty message present", s.all, w(kv{all("inner"), []kv{}}, kv{all("empty"), []kv{}}), `{"inner":{},"empty":{}}`},
		{"oneof last member wins", s.all, w(kv{all("c_str"), "x"}, kv{all("c_int"), 5}), `{"cInt":"5"}`},
		{"oneof member restarts", s.all, w(kv{all("c_msg"), []kv{{1, 1}}}, kv{all("c_str"), "x"}, kv{all("c_msg"), []kv{{2, "y"}}}),
			`{"cMsg":{"b":"y"}}`},
		{"oneof zero printed", s.all, w(kv{all("c_int"), 0}), `{"cInt":"0"}`},
		{"oneof dropped invalid UTF-8", s.all, w(kv{all("c_str"), "\xff"}, kv{all("c_int"), 5}), ``},
		{"oneof dropped invalid message", s.all, w(kv{all("c_msg"), []byte{0xff}}, kv{all("c_int"), 5}), ``},
		{"overwritten invalid UTF-8", s.all, w(kv{all("v_s"), "\xff"}, kv{all("v_s"), "ok"}), ``},
		{"invalid UTF-8", s.all, w(kv{all("v_s"), "a\xc3"}), ``},
		{"string escapes", s.all, w(kv{all("v_s"), "\"\\/\b\f\n\r\t\x00\x1f\x7f<>&\u2028é😀\ufffd"}),
			`{"vS":"\"\\/\b\f\n\r\t\u0000\u001f` + "\x7f<>&\u2028é😀\ufffd" + `"}`},
		{"bytes", s.all, w(kv{all("v_by"), []byte{0xfb, 0xff}}), `{"vBy":"+/8="}`},
		{"enums", s.all, w(kv{all("v_e"), -3}, kv{all("r_e"), varints(1, 77, 1000)}, kv{all("nv"), 0}, kv{all("nvs"), varints(0, 5)}),
			`{"vE":"NEG","rE":["RED",77,"BIG"],"nvs":[null,null]}`},
		{"null value present", s.all, w(kv{all("nv"), 3}), `{"nv":null}`},
		{"floats", s.all, w(
			kv{all("v_db"), fixed64(math.Float64bits(1e21))}, kv{all("v_fl"), fixed32(math.Float32bits(1e-7))},
			kv{all("r_db"), protowire.AppendFixed64(protowire.AppendFixed64(protowire.AppendFixed64(nil,
				math.Float64bits(math.NaN())), math.Float64bits(math.Inf(-1))), math.Float64bits(math.Copysign(0, -1)))}),
			`{"vDb":1e+21,"vFl":1e-7,"rDb":["NaN","-Infinity",-0]}`},
		{"map sorted, duplicates", s.all, w(
			kv{all("m_str_i32"), []kv{{1, "b"}, {2, 2}}}, kv{all("m_str_i32"), []kv{{1, "a"}, {2, 1}}},
			kv{all("m_str_i32"), []kv{{1, "b"}, {2, 3}}}, kv{all("m_str_i32"), []kv{{2, 4}}}, kv{all("m_str_i32"), []kv{{1, "c"}}}),
			`{"mStrI32":{"":4,"a":1,"b":3,"c":0}}`},
		{"map int keys", s.all, w(
			kv{all("m_i32_str"), []kv{{1, 10}, {2, "x"}}}, kv{all("m_i32_str"), []kv{{1, -2}, {2, "y"}}}, kv{all("m_i32_str"), []kv{{1, 9}}}),
			`{"mI32Str":{"-2":"y","9":"","10":"x"}}`},
		{"map bool keys", s.all, w(kv{all("m_bool_bool"), []kv{{1, 1}, {2, 1}}}, kv{all("m_bool_bool"), []kv{{2, 0}}}),
			`{"mBoolBool":{"false":false,"true":true}}`},
		{"map message value absent", s.all, w(kv{all("m_i64_inner"), []kv{{1, 3}}}, kv{all("m_u64_ts"), []kv{{1, 1}}}),
			`{"mI64Inner":{"3":{}},"mU64Ts":{"1":"1970-01-01T00:00:00Z"}}`},
		{"map value merged within entry", s.all, w(kv{all("m_i64_inner"), []kv{{1, 3}, {2, []kv{{1, 1}}}, {2, []kv{{2, "z"}}}}}),
			`{"mI64Inner":{"3":{"a":1,"b":"z"}}}`},
		{"map dropped invalid value", s.all, w(kv{all("m_str_str"), []kv{{1, "k"}, {2, "\xff"}}}, kv{all("m_str_str"), []kv{{1, "k"}, {2, "ok"}}}), ``},
		{"map invalid key", s.all, w(kv{all("m_str_str"), []kv{{1, "\xff"}}}), ``},
		{"map entry unknown fields", s.all, w(kv{all("m_str_str"), []kv{{3, 1}, {1, "k"}, {9, "zz"}}}), `{"mStrStr":{"k":""}}`},
		{"map wrapper values", s.all, w(kv{all("m_str_wrap"), []kv{{1, "a"}}}, kv{all("m_str_wrap"), []kv{{1, "b"}, {2, []kv{{1, 5}}}}}),
			`{"mStrWrap":{"a":"0","b":"5"}}`},
		{"timestamp", s.all, w(kv{all("ts"), ts(1700000000, 120000000)}, kv{all("tss"), ts(minTimestampSeconds, 0)},
			kv{all("tss"), ts(maxTimestampSeconds, maxNanos)}, kv{all("tss"), ts(0, 1000)}),
			`{"ts":"2023-11-14T22:13:20.120Z","tss":["0001-01-01T00:00:00Z","9999-12-31T23:59:59.999999999Z","1970-01-01T00:00:00.000001Z"]}`},
		{"timestamp too late", s.all, w(kv{all("ts"), ts(maxTimestampSeconds+1, 0)}), ``},
		{"timestamp negative nanos", s.all, w(kv{all("ts"), ts(0, -1)}), ``},
		{"duration", s.all, w(kv{all("dur"), ts(-1, -500000000)}, kv{all("durs"), ts(0, -1)}, kv{all("durs"), ts(maxDurationSeconds, 0)}, kv{all("durs"), []kv{}}),
			`{"dur":"-1.500s","durs":["-0.000000001s","315576000000s","0s"]}`},
		{"duration sign mismatch", s.all, w(kv{all("dur"), ts(1, -1)}), ``},
		{"wrappers", s.all, w(kv{all("w_Int64Value"), []kv{}}, kv{all("w_StringValue"), []kv{{1, "a"}, {1, "b"}}},
			kv{all("w_BytesValue"), []kv{}}, kv{all("w_FloatValue"), []kv{{1, fixed32(math.Float32bits(0.1))}}}, kv{all("w_BoolValue"), []kv{{1, 0}}}),
			`{"wBoolValue":false,"wInt64Value":"0","wFloatValue":0.1,"wStringValue":"b","wBytesValue":""}`},
		{"wrapper invalid UTF-8", s.all, w(kv{all("w_StringValue"), []kv{{1, "\xff"}}}), ``},
		{"escaped json_name", s.all, w(kv{all("odd"), 1}), `{"odd\"Na\\me` + "\u2028" + `<&>\u0001":1}`},
		{"huge field numbers", s.all, w(kv{all("far"), 1}, kv{all("far_s"), "x"}), `{"far":1,"farS":"x"}`},
		{"struct declines", s.all, w(kv{all("st"), []kv{}}), ``},
		{"any declines", s.all, w(kv{all("any"), []kv{}}), ``},
		{"64-bit ints", s.all, w(kv{all("v_u64"), uint64(math.MaxUint64)}, kv{all("v_s64"), 1}, kv{all("v_sf64"), fixed64(1 << 63)}, kv{all("v_f64"), fixed64(math.MaxUint64)}),
			`{"vSf64":"-9223372036854775808","vF64":"18446744073709551615","vS64":"-1","vU64":"18446744073709551615"}`},
		{"truncated", s.all, w(kv{all("v_s"), "hello"})[:4], ``},
		{"overlong varint", s.all, append(protowire.AppendTag(nil, 1, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), ``},
		{"non-minimal varint", s.all, append(protowire.AppendTag(nil, all("v_i32"), protowire.VarintType), 0x81, 0x80, 0x00), `{"vI32":1}`},
		{"field number 0", s.all, []byte{0x00, 0x01}, ``},
		{"field number too big", s.all, protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), ``},
		{"end group", s.all, w(kv{1, raw{0x0c}}), ``},
		{"reserved wire type", s.all, []byte{0x0e, 0x00}, ``},
		{"deep nesting", s.inner, deep(150), ``},
		{"nesting within limit", s.inner, deep(50), strings.Repeat(`{"child":`, 50) + `{}` + strings.Repeat(`}`, 50)},

		{"p2 defaults absent", s.p2, nil, `{}`},
		{"p2 zero present", s.p2, w(kv{1, 0}, kv{14, ""}), `{"vI32":0,"vS":""}`},
		{"p2 closed enum known", s.p2, w(kv{16, 2}, kv{36, 1}, kv{56, varints(2, 1)}), `{"vE":"C_TWO","rE":["C_ONE"],"pE":["C_TWO","C_ONE"]}`},
		{"p2 closed enum unknown", s.p2, w(kv{16, 5}), ``},
		{"p2 closed enum unknown packed", s.p2, w(kv{56, varints(1, 5)}), ``},
		{"p2 required present", s.p2, w(kv{62, []kv{{1, 0}}}), `{"req":{"x":0}}`},
		{"p2 required missing", s.p2, w(kv{62, []kv{{2, "y"}}}), ``},
		{"p2 nested required missing", s.p2, w(kv{63, []kv{{1, 1}, {3, []kv{}}}}), ``},
		{"p2 invalid UTF-8", s.p2, w(kv{14, "\xff"}), ``},
		{"p2 group", s.p2, w(kv{80, raw{0x83, 0x05, 0x84, 0x05}}), ``},
		{"p2 extension", s.p2, w(kv{1000, 1}), ``},
		{"p2 oneof message then scalar", s.p2, w(kv{72, []kv{{1, 1}}}, kv{70, 3}), `{"oi":3}`},
		{"p2 map closed enum", s.p2, w(kv{64, []kv{{1, "k"}}}), `{"cmap":{"k":"C_ZERO"}}`},
		{"p2 closed enum no zero", s.p2, w(kv{17, 6}), `{"vOdd":"O_SIX"}`},
		{"p2 closed enum zero unknown", s.p2, w(kv{17, 0}), ``},
		{"req self", s.selfReq, w(kv{1, []kv{}}), ``},

		{"ed implicit and explicit", s.ed, w(kv{1, 0}, kv{2, 0}, kv{11, 1}), `{"explicitI":0,"req":"1"}`},
		{"ed required missing", s.ed, w(kv{1, 1}), ``},
		{"ed no UTF-8 validation", s.ed, w(kv{3, "\xff"}, kv{11, 1}), ``},
		{"ed dropped unvalidated string", s.ed, w(kv{3, "\xff"}, kv{3, "ok"}, kv{11, 1}), ``},
		{"ed closed enum", s.ed, w(kv{5, 1}, kv{6, 7}, kv{11, 1}), `{"ce":"CLOSED_ONE","oe":7,"req":"1"}`},
		{"ed closed enum unknown", s.ed, w(kv{5, 7}, kv{11, 1}), ``},
		{"ed delimited", s.ed, w(kv{7, raw{0x3b, 0x3c}}, kv{11, 1}), ``},
		{"ed delimited as bytes is unknown", s.ed, w(kv{7, []kv{}}, kv{11, 1}), ``},
		{"ed repeated", s.ed, w(kv{8, 1}, kv{8, varints(2, 3)}, kv{9, varints(4)}, kv{9, 5}, kv{11, 1}), `{"packedR":[1,2,3],"expandedR":[4,5],"req":"1"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc := New(c.md)
			got, ok := enc.AppendJSON(nil, c.wire)
			if c.want == "" {
				if ok {
					t.Errorf("AppendJSON ok, want decline: %s", got)
				}
			} else if !ok {
				t.Errorf("AppendJSON declined, want %s", c.want)
			} else if string(got) != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			checkWire(t, enc, c.md, c.wire)
		})
	}
}

// deep nests Inner.child n levels deep.
func deep(n int) []byte {
	var b []byte
	for range n {
		b = protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), b)
	}
	return b
}

// TestConcurrent shares one Encoder between goroutines (for -race).
func TestConcurrent(t *testing.T) {
	s := schema()
	enc := New(s.all)
	g := &gen{r: rand.New(rand.NewSource(3))}
	var wires [][]byte
	var want [][]byte
	for range 50 {
		wr := g.wire(s.all)
		out, ok := enc.AppendJSON(nil, wr)
		if ok {
			wires, want = append(wires, wr), append(want, out)
		}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var buf []byte
			for range 20 {
				for i, wr := range wires {
					var ok bool
					buf, ok = enc.AppendJSON(buf[:0], wr)
					if !ok || !bytes.Equal(buf, want[i]) {
						t.Errorf("concurrent AppendJSON differs")
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

// TestZeroAllocs: with dst reused, transcoding allocates nothing.
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	for _, c := range benchCases() {
		buf := make([]byte, 0, 1024)
		var ok bool
		allocs := testing.AllocsPerRun(200, func() {
			buf, ok = c.enc.AppendJSON(buf[:0], c.wire)
		})
		if !ok || allocs != 0 {
			t.Errorf("%s: ok=%v, %v allocs/op", c.name, ok, allocs)
		}
	}
	// Maps sort through scratch memory: also allocation-free once warm.
	s := schema()
	enc := New(s.all)
	wire := w(kv{100, []kv{{1, "b"}, {2, 2}}}, kv{100, []kv{{1, "a"}, {2, 1}}}, kv{102, []kv{{1, 3}, {2, []kv{{2, "x"}}}}})
	buf := make([]byte, 0, 1024)
	if allocs := testing.AllocsPerRun(200, func() { buf, _ = enc.AppendJSON(buf[:0], wire) }); allocs != 0 {
		t.Errorf("maps: %v allocs/op", allocs)
	}
}
