package bridge

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
)

// queryTestEvery is querytest.v1.Every, a message with a field of every
// shape that query parameters can name: each scalar kind, an enum,
// repeated fields, maps, a oneof, a proto3 optional, a custom JSON name,
// every well-known type that grpc-gateway parses and one it does not, and
// itself, nested, repeated and as map values. Its enum is registered in
// protoregistry.GlobalTypes, as a compiled-in enum would be, so that
// grpc-gateway's parser can serve as the reference for queryParser.
var queryTestEvery = sync.OnceValue(func() protoreflect.MessageDescriptor {
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	repeated := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	var fields []*descriptorpb.FieldDescriptorProto
	add := func(name string, label *descriptorpb.FieldDescriptorProto_Label, typ descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(int32(len(fields) + 1)), Label: label, Type: typ.Enum(),
		}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		fields = append(fields, f)
		return f
	}
	type T = descriptorpb.FieldDescriptorProto_Type
	for _, s := range []struct {
		name string
		typ  T
	}{
		{"d", descriptorpb.FieldDescriptorProto_TYPE_DOUBLE}, {"f", descriptorpb.FieldDescriptorProto_TYPE_FLOAT},
		{"i32", descriptorpb.FieldDescriptorProto_TYPE_INT32}, {"i64", descriptorpb.FieldDescriptorProto_TYPE_INT64},
		{"u32", descriptorpb.FieldDescriptorProto_TYPE_UINT32}, {"u64", descriptorpb.FieldDescriptorProto_TYPE_UINT64},
		{"s32", descriptorpb.FieldDescriptorProto_TYPE_SINT32}, {"s64", descriptorpb.FieldDescriptorProto_TYPE_SINT64},
		{"fx32", descriptorpb.FieldDescriptorProto_TYPE_FIXED32}, {"fx64", descriptorpb.FieldDescriptorProto_TYPE_FIXED64},
		{"sfx32", descriptorpb.FieldDescriptorProto_TYPE_SFIXED32}, {"sfx64", descriptorpb.FieldDescriptorProto_TYPE_SFIXED64},
		{"b", descriptorpb.FieldDescriptorProto_TYPE_BOOL}, {"s", descriptorpb.FieldDescriptorProto_TYPE_STRING},
		{"by", descriptorpb.FieldDescriptorProto_TYPE_BYTES},
	} {
		add(s.name, optional, s.typ, "")
	}
	const (
		enum = descriptorpb.FieldDescriptorProto_TYPE_ENUM
		msg  = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		str  = descriptorpb.FieldDescriptorProto_TYPE_STRING
	)
	add("e", optional, enum, ".querytest.v1.Kind")
	add("ri32", repeated, descriptorpb.FieldDescriptorProto_TYPE_INT32, "")
	add("rs", repeated, str, "")
	add("re", repeated, enum, ".querytest.v1.Kind")
	add("rby", repeated, descriptorpb.FieldDescriptorProto_TYPE_BYTES, "")
	add("rd", repeated, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, "")
	add("nested", optional, msg, ".querytest.v1.Every")
	add("items", repeated, msg, ".querytest.v1.Every")
	var entries []*descriptorpb.DescriptorProto
	mapField := func(name string, key T, value T, valueType string) {
		entry := strings.ToUpper(name[:1]) + name[1:] + "Entry"
		add(name, repeated, msg, ".querytest.v1.Every."+entry)
		v := &descriptorpb.FieldDescriptorProto{Name: proto.String("value"), Number: proto.Int32(2), Label: optional, Type: value.Enum()}
		if valueType != "" {
			v.TypeName = proto.String(valueType)
		}
		entries = append(entries, &descriptorpb.DescriptorProto{
			Name: proto.String(entry),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("key"), Number: proto.Int32(1), Label: optional, Type: key.Enum()},
				v,
			},
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
		})
	}
	mapField("ms", str, str, "")
	mapField("mie", descriptorpb.FieldDescriptorProto_TYPE_INT32, enum, ".querytest.v1.Kind")
	mapField("mbd", descriptorpb.FieldDescriptorProto_TYPE_BOOL, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, "")
	mapField("mts", str, msg, ".google.protobuf.Timestamp")
	mapField("mm", str, msg, ".querytest.v1.Every")
	add("os", optional, str, "").OneofIndex = proto.Int32(0)
	add("oe", optional, enum, ".querytest.v1.Kind").OneofIndex = proto.Int32(0)
	add("om", optional, msg, ".querytest.v1.Every").OneofIndex = proto.Int32(0)
	for _, wkt := range []struct{ name, typ string }{
		{"ts", "Timestamp"}, {"du", "Duration"}, {"wd", "DoubleValue"}, {"wf", "FloatValue"},
		{"wi64", "Int64Value"}, {"wi32", "Int32Value"}, {"wu64", "UInt64Value"}, {"wu32", "UInt32Value"},
		{"wb", "BoolValue"}, {"ws", "StringValue"}, {"wby", "BytesValue"}, {"fm", "FieldMask"},
		{"st", "Struct"}, {"v", "Value"}, {"em", "Empty"}, {"lv", "ListValue"},
	} {
		add(wkt.name, optional, msg, ".google.protobuf."+wkt.typ)
	}
	add("rts", repeated, msg, ".google.protobuf.Timestamp")
	oi := add("oi", optional, descriptorpb.FieldDescriptorProto_TYPE_INT32, "")
	oi.OneofIndex, oi.Proto3Optional = proto.Int32(1), proto.Bool(true)
	add("custom", optional, str, "").JsonName = proto.String("renamed")

	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("querytest/v1/querytest.proto"),
		Package: proto.String("querytest.v1"),
		Syntax:  proto.String("proto3"),
		Dependency: []string{
			"google/protobuf/timestamp.proto", "google/protobuf/duration.proto", "google/protobuf/wrappers.proto",
			"google/protobuf/field_mask.proto", "google/protobuf/struct.proto", "google/protobuf/empty.proto",
		},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Kind"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("KIND_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("KIND_A"), Number: proto.Int32(1)},
				{Name: proto.String("KIND_B"), Number: proto.Int32(2)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name:       proto.String("Every"),
			Field:      fields,
			NestedType: entries,
			OneofDecl:  []*descriptorpb.OneofDescriptorProto{{Name: proto.String("choice")}, {Name: proto.String("_oi")}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	// The only global registration of the tests: grpc-gateway finds enums
	// nowhere else. No other test uses querytest.v1.
	if err := protoregistry.GlobalTypes.RegisterEnum(dynamicpb.NewEnumType(fd.Enums().Get(0))); err != nil {
		panic(err)
	}
	return fd.Messages().Get(0)
})

// queryTestFilter stands for a path parameter bound to nested.s and a
// body bound to om.
var queryTestFilter = utilities.NewDoubleArray([][]string{{"nested", "s"}, {"om"}})

// queryTestMessages are the messages the parsers are compared on: Every,
// and the compiled-in InspectRequest.
func queryTestMessages() []func() proto.Message {
	every := queryTestEvery()
	return []func() proto.Message{
		func() proto.Message { return dynamicpb.NewMessage(every) },
		func() proto.Message { return new(testv1.InspectRequest) },
	}
}

// changedByQueryParser reports whether err is one that queryParser words
// on purpose unlike grpc-gateway.
func changedByQueryParser(err error) bool {
	return err != nil && strings.Contains(err.Error(), "fields cannot be set")
}

// gatewayParse runs grpc-gateway's parser, reporting a panic as such.
func gatewayParse(f func() error) (panicked bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
		}
	}()
	return false, f()
}

// compareQueryParsers fails unless queryParser and grpc-gateway's parser
// accept the same queries into the same messages, and reject the same
// ones; with a single key, with the same words but where queryParser
// means to say more. Then it does the same for every key as a path
// parameter (populateFieldFromPath against runtime.PopulateFieldFromPath).
func compareQueryParsers(t *testing.T, rawQuery string) {
	t.Helper()
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return
	}
	// decodeRequest refuses anything but UTF-8 before the parser runs.
	for key, vs := range values {
		if !utf8.ValidString(key) || slices.ContainsFunc(vs, func(v string) bool { return !utf8.ValidString(v) }) {
			return
		}
	}
	compare := func(what string, newMsg func() proto.Message, ours, theirs func(proto.Message) error, single bool) {
		t.Helper()
		want, got := newMsg(), newMsg()
		panicked, wantErr := gatewayParse(func() error { return theirs(want) })
		gotErr := ours(got) // a panic here fails the test
		if panicked {
			return // grpc-gateway has no verdict to compare with
		}
		switch {
		case (wantErr == nil) != (gotErr == nil):
			t.Fatalf("%s %q: error %v, grpc-gateway's %v", what, rawQuery, gotErr, wantErr)
		case wantErr != nil:
			if single && !changedByQueryParser(gotErr) && gotErr.Error() != wantErr.Error() {
				t.Fatalf("%s %q: error %q, grpc-gateway's %q", what, rawQuery, gotErr, wantErr)
			}
		default:
			if a, b := marshalDeterministic(t, got), marshalDeterministic(t, want); !bytes.Equal(a, b) {
				t.Fatalf("%s %q: message %v, grpc-gateway's %v", what, rawQuery, got, want)
			}
		}
	}
	for _, newMsg := range queryTestMessages() {
		for _, filter := range []*utilities.DoubleArray{utilities.NewDoubleArray(nil), queryTestFilter} {
			compare("query", newMsg,
				func(m proto.Message) error { return queryParser{}.Parse(m, values, filter) },
				func(m proto.Message) error { return (&runtime.DefaultQueryParser{}).Parse(m, values, filter) },
				len(values) == 1)
		}
		for key, vs := range values {
			compare(fmt.Sprintf("path parameter %q", key), newMsg,
				func(m proto.Message) error { return populateFieldFromPath(m, key, vs[0]) },
				func(m proto.Message) error { return runtime.PopulateFieldFromPath(m, key, vs[0]) },
				true)
		}
	}
}

func marshalDeterministic(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %v: %v", m, err)
	}
	return b
}

// queryParserSeeds are queries over every field shape of Every and
// InspectRequest, good and bad.
var queryParserSeeds = []string{
	"d=1.5&f=-2.5e3&i32=-7&i64=-9223372036854775808&u32=4294967295&u64=18446744073709551615",
	"s32=-1&s64=2&fx32=3&fx64=4&sfx32=-5&sfx64=-6&b=true&s=x&by=YWJj",
	"d=NaN&f=Infinity&rd=-Infinity&rd=0x10&d=1_0",
	"f=1e40&i32=2147483648&u32=-1&b=yes&by=%21%21",
	"by=YWJjMTIzIT8kKiYoKSctPUB-&rby=YQ&rby=YWI=&rby=-_-_",
	"e=KIND_A&re=KIND_B&re=1&re=0&oe=2",
	"e=KIND_Z", "e=7", "e=-1", "e=1.0", "e=kind_a", "re=KIND_A&re=nope",
	"ri32=1&ri32=2&rs=a&rs=b&rs=",
	"nested.s=x&nested.nested.i32=3&nested.e=KIND_B&nested.re=KIND_A",
	"items.s=x", "items=x", "nested.items.s=y", "ms.k=v", "mm.k.s=v", "mm[k].s=v",
	"ms[k]=v&ms[k2]=&mie[1]=KIND_A&mie[2]=2&mbd[true]=1.5&mts[a]=2026-01-02T03:04:05Z",
	"ms[k]=v&ms[k]=w", "mie[x]=KIND_A", "mie[1]=KIND_Q", "s[k]=v", "ms=x", "mm[k]=x",
	"os=x&oe=KIND_A", "om.s=x&om.i32=2", "os=x&om.s=y", "oe=KIND_B",
	"ts=2026-01-02T03:04:05.123456789Z&du=1h2m3.5s&wd=1.5&wf=2.5&wi64=-3&wi32=4&wu64=5&wu32=6",
	"wb=false&ws=str&wby=YWJj&fm=a,b.c&st=%7B%22a%22%3A1%7D&v=%5B1%2C%22x%22%5D&em=&rts=2026-01-02T03:04:05Z",
	"em=%7B%7D", "em=x", "lv=%5B%5D", "ts=yesterday", "ts=0000-12-31T23:59:59Z", "du=forever", "fm=",
	"st=%5B%5D", "v=nope", "ts.seconds=5", "wd.value=2", "du.nanos=3",
	"oi=0", "oi=x", "custom=a", "renamed=b", "custom=a&renamed=b",
	"nested.s=x&nested=y", "nested=y", "om=x", "om.s=z",
	"i32=1&i32=2", "i32=", "s=a&s=b", "rs=a&rS=b", "nestED.s=x", "unknown=1&nested.unknown=2",
	"name=a&filter.min_price=3.5&filter.region=eu&tags=x&tags=y&color=COLOR_GREEN&since=2026-01-02T03:04:05Z&big=-9007199254740993&labels[k]=v",
	"color=2&color=COLOR_RED", "color=9", "filter.minPrice=1&cursorPrefix=c", "filter=x", "labels.k=v",
	".=1", "..=1", "[=1", "]=1", "[]=1", "a[]=1", "ms[]=1", "ms[[k]]=1", "ms[k]x=1",
}

// queryParser agrees with grpc-gateway's DefaultQueryParser on every seed,
// for types whose enums are registered (where grpc-gateway works).
func TestQueryParserMatchesGrpcGateway(t *testing.T) {
	t.Parallel()
	for _, q := range queryParserSeeds {
		compareQueryParsers(t, q)
	}
}

// A key through a repeated message field or a map field says that the URL
// cannot set it, not that the field "is not a message".
func TestQueryParserNamesUnsupportedPaths(t *testing.T) {
	t.Parallel()
	every := queryTestEvery()
	for _, tc := range []struct{ query, want string }{
		{"items.s=x", `parameter "items.s": repeated message fields cannot be set from the query string`},
		{"nested.items.e=KIND_A", `parameter "nested.items.e": repeated message fields cannot be set from the query string`},
		{"mm.k.s=v", `parameter "mm.k.s": map fields cannot be set with a dotted path from the query string; use mm[key]=value`},
		{"s.x=1", `invalid path: "s" is not a message`},
	} {
		values, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		err = queryParser{}.Parse(dynamicpb.NewMessage(every), values, utilities.NewDoubleArray(nil))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.query, err, tc.want)
		}
	}
	err := populateFieldFromPath(dynamicpb.NewMessage(every), "items.s", "x")
	if want := `parameter "items.s": repeated message fields cannot be set from the path`; err == nil || err.Error() != want {
		t.Errorf("path parameter items.s: error %v, want %q", err, want)
	}
}

// FuzzQueryParser checks queryParser against grpc-gateway's parser on
// any query (compareQueryParsers): no panic, the same verdict, the same
// message.
func FuzzQueryParser(f *testing.F) {
	for _, q := range queryParserSeeds {
		f.Add(q)
	}
	f.Fuzz(compareQueryParsers)
}
