package wirejson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// outcome of one differential check.
type outcome int

const (
	hit      outcome = iota // AppendJSON ok and equal to protojson
	fellBack                // AppendJSON declined, protojson succeeded
	rejected                // proto.Unmarshal or protojson failed, AppendJSON declined
)

// oracle decodes wire with proto.Unmarshal into newMsg() and prints it with
// protojson. It returns the compacted JSON, or an error from either step.
func oracle(wire []byte, m proto.Message) ([]byte, error) {
	if err := unmarshal(wire, m); err != nil {
		return nil, err
	}
	j, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	return compact(j), nil
}

// unmarshal is proto.Unmarshal, turning a panic into an error: proto.Unmarshal
// of dynamic messages panics on some map entries (a mistyped key after a
// valid one), which AppendJSON must decline.
func unmarshal(wire []byte, m proto.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return proto.Unmarshal(wire, m)
}

func compact(j []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, j); err != nil {
		return append([]byte("INVALID JSON: "), j...)
	}
	return buf.Bytes()
}

// checkWire is the differential oracle: AppendJSON must either decline or
// print exactly what protojson prints for proto.Unmarshal(wire), and must
// decline whenever that fails. extra are further message types of md (for
// example generated ones, which take proto's fast unmarshal path) that must
// agree too.
func checkWire(t testing.TB, enc *Encoder, md protoreflect.MessageDescriptor, wire []byte, extra ...func() proto.Message) outcome {
	t.Helper()
	const prefix = "[prefix]"
	got, ok := enc.AppendJSON([]byte(prefix), wire)
	if !bytes.HasPrefix(got, []byte(prefix)) {
		t.Fatalf("AppendJSON clobbered dst: %q", got)
	}
	got = got[len(prefix):]

	want, err := oracle(wire, dynamicpb.NewMessage(md))
	for _, newMsg := range extra {
		w, e := oracle(wire, newMsg())
		switch {
		case (e == nil) != (err == nil):
			// The decoders disagree: the only right answer is to decline.
			if ok {
				t.Fatalf("%v: decoders disagree (dynamic: %v, generated: %v) but AppendJSON is ok: %s\nwire %x", md.FullName(), err, e, got, wire)
			}
			return rejected
		case e == nil && !bytes.Equal(w, want):
			if ok {
				t.Fatalf("%v: decoders disagree but AppendJSON is ok:\ndynamic   %s\ngenerated %s\nwire %x", md.FullName(), want, w, wire)
			}
			return fellBack
		}
	}
	if err != nil {
		if ok {
			t.Fatalf("%v: AppendJSON ok for input protojson/proto.Unmarshal reject (%v):\ngot %s\nwire %x", md.FullName(), err, got, wire)
		}
		return rejected
	}
	if !ok {
		return fellBack
	}
	if c := compact(got); !bytes.Equal(c, want) {
		t.Fatalf("%v: mismatch\nwant %s\ngot  %s\nwire %x", md.FullName(), want, c, wire)
	}
	return hit
}

// gen builds random messages and random (but mostly valid) wire shapes.
type gen struct {
	r *rand.Rand
	// fallbacks: also populate fields whose values always make AppendJSON
	// decline (Any, Struct, groups, ...) and invalid values.
	fallbacks bool
	// corrupt: sometimes damage the wire beyond repair.
	corrupt bool
}

// declines reports fields whose presence makes AppendJSON decline by design.
func declines(fd protoreflect.FieldDescriptor) bool {
	if fd.Kind() == protoreflect.GroupKind {
		return true
	}
	md := fd.Message()
	if fd.IsMap() {
		md = fd.MapValue().Message()
	}
	if md == nil {
		return false
	}
	switch md.FullName() {
	case "google.protobuf.Any", "google.protobuf.Struct", "google.protobuf.Value",
		"google.protobuf.ListValue", "google.protobuf.FieldMask":
		return true
	}
	return false
}

func (g *gen) message(m protoreflect.Message, depth int) {
	md := m.Descriptor()
	fds := md.Fields()
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		g.timeLike(m, minTimestampSeconds, maxTimestampSeconds, false)
		return
	case "google.protobuf.Duration":
		g.timeLike(m, -maxDurationSeconds, maxDurationSeconds, true)
		return
	}
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		// Required fields are always set, except sometimes in fallback mode.
		need := fd.Cardinality() == protoreflect.Required && (!g.fallbacks || g.r.Intn(10) != 0)
		if !need && (g.r.Intn(3) != 0 || (!g.fallbacks && declines(fd))) {
			continue
		}
		if fd.Message() != nil && depth >= 4 && !need {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for n := g.r.Intn(5); n > 0; n-- {
				k := g.scalar(fd.MapKey()).MapKey()
				if vd := fd.MapValue(); vd.Message() != nil {
					v := mp.NewValue()
					g.message(v.Message(), depth+1)
					mp.Set(k, v)
				} else {
					mp.Set(k, g.scalar(vd))
				}
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for n := g.r.Intn(5); n > 0; n-- {
				if fd.Message() != nil {
					e := l.NewElement()
					g.message(e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(g.scalar(fd))
				}
			}
		case fd.Message() != nil:
			g.message(m.Mutable(fd).Message(), depth+1)
		default:
			m.Set(fd, g.scalar(fd))
		}
	}
}

// timeLike fills a Timestamp or Duration, mostly in range.
func (g *gen) timeLike(m protoreflect.Message, lo, hi int64, signed bool) {
	fds := m.Descriptor().Fields()
	var secs int64
	var nanos int32
	// Out-of-range values (which protojson rejects) only in fallback mode.
	bad := 0
	if g.fallbacks {
		bad = 2
	}
	switch g.r.Intn(8) {
	case 0:
		secs = []int64{lo, hi, 0, -1, 1, lo - 1, hi + 1}[g.r.Intn(5+bad)]
	default:
		secs = lo + g.r.Int63n(hi-lo+1)
	}
	switch g.r.Intn(6) {
	case 0:
	case 1:
		nanos = int32(g.r.Intn(1000)) * 1e6
	case 2:
		nanos = int32(g.r.Intn(1e6)) * 1e3
	case 3:
		nanos = []int32{maxNanos, 1, -1, 1e9, -maxNanos}[g.r.Intn(2+3*bad/2)]
	default:
		nanos = int32(g.r.Intn(1e9))
	}
	if signed && secs < 0 && (!g.fallbacks || g.r.Intn(4) != 0) {
		nanos = -nanos
	}
	if g.r.Intn(5) != 0 {
		m.Set(fds.ByNumber(1), protoreflect.ValueOfInt64(secs))
	}
	if g.r.Intn(5) != 0 {
		m.Set(fds.ByNumber(2), protoreflect.ValueOfInt32(nanos))
	}
}

func (g *gen) int64v() int64 {
	switch g.r.Intn(12) {
	case 0:
		return 0
	case 1:
		return []int64{1, -1, 127, 128, -128, 255, 1 << 31, -1 << 31, 1<<31 - 1}[g.r.Intn(9)]
	case 2:
		return []int64{math.MaxInt64, math.MinInt64, math.MaxUint32, math.MaxInt32, math.MinInt32}[g.r.Intn(5)]
	case 3:
		return g.r.Int63()
	case 4:
		return -g.r.Int63()
	default:
		return int64(g.r.Intn(2000)) - 1000
	}
}

func (g *gen) float() float64 {
	switch g.r.Intn(10) {
	case 0:
		return []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1)}[g.r.Intn(5)]
	case 1:
		return []float64{1e-7, 1e-6, 9.99e-7, 1e21, 1e20, 123.456, -1.5, 5e-324, math.MaxFloat64,
			math.SmallestNonzeroFloat32, math.MaxFloat32, 1.0 / 3, 1e-300, -1e22, 100}[g.r.Intn(15)]
	case 2:
		return float64(g.r.Intn(1000))
	default:
		return g.r.NormFloat64() * math.Pow(10, float64(g.r.Intn(50)-25))
	}
}

var stringPieces = []string{
	"a", "Z", "0", " ", "hello", "\"", "\\", "/", "\n", "\t", "\r", "\b", "\f", "\x00", "\x1f", "\x7f",
	"é", "日本", "\u2028", "\u2029", "\ufffd", "😀", "<", ">", "&", "'",
}

func (g *gen) str(fd protoreflect.FieldDescriptor) string {
	var b strings.Builder
	for n := g.r.Intn(6); n > 0; n-- {
		b.WriteString(stringPieces[g.r.Intn(len(stringPieces))])
	}
	// Invalid UTF-8 only where proto.Marshal accepts it (proto2, editions
	// without validation).
	if g.fallbacks && !enforceUTF8(fd) && g.r.Intn(15) == 0 {
		b.WriteString([]string{"\xff", "\xc3", "\xed\xa0\x80"}[g.r.Intn(3)])
	}
	return b.String()
}

func (g *gen) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(g.r.Intn(2) == 0)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if g.r.Intn(6) == 0 && (g.fallbacks || !fd.Enum().IsClosed()) {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(g.int64v())))
		}
		return protoreflect.ValueOfEnum(vals.Get(g.r.Intn(vals.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(g.int64v()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(g.int64v())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(g.int64v()))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(g.int64v()))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(g.float()))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(g.float())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(g.str(fd))
	case protoreflect.BytesKind:
		b := make([]byte, g.r.Intn(70))
		g.r.Read(b)
		return protoreflect.ValueOfBytes(b)
	}
	panic("unexpected kind " + fd.Kind().String())
}

// wire returns the encoding of a random message of md, reshaped by mutate.
func (g *gen) wire(md protoreflect.MessageDescriptor) []byte {
	m := dynamicpb.NewMessage(md)
	g.message(m, 0)
	b, err := proto.MarshalOptions{AllowPartial: true, Deterministic: g.r.Intn(2) == 0}.Marshal(m)
	if err != nil {
		panic(err)
	}
	if g.r.Intn(4) != 0 {
		b = g.mutate(md, b, 0)
	}
	if g.corrupt && len(b) > 0 && g.r.Intn(8) == 0 {
		switch g.r.Intn(3) {
		case 0:
			b = b[:g.r.Intn(len(b))]
		case 1:
			b[g.r.Intn(len(b))] ^= byte(1 << g.r.Intn(8))
		default:
			b = append(b, byte(g.r.Intn(256)))
		}
	}
	return b
}

// rec is one top-level field of an encoded message.
type rec struct {
	num protowire.Number
	wt  protowire.Type
	val []byte // payload for BytesType, else the raw encoded value
}

func parseRecs(b []byte) ([]rec, bool) {
	var recs []rec
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, wt, b)
		if m < 0 {
			return nil, false
		}
		v := b[:m]
		if wt == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(b)
		}
		recs = append(recs, rec{num, wt, v})
		b = b[m:]
	}
	return recs, true
}

func joinRecs(recs []rec) []byte {
	var b []byte
	for _, r := range recs {
		b = protowire.AppendTag(b, r.num, r.wt)
		if r.wt == protowire.BytesType {
			b = protowire.AppendBytes(b, r.val)
		} else {
			b = append(b, r.val...)
		}
	}
	return b
}

// mutate reshapes an encoding without (usually) making it invalid: field
// order shuffled, occurrences repeated, packed fields split or unpacked,
// explicit zero values, unknown fields, wire type mismatches. The oracle
// decides what the result means, so any reshaping is fair.
func (g *gen) mutate(md protoreflect.MessageDescriptor, b []byte, depth int) []byte {
	recs, ok := parseRecs(b)
	if !ok {
		return b
	}
	fds := md.Fields()
	for i := range recs {
		if fd := fds.ByNumber(recs[i].num); fd != nil && fd.Message() != nil && recs[i].wt == protowire.BytesType && g.r.Intn(2) == 0 {
			recs[i].val = g.mutate(fd.Message(), recs[i].val, depth+1)
		}
	}
	insert := func(r rec) {
		i := g.r.Intn(len(recs) + 1)
		recs = append(recs[:i], append([]rec{r}, recs[i:]...)...)
	}
	for n := g.r.Intn(4); n >= 0; n-- {
		switch g.r.Intn(8) {
		case 0:
			g.r.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
		case 1:
			if len(recs) > 0 {
				insert(recs[g.r.Intn(len(recs))])
			}
		case 2:
			recs = g.unpack(fds, recs)
		case 3:
			if fds.Len() > 0 {
				fd := fds.Get(g.r.Intn(fds.Len()))
				if !g.fallbacks && declines(fd) {
					break
				}
				if wt := wireType(fd.Kind()); fd.Message() == nil && wt != protowire.StartGroupType {
					insert(rec{fd.Number(), wt, zeroRaw(wt)})
				}
			}
		case 4:
			num := protowire.Number(200 + g.r.Intn(10))
			if g.r.Intn(4) == 0 {
				num = protowire.Number(1000 + g.r.Intn(3)) // the proto2 extension range
			}
			if fds.ByNumber(num) == nil {
				insert(g.randomRec(num))
			}
		case 5, 6:
			// Random values for known fields: in plain mode only scalars
			// outside map entries (a random value for a message field is
			// rarely a valid message, and dynamicpb panics on some mistyped
			// map keys).
			if fds.Len() > 0 {
				fd := fds.Get(g.r.Intn(fds.Len()))
				if g.fallbacks || (fd.Message() == nil && !md.IsMapEntry()) {
					insert(g.randomRec(fd.Number()))
				}
			}
		case 7:
			if g.fallbacks {
				insert(rec{protowire.Number(300 + g.r.Intn(3)), protowire.StartGroupType,
					protowire.AppendTag(nil, protowire.Number(300+g.r.Intn(3)), protowire.EndGroupType)})
			}
		}
	}
	return joinRecs(recs)
}

func zeroRaw(wt protowire.Type) []byte {
	switch wt {
	case protowire.Fixed32Type:
		return make([]byte, 4)
	case protowire.Fixed64Type:
		return make([]byte, 8)
	case protowire.BytesType:
		return nil
	}
	return []byte{0}
}

// randomRec is a field num with a random wire type and value.
func (g *gen) randomRec(num protowire.Number) rec {
	switch g.r.Intn(4) {
	case 0:
		return rec{num, protowire.VarintType, protowire.AppendVarint(nil, uint64(g.int64v()))}
	case 1:
		return rec{num, protowire.Fixed32Type, protowire.AppendFixed32(nil, uint32(g.int64v()))}
	case 2:
		return rec{num, protowire.Fixed64Type, protowire.AppendFixed64(nil, uint64(g.int64v()))}
	}
	v := make([]byte, g.r.Intn(6))
	g.r.Read(v)
	if g.r.Intn(2) == 0 {
		v = []byte("hi")
	}
	return rec{num, protowire.BytesType, v}
}

// unpack rewrites one packed occurrence as unpacked elements, or as two
// packed halves.
func (g *gen) unpack(fds protoreflect.FieldDescriptors, recs []rec) []rec {
	for i, r := range recs {
		fd := fds.ByNumber(r.num)
		if fd == nil || !fd.IsList() || r.wt != protowire.BytesType {
			continue
		}
		wt := wireType(fd.Kind())
		if wt == protowire.BytesType || wt == protowire.StartGroupType {
			continue
		}
		var elems []rec
		for b := r.val; len(b) > 0; {
			n := protowire.ConsumeFieldValue(r.num, wt, b)
			if n < 0 {
				return recs
			}
			elems = append(elems, rec{r.num, wt, b[:n]})
			b = b[n:]
		}
		if g.r.Intn(2) == 0 && len(elems) > 1 {
			half := len(elems) / 2
			pack := func(es []rec) rec {
				var v []byte
				for _, e := range es {
					v = append(v, e.val...)
				}
				return rec{r.num, protowire.BytesType, v}
			}
			elems = []rec{pack(elems[:half]), pack(elems[half:])}
		}
		return append(recs[:i], append(elems, recs[i+1:]...)...)
	}
	return recs
}
