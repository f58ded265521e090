package wirejson

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// Registered in protoregistry.GlobalFiles for the test files' imports.
	_ "google.golang.org/protobuf/types/known/anypb"
	_ "google.golang.org/protobuf/types/known/durationpb"
	_ "google.golang.org/protobuf/types/known/emptypb"
	_ "google.golang.org/protobuf/types/known/fieldmaskpb"
	_ "google.golang.org/protobuf/types/known/structpb"
	_ "google.golang.org/protobuf/types/known/timestamppb"
	_ "google.golang.org/protobuf/types/known/wrapperspb"
)

// The test schema is built in Go so that the tests need no protoc. It has
// a proto3 file (every kind, optional, packed and unpacked repeated, oneof,
// recursion, maps of every key kind, well-known types, fields declared out
// of number order, an escaped json_name, huge field numbers), a proto2 file
// (defaults, closed enums, required, groups, extension ranges) and the
// benchmark messages.

type fdp = descriptorpb.FieldDescriptorProto

const (
	tInt32    = descriptorpb.FieldDescriptorProto_TYPE_INT32
	tInt64    = descriptorpb.FieldDescriptorProto_TYPE_INT64
	tUint32   = descriptorpb.FieldDescriptorProto_TYPE_UINT32
	tUint64   = descriptorpb.FieldDescriptorProto_TYPE_UINT64
	tSint32   = descriptorpb.FieldDescriptorProto_TYPE_SINT32
	tSint64   = descriptorpb.FieldDescriptorProto_TYPE_SINT64
	tFixed32  = descriptorpb.FieldDescriptorProto_TYPE_FIXED32
	tFixed64  = descriptorpb.FieldDescriptorProto_TYPE_FIXED64
	tSfixed32 = descriptorpb.FieldDescriptorProto_TYPE_SFIXED32
	tSfixed64 = descriptorpb.FieldDescriptorProto_TYPE_SFIXED64
	tFloat    = descriptorpb.FieldDescriptorProto_TYPE_FLOAT
	tDouble   = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
	tBool     = descriptorpb.FieldDescriptorProto_TYPE_BOOL
	tString   = descriptorpb.FieldDescriptorProto_TYPE_STRING
	tBytes    = descriptorpb.FieldDescriptorProto_TYPE_BYTES
	tEnum     = descriptorpb.FieldDescriptorProto_TYPE_ENUM
	tMessage  = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	tGroup    = descriptorpb.FieldDescriptorProto_TYPE_GROUP

	lOptional = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	lRepeated = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	lRequired = descriptorpb.FieldDescriptorProto_LABEL_REQUIRED
)

// scalarKinds is every non-message type with a short name suffix; enum
// fields get their type name from the file.
var scalarKinds = []struct {
	suffix string
	typ    descriptorpb.FieldDescriptorProto_Type
}{
	{"i32", tInt32}, {"i64", tInt64}, {"u32", tUint32}, {"u64", tUint64},
	{"s32", tSint32}, {"s64", tSint64}, {"f32", tFixed32}, {"f64", tFixed64},
	{"sf32", tSfixed32}, {"sf64", tSfixed64}, {"fl", tFloat}, {"db", tDouble},
	{"b", tBool}, {"s", tString}, {"by", tBytes}, {"e", tEnum},
}

func field(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string, opts ...func(*fdp)) *fdp {
	f := &fdp{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: lOptional.Enum()}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

func repeated(f *fdp) { f.Label = lRepeated.Enum() }
func required(f *fdp) { f.Label = lRequired.Enum() }
func unpacked(f *fdp) { f.Options = &descriptorpb.FieldOptions{Packed: proto.Bool(false)} }
func packed(f *fdp)   { f.Options = &descriptorpb.FieldOptions{Packed: proto.Bool(true)} }
func inOneof(i int32) func(*fdp) {
	return func(f *fdp) { f.OneofIndex = proto.Int32(i) }
}
func withDefault(s string) func(*fdp) { return func(f *fdp) { f.DefaultValue = proto.String(s) } }
func jsonName(s string) func(*fdp)    { return func(f *fdp) { f.JsonName = proto.String(s) } }

// addMap adds map field name = num to m with a generated entry type.
func addMap(m *descriptorpb.DescriptorProto, pkg, name string, num int32, kt descriptorpb.FieldDescriptorProto_Type, vt descriptorpb.FieldDescriptorProto_Type, vtn string) {
	entry := mapEntryName(name)
	m.NestedType = append(m.NestedType, &descriptorpb.DescriptorProto{
		Name:    proto.String(entry),
		Field:   []*fdp{field("key", 1, kt, ""), field("value", 2, vt, vtn)},
		Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
	})
	m.Field = append(m.Field, field(name, num, tMessage, "."+pkg+"."+m.GetName()+"."+entry, repeated))
}

// mapEntryName is protoc's entry type name: the field name in CamelCase
// followed by "Entry".
func mapEntryName(field string) string {
	var b []byte
	upper := true
	for _, c := range []byte(field) {
		switch {
		case c == '_':
			upper = true
		case upper && 'a' <= c && c <= 'z':
			b = append(b, c-'a'+'A')
			upper = false
		default:
			b = append(b, c)
			upper = false
		}
	}
	return string(b) + "Entry"
}

// addProto3Optional adds a proto3 optional field with its synthetic oneof.
func addProto3Optional(m *descriptorpb.DescriptorProto, f *fdp) {
	f.Proto3Optional = proto.Bool(true)
	f.OneofIndex = proto.Int32(int32(len(m.OneofDecl)))
	m.OneofDecl = append(m.OneofDecl, &descriptorpb.OneofDescriptorProto{Name: proto.String("_" + f.GetName())})
	m.Field = append(m.Field, f)
}

func enumType(name string, allowAlias bool, vals ...any) *descriptorpb.EnumDescriptorProto {
	e := &descriptorpb.EnumDescriptorProto{Name: proto.String(name)}
	if allowAlias {
		e.Options = &descriptorpb.EnumOptions{AllowAlias: proto.Bool(true)}
	}
	for i := 0; i < len(vals); i += 2 {
		e.Value = append(e.Value, &descriptorpb.EnumValueDescriptorProto{
			Name: proto.String(vals[i].(string)), Number: proto.Int32(int32(vals[i+1].(int))),
		})
	}
	return e
}

func proto3File() *descriptorpb.FileDescriptorProto {
	const pkg = "wjtest.v3"
	color := "." + pkg + ".Color"
	inner := "." + pkg + ".Inner"
	ts := ".google.protobuf.Timestamp"

	innerMsg := &descriptorpb.DescriptorProto{Name: proto.String("Inner"), Field: []*fdp{
		field("a", 1, tInt32, ""),
		field("b", 2, tString, ""),
		field("child", 3, tMessage, inner),
		field("kids", 4, tMessage, inner, repeated),
		field("ts", 6, tMessage, ts),
	}}
	addMap(innerMsg, pkg, "named", 5, tString, tMessage, inner)

	all := &descriptorpb.DescriptorProto{Name: proto.String("All")}
	enumName := func(k descriptorpb.FieldDescriptorProto_Type) string {
		if k == tEnum {
			return color
		}
		return ""
	}
	// Implicit-presence singulars, declared in reverse number order so that
	// declaration order (the JSON order) differs from wire order.
	for i := len(scalarKinds) - 1; i >= 0; i-- {
		k := scalarKinds[i]
		all.Field = append(all.Field, field("v_"+k.suffix, int32(1+i), k.typ, enumName(k.typ)))
	}
	all.OneofDecl = append(all.OneofDecl, &descriptorpb.OneofDescriptorProto{Name: proto.String("choice")})
	for i, k := range scalarKinds {
		all.Field = append(all.Field, field("r_"+k.suffix, int32(41+i), k.typ, enumName(k.typ), repeated))
		if k.typ != tString && k.typ != tBytes {
			all.Field = append(all.Field, field("u_"+k.suffix, int32(61+i), k.typ, enumName(k.typ), repeated, unpacked))
		}
	}
	all.Field = append(all.Field,
		field("inner", 80, tMessage, inner),
		field("inners", 81, tMessage, inner, repeated),
		field("c_str", 90, tString, "", inOneof(0)),
		field("c_int", 91, tInt64, "", inOneof(0)),
		field("c_msg", 92, tMessage, inner, inOneof(0)),
		field("c_enum", 93, tEnum, color, inOneof(0)),
		field("c_bytes", 94, tBytes, "", inOneof(0)),
		field("c_ts", 95, tMessage, ts, inOneof(0)),
		field("c_dbl", 96, tDouble, "", inOneof(0)),
	)
	addMap(all, pkg, "m_str_i32", 100, tString, tInt32, "")
	addMap(all, pkg, "m_i32_str", 101, tInt32, tString, "")
	addMap(all, pkg, "m_i64_inner", 102, tInt64, tMessage, inner)
	addMap(all, pkg, "m_bool_bool", 103, tBool, tBool, "")
	addMap(all, pkg, "m_u32_color", 104, tUint32, tEnum, color)
	addMap(all, pkg, "m_s64_bytes", 105, tSint64, tBytes, "")
	addMap(all, pkg, "m_f32_db", 106, tFixed32, tDouble, "")
	addMap(all, pkg, "m_sf64_fl", 107, tSfixed64, tFloat, "")
	addMap(all, pkg, "m_u64_ts", 108, tUint64, tMessage, ts)
	addMap(all, pkg, "m_s32_u64", 109, tSint32, tUint64, "")
	addMap(all, pkg, "m_f64_sf32", 110, tFixed64, tSfixed32, "")
	addMap(all, pkg, "m_sf32_s64", 111, tSfixed32, tSint64, "")
	addMap(all, pkg, "m_str_str", 112, tString, tString, "")
	addMap(all, pkg, "m_str_wrap", 113, tString, tMessage, ".google.protobuf.Int64Value")
	addMap(all, pkg, "m_str_struct", 114, tString, tMessage, ".google.protobuf.Struct")
	wrappers := []string{"BoolValue", "Int32Value", "Int64Value", "UInt32Value", "UInt64Value", "FloatValue", "DoubleValue", "StringValue", "BytesValue"}
	all.Field = append(all.Field,
		field("ts", 120, tMessage, ts),
		field("dur", 121, tMessage, ".google.protobuf.Duration"),
	)
	for i, w := range wrappers {
		all.Field = append(all.Field, field("w_"+w, int32(122+i), tMessage, ".google.protobuf."+w))
	}
	all.Field = append(all.Field,
		field("tss", 131, tMessage, ts, repeated),
		field("durs", 132, tMessage, ".google.protobuf.Duration", repeated),
		field("nv", 133, tEnum, ".google.protobuf.NullValue"),
		field("nvs", 134, tEnum, ".google.protobuf.NullValue", repeated),
		field("empty", 135, tMessage, ".google.protobuf.Empty"),
		field("st", 140, tMessage, ".google.protobuf.Struct"),
		field("any", 141, tMessage, ".google.protobuf.Any"),
		field("val", 142, tMessage, ".google.protobuf.Value"),
		field("lv", 143, tMessage, ".google.protobuf.ListValue"),
		field("fm", 144, tMessage, ".google.protobuf.FieldMask"),
		field("odd", 150, tInt32, "", jsonName("odd\"Na\\me\u2028<&>\x01")),
		field("far", 536870911, tInt32, ""),
		field("far_s", 100000, tString, ""),
	)
	// Synthetic oneofs must come after the real one.
	for i, k := range scalarKinds {
		addProto3Optional(all, field("o_"+k.suffix, int32(21+i), k.typ, enumName(k.typ)))
	}

	bench := []*descriptorpb.DescriptorProto{
		{Name: proto.String("Event"), Field: []*fdp{
			field("text", 1, tString, ""),
			field("payload", 2, tBytes, ""),
			field("seq", 3, tUint64, ""),
		}},
		{Name: proto.String("Tick"), Field: []*fdp{
			field("at", 1, tMessage, ts),
			field("value", 2, tDouble, ""),
			field("name", 3, tString, ""),
			field("seq", 4, tUint64, ""),
		}},
	}

	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("wjtest/v3.proto"),
		Package: proto.String(pkg),
		Syntax:  proto.String("proto3"),
		Dependency: []string{
			"google/protobuf/timestamp.proto", "google/protobuf/duration.proto",
			"google/protobuf/wrappers.proto", "google/protobuf/struct.proto",
			"google/protobuf/any.proto", "google/protobuf/empty.proto",
			"google/protobuf/field_mask.proto",
		},
		EnumType: []*descriptorpb.EnumDescriptorProto{
			enumType("Color", true, "COLOR_UNSPECIFIED", 0, "RED", 1, "GREEN", 2, "NEG", -3, "BIG", 1000, "RED_ALIAS", 1),
		},
		MessageType: append([]*descriptorpb.DescriptorProto{innerMsg, all}, bench...),
	}
}

func proto2File() *descriptorpb.FileDescriptorProto {
	const pkg = "wjtest.v2"
	closed := "." + pkg + ".Closed"
	p2 := "." + pkg + ".P2"
	req := "." + pkg + ".Req"

	m := &descriptorpb.DescriptorProto{Name: proto.String("P2")}
	typeName := func(k descriptorpb.FieldDescriptorProto_Type) string {
		if k == tEnum {
			return closed
		}
		return ""
	}
	defaults := map[string]string{"i32": "-7", "s": "hi", "e": "C_TWO", "db": "inf", "by": "a\\000b", "b": "true", "u64": "18446744073709551615"}
	for i, k := range scalarKinds {
		var opts []func(*fdp)
		if d, ok := defaults[k.suffix]; ok {
			opts = append(opts, withDefault(d))
		}
		m.Field = append(m.Field, field("v_"+k.suffix, int32(1+i), k.typ, typeName(k.typ), opts...))
		m.Field = append(m.Field, field("r_"+k.suffix, int32(21+i), k.typ, typeName(k.typ), repeated))
		if k.typ != tString && k.typ != tBytes {
			m.Field = append(m.Field, field("p_"+k.suffix, int32(41+i), k.typ, typeName(k.typ), repeated, packed))
		}
	}
	m.OneofDecl = []*descriptorpb.OneofDescriptorProto{{Name: proto.String("o")}}
	m.Field = append(m.Field,
		field("child", 60, tMessage, p2),
		field("kids", 61, tMessage, p2, repeated),
		field("req", 62, tMessage, req),
		field("reqs", 63, tMessage, req, repeated),
		field("oi", 70, tInt32, "", inOneof(0)),
		field("os", 71, tString, "", inOneof(0)),
		field("om", 72, tMessage, p2, inOneof(0)),
		field("g", 80, tGroup, p2+".G"),
		field("v_odd", 17, tEnum, "."+pkg+".Odd"), // default: its first value, 5
	)
	m.NestedType = append(m.NestedType, &descriptorpb.DescriptorProto{
		Name: proto.String("G"), Field: []*fdp{field("gx", 81, tInt32, "")},
	})
	addMap(m, pkg, "cmap", 64, tString, tEnum, closed)
	addMap(m, pkg, "pmap", 65, tInt32, tMessage, p2)
	m.ExtensionRange = []*descriptorpb.DescriptorProto_ExtensionRange{{Start: proto.Int32(1000), End: proto.Int32(2000)}}

	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("wjtest/v2.proto"),
		Package: proto.String(pkg),
		Syntax:  proto.String("proto2"),
		EnumType: []*descriptorpb.EnumDescriptorProto{
			enumType("Closed", false, "C_ZERO", 0, "C_ONE", 1, "C_TWO", 2, "C_NEG", -1),
			enumType("Odd", false, "O_FIVE", 5, "O_SIX", 6),
		},
		MessageType: []*descriptorpb.DescriptorProto{
			m,
			{Name: proto.String("Req"), Field: []*fdp{
				field("x", 1, tInt32, "", required),
				field("y", 2, tString, ""),
				field("next", 3, tMessage, req),
			}},
			// Requires itself: no finite value exists, so it is never supported.
			{Name: proto.String("SelfReq"), Field: []*fdp{
				field("me", 1, tMessage, "."+pkg+".SelfReq", required),
			}},
		},
		Extension: []*fdp{func() *fdp {
			f := field("ext_i", 1000, tInt32, "")
			f.Extendee = proto.String(p2)
			return f
		}()},
	}
}

func features(fs *descriptorpb.FeatureSet) func(*fdp) {
	return func(f *fdp) { f.Options = &descriptorpb.FieldOptions{Features: fs} }
}

// editionsFile exercises features: implicit presence, no UTF-8 validation,
// closed enums, delimited (group-encoded) messages, expanded repeated fields.
func editionsFile() *descriptorpb.FileDescriptorProto {
	const pkg = "wjtest.ed"
	ed := "." + pkg + ".Ed"
	closedEnum := enumType("ClosedE", false, "CLOSED_ZERO", 0, "CLOSED_ONE", 1)
	closedEnum.Options = &descriptorpb.EnumOptions{Features: &descriptorpb.FeatureSet{
		EnumType: descriptorpb.FeatureSet_CLOSED.Enum(),
	}}
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("wjtest/ed.proto"),
		Package: proto.String(pkg),
		Syntax:  proto.String("editions"),
		Edition: descriptorpb.Edition_EDITION_2023.Enum(),
		EnumType: []*descriptorpb.EnumDescriptorProto{
			enumType("OpenE", false, "OPEN_ZERO", 0, "OPEN_ONE", 1), closedEnum,
		},
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Ed"), Field: []*fdp{
			field("implicit_i", 1, tInt32, "", features(&descriptorpb.FeatureSet{FieldPresence: descriptorpb.FeatureSet_IMPLICIT.Enum()})),
			field("explicit_i", 2, tInt32, ""),
			field("no_utf8", 3, tString, "", features(&descriptorpb.FeatureSet{Utf8Validation: descriptorpb.FeatureSet_NONE.Enum()})),
			field("s", 4, tString, ""),
			field("ce", 5, tEnum, "."+pkg+".ClosedE"),
			field("oe", 6, tEnum, "."+pkg+".OpenE"),
			field("delimited", 7, tMessage, ed, features(&descriptorpb.FeatureSet{MessageEncoding: descriptorpb.FeatureSet_DELIMITED.Enum()})),
			field("packed_r", 8, tInt32, "", repeated),
			field("expanded_r", 9, tInt32, "", repeated, features(&descriptorpb.FeatureSet{RepeatedFieldEncoding: descriptorpb.FeatureSet_EXPANDED.Enum()})),
			field("kid", 10, tMessage, ed),
			field("req", 11, tInt64, "", features(&descriptorpb.FeatureSet{FieldPresence: descriptorpb.FeatureSet_LEGACY_REQUIRED.Enum()})),
		}}},
	}
}

// testTypes holds the built test schema.
type testTypes struct {
	all, inner, p2, req, selfReq, ed, event, tick protoreflect.MessageDescriptor
}

var (
	typesOnce sync.Once
	types     testTypes
)

func schema() testTypes {
	typesOnce.Do(func() {
		files := new(protoregistry.Files)
		for _, fp := range []*descriptorpb.FileDescriptorProto{proto3File(), proto2File(), editionsFile()} {
			fd, err := protodesc.NewFile(fp, resolverChain{files, protoregistry.GlobalFiles})
			if err != nil {
				panic(err)
			}
			if err := files.RegisterFile(fd); err != nil {
				panic(err)
			}
		}
		find := func(name protoreflect.FullName) protoreflect.MessageDescriptor {
			d, err := files.FindDescriptorByName(name)
			if err != nil {
				panic(err)
			}
			return d.(protoreflect.MessageDescriptor)
		}
		types = testTypes{
			all:     find("wjtest.v3.All"),
			inner:   find("wjtest.v3.Inner"),
			p2:      find("wjtest.v2.P2"),
			req:     find("wjtest.v2.Req"),
			selfReq: find("wjtest.v2.SelfReq"),
			ed:      find("wjtest.ed.Ed"),
			event:   find("wjtest.v3.Event"),
			tick:    find("wjtest.v3.Tick"),
		}
	})
	return types
}

// resolverChain resolves the test files' imports from the local files first.
type resolverChain struct {
	local, global *protoregistry.Files
}

func (r resolverChain) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.local.FindFileByPath(p); err == nil {
		return fd, nil
	}
	return r.global.FindFileByPath(p)
}

func (r resolverChain) FindDescriptorByName(n protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.local.FindDescriptorByName(n); err == nil {
		return d, nil
	}
	return r.global.FindDescriptorByName(n)
}
