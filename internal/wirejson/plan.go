package wirejson

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// wktKind says how a message type is rendered when it is not a plain JSON
// object.
type wktKind uint8

const (
	wktNone      wktKind = iota // a regular message (this includes google.protobuf.Empty)
	wktTimestamp                // RFC 3339 string
	wktDuration                 // "1.5s" string
	wktWrapper                  // the bare wrapped value
)

// msgPlan is the precomputed, immutable description of one message type.
// Plans are built once by New and shared by every AppendJSON call.
type msgPlan struct {
	fields []fieldPlan // in declaration order, which is protojson's output order

	// Field lookup by number: dense[num]-1 is the field index when num is
	// small, sparse otherwise.
	dense  []uint16
	sparse map[protowire.Number]int32

	ext      protoreflect.FieldRanges // extension ranges, nil when there are none
	nOneofs  int                      // non-synthetic oneofs, each gets a state slot after the fields
	required []int32                  // indexes of proto2 required fields

	// mapEntry: the type is a map entry, f1 is its key field.
	mapEntry bool

	wkt    wktKind
	f1, f2 int32 // field indexes of numbers 1 and 2, for well-known types and map entries

	// bad: AppendJSON gives up whenever a value of this type has to be
	// printed (Any, Struct, Value, ListValue, FieldMask, MessageSet, ...).
	// A bad type's fields are still planned so that a value that is
	// dropped (an overwritten oneof member, ...) can be validated, except for
	// opaque types (MessageSet), which cannot even be validated.
	bad, opaque bool
	// canOK: some value of this type can be printed (bad types and types
	// whose required fields can never be satisfied cannot).
	canOK bool
}

// fieldPlan is the precomputed description of one field.
type fieldPlan struct {
	name     []byte // `"jsonName":`, already escaped
	kind     protoreflect.Kind
	wt       protowire.Type // wire type of one (unpacked) element
	list     bool
	isMap    bool
	presence bool // explicit presence: printed even when zero
	packable bool // repeated numeric: the packed form (BytesType) is accepted too
	// check: an overwritten occurrence still has to be validated, because
	// proto.Unmarshal rejects it (invalid UTF-8) or treats it specially
	// (a closed enum's unknown number).
	check bool
	bad   bool   // any occurrence makes AppendJSON give up (groups, weak fields, ...)
	mask  uint64 // a raw value v is the zero value iff v&mask == 0
	oneof int32  // state slot of the containing oneof relative to len(fields), or -1

	keyIdx, valIdx int32  // maps: indexes of the key and value fields in msg
	defRaw         uint64 // raw wire value of the default, for absent map values
	enum           *enumPlan
	msg            *msgPlan // message kinds: the message; maps: the entry type
}

// enumPlan maps enum numbers to their JSON strings.
type enumPlan struct {
	null   bool // google.protobuf.NullValue: always printed as null
	closed bool // an unknown number is not stored in the field by all decoders
	min    int32
	dense  [][]byte // dense[n-min] is `"NAME"`, nil for an unknown number
	sparse map[int32][]byte
}

// lookup returns the field index of num, or -1.
func (p *msgPlan) lookup(num uint64) int {
	if num < uint64(len(p.dense)) {
		return int(p.dense[num]) - 1
	}
	if p.sparse != nil {
		if i, ok := p.sparse[protowire.Number(num)]; ok {
			return int(i)
		}
	}
	return -1
}

// builder builds the plans of all message types reachable from a root.
// Building everything up front keeps the plans immutable afterwards, so
// AppendJSON needs no synchronization; recursive types are handled by
// registering a plan before filling it in.
type builder struct {
	msgs  map[protoreflect.MessageDescriptor]*msgPlan
	enums map[protoreflect.EnumDescriptor]*enumPlan
}

func buildPlans(md protoreflect.MessageDescriptor) *msgPlan {
	b := &builder{
		msgs:  map[protoreflect.MessageDescriptor]*msgPlan{},
		enums: map[protoreflect.EnumDescriptor]*enumPlan{},
	}
	root := b.message(md)
	b.computeCanOK()
	return root
}

// computeCanOK marks the types that have at least one printable value: the
// least fixed point of "not bad and every required message field's type is
// printable". Types that require themselves (directly or not) never are.
func (b *builder) computeCanOK() {
	for changed := true; changed; {
		changed = false
		for _, p := range b.msgs {
			if p.canOK || p.bad {
				continue
			}
			ok := true
			for _, ri := range p.required {
				f := &p.fields[ri]
				if f.bad || (f.msg != nil && !f.msg.canOK) {
					ok = false
					break
				}
			}
			if ok {
				p.canOK = true
				changed = true
			}
		}
	}
}

const googleProtobuf = "google.protobuf"

// wrapperKinds lists the wrapper types and the kind of their "value" field.
var wrapperKinds = map[protoreflect.Name]protoreflect.Kind{
	"BoolValue":   protoreflect.BoolKind,
	"Int32Value":  protoreflect.Int32Kind,
	"Int64Value":  protoreflect.Int64Kind,
	"UInt32Value": protoreflect.Uint32Kind,
	"UInt64Value": protoreflect.Uint64Kind,
	"FloatValue":  protoreflect.FloatKind,
	"DoubleValue": protoreflect.DoubleKind,
	"StringValue": protoreflect.StringKind,
	"BytesValue":  protoreflect.BytesKind,
}

// isMessageSet reports a proto1 MessageSet, which protojson refuses.
func isMessageSet(md protoreflect.MessageDescriptor) bool {
	if x, ok := md.(interface{ IsMessageSet() bool }); ok && x.IsMessageSet() {
		return true
	}
	opts, ok := md.Options().(*descriptorpb.MessageOptions)
	return ok && opts.GetMessageSetWireFormat()
}

func (b *builder) message(md protoreflect.MessageDescriptor) *msgPlan {
	if p := b.msgs[md]; p != nil {
		return p
	}
	p := &msgPlan{f1: -1, f2: -1}
	b.msgs[md] = p
	p.mapEntry = md.IsMapEntry()
	if isMessageSet(md) {
		p.bad, p.opaque = true, true
		return p
	}
	var wantKind1, wantKind2 protoreflect.Kind // expected kinds of fields 1 and 2 for WKTs
	if md.FullName().Parent() == googleProtobuf {
		switch name := md.Name(); name {
		case "Timestamp", "Duration":
			p.wkt = wktTimestamp
			if name == "Duration" {
				p.wkt = wktDuration
			}
			wantKind1, wantKind2 = protoreflect.Int64Kind, protoreflect.Int32Kind
		case "Any", "Struct", "Value", "ListValue", "FieldMask":
			// Special JSON forms not implemented here: fall back.
			p.bad = true
		case "Empty":
			// protojson prints Empty as a regular (empty) message.
		default:
			if k, ok := wrapperKinds[name]; ok {
				p.wkt = wktWrapper
				wantKind1 = k
			}
		}
	}

	fds := md.Fields()
	p.fields = make([]fieldPlan, fds.Len())
	oneofSlot := map[protoreflect.OneofDescriptor]int32{}
	for i := 0; i < md.Oneofs().Len(); i++ {
		if od := md.Oneofs().Get(i); !od.IsSynthetic() {
			oneofSlot[od] = int32(p.nOneofs)
			p.nOneofs++
		}
	}
	maxNum := protowire.Number(0)
	for i := range p.fields {
		fd := fds.Get(i)
		slot := int32(-1)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			slot = oneofSlot[od]
		}
		b.field(&p.fields[i], fd, slot)
		if fd.Cardinality() == protoreflect.Required {
			p.required = append(p.required, int32(i))
		}
		maxNum = max(maxNum, fd.Number())
	}
	if len(p.fields) < 1<<16-1 && int(maxNum) < 1024+8*len(p.fields) {
		p.dense = make([]uint16, maxNum+1)
		for i := range p.fields {
			p.dense[fds.Get(i).Number()] = uint16(i + 1)
		}
	} else {
		p.sparse = make(map[protowire.Number]int32, len(p.fields))
		for i := range p.fields {
			p.sparse[fds.Get(i).Number()] = int32(i)
		}
	}
	if md.ExtensionRanges().Len() > 0 {
		p.ext = md.ExtensionRanges()
	}

	if p.mapEntry {
		p.f1 = int32(p.lookup(1))
	}
	if p.wkt != wktNone {
		p.f1, p.f2 = int32(p.lookup(1)), int32(p.lookup(2))
		if !wktFieldOK(p, p.f1, wantKind1) || (wantKind2 != 0 && !wktFieldOK(p, p.f2, wantKind2)) {
			p.bad = true // a look-alike with an unexpected shape: let protojson deal with it
		}
	}
	return p
}

func wktFieldOK(p *msgPlan, i int32, want protoreflect.Kind) bool {
	if i < 0 {
		return false
	}
	f := &p.fields[i]
	return f.kind == want && !f.list && !f.isMap && !f.bad
}

func (b *builder) field(f *fieldPlan, fd protoreflect.FieldDescriptor, oneofSlot int32) {
	f.kind = fd.Kind()
	f.list = fd.IsList()
	f.isMap = fd.IsMap()
	f.presence = fd.HasPresence()
	f.oneof = oneofSlot
	f.keyIdx, f.valIdx = -1, -1
	f.mask = ^uint64(0)

	name, ok := appendString(nil, []byte(fd.JSONName()))
	f.name = append(name, ':')
	f.bad = !ok || fd.IsExtension()

	f.wt = wireType(f.kind)
	switch f.kind {
	case protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
		protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		f.mask = math.MaxUint32 // proto.Unmarshal truncates these to 32 bits
	}
	if f.wt == protowire.StartGroupType {
		f.bad = true // groups and delimited messages
	}
	f.packable = f.list && f.wt != protowire.BytesType && f.wt != protowire.StartGroupType

	switch f.kind {
	case protoreflect.StringKind:
		f.check = true
	case protoreflect.EnumKind:
		f.enum = b.enum(fd.Enum())
		f.check = f.enum.closed
		if !f.list {
			f.defRaw = uint64(int64(fd.Default().Enum())) // lists have no default
		}
	case protoreflect.MessageKind:
		f.msg = b.message(fd.Message())
		if f.isMap {
			entry := fd.Message().Fields()
			f.keyIdx = int32(entry.ByNumber(1).Index())
			f.valIdx = int32(entry.ByNumber(2).Index())
		}
	}
}

// wireType returns the wire type of one unpacked value of kind k;
// StartGroupType stands for groups and anything unknown.
func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind,
		protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return protowire.VarintType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	}
	return protowire.StartGroupType
}

func (b *builder) enum(ed protoreflect.EnumDescriptor) *enumPlan {
	if ep := b.enums[ed]; ep != nil {
		return ep
	}
	ep := &enumPlan{
		null:   ed.FullName() == googleProtobuf+".NullValue",
		closed: ed.IsClosed(),
	}
	b.enums[ed] = ep
	vals := ed.Values()
	if vals.Len() == 0 {
		return ep
	}
	lo, hi := int64(vals.Get(0).Number()), int64(vals.Get(0).Number())
	for i := 1; i < vals.Len(); i++ {
		n := int64(vals.Get(i).Number())
		lo, hi = min(lo, n), max(hi, n)
	}
	// With aliases several names share a number; protojson prints the one
	// ByNumber returns, so ask it rather than guessing.
	quoted := func(n protoreflect.EnumNumber) []byte {
		s, _ := appendString(nil, []byte(vals.ByNumber(n).Name()))
		return s
	}
	if hi-lo < 1024 {
		ep.min = int32(lo)
		ep.dense = make([][]byte, hi-lo+1)
		for i := 0; i < vals.Len(); i++ {
			n := vals.Get(i).Number()
			ep.dense[int64(n)-lo] = quoted(n)
		}
	} else {
		ep.sparse = make(map[int32][]byte, vals.Len())
		for i := 0; i < vals.Len(); i++ {
			n := vals.Get(i).Number()
			ep.sparse[int32(n)] = quoted(n)
		}
	}
	return ep
}

// name returns the JSON string of number n, or nil when n is unknown.
func (ep *enumPlan) name(n int32) []byte {
	if ep.dense != nil {
		if i := int64(n) - int64(ep.min); i >= 0 && i < int64(len(ep.dense)) {
			return ep.dense[i]
		}
		return nil
	}
	return ep.sparse[n]
}
