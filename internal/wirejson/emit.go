package wirejson

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxDepth bounds message nesting. proto.Unmarshal allows far more (10000),
// so deeper input merely falls back; the bound keeps the recursion cheap.
const maxDepth = 100

// emitMessage appends the JSON of the message of type p whose encoding is the
// chain of occurrences starting at head (one: only the occurrence head).
func (s *scratch) emitMessage(dst []byte, p *msgPlan, wire []byte, head int32, one bool, depth int) ([]byte, bool) {
	if depth > maxDepth || p.opaque || (p.bad && s.validating == 0) {
		return dst, false
	}
	base := s.push(len(p.fields) + p.nOneofs)
	occBase := len(s.occ)
	for c := head; c != 0; {
		o := s.occ[c]
		if !s.scan(p, wire, int(o.off), int(o.end), base, depth) {
			return dst, false
		}
		if one {
			break
		}
		c = o.next
	}

	ok := true
	switch wkt := p.wkt; {
	case wkt == wktNone || s.validating > 0:
		// A validated value is printed as a plain object: that checks every
		// field, and the output is discarded anyway.
		dst, ok = s.emitFields(dst, p, wire, base, depth)
	case wkt == wktTimestamp || wkt == wktDuration:
		// Both fields are plain integers (no validation needed); absent
		// means zero, and the last occurrence wins.
		var secs, nanos uint64
		if st := s.st[base+int(p.f1)]; st.n > 0 {
			secs = s.occ[st.tail].val
		}
		if st := s.st[base+int(p.f2)]; st.n > 0 {
			nanos = s.occ[st.tail].val
		}
		if wkt == wktTimestamp {
			dst, ok = appendTimestamp(dst, int64(secs), int32(nanos))
		} else {
			dst, ok = appendDuration(dst, int64(secs), int32(nanos))
		}
	case wkt == wktWrapper:
		// The wrapped value is printed even when it is zero or absent.
		f := &p.fields[p.f1]
		if st := s.st[base+int(p.f1)]; st.n > 0 {
			dst, ok = s.appendSingular(dst, f, wire, st, depth)
		} else {
			dst, ok = appendDefault(dst, f)
		}
	}
	s.st = s.st[:base]
	s.occ = s.occ[:occBase]
	return dst, ok
}

// emitFields prints a regular message as a JSON object, fields in
// declaration order.
func (s *scratch) emitFields(dst []byte, p *msgPlan, wire []byte, base, depth int) ([]byte, bool) {
	for _, ri := range p.required {
		if s.st[base+int(ri)].n == 0 && s.validating == 0 {
			return dst, false // protojson reports the missing required field
		}
	}
	dst = append(dst, '{')
	start := len(dst)
	for fi := range p.fields {
		st := s.st[base+fi]
		if st.n == 0 {
			continue
		}
		f := &p.fields[fi]
		scalar := !f.list && !f.isMap && f.kind != protoreflect.MessageKind
		if scalar && !f.presence {
			// Implicit presence: only a non-zero final value is populated.
			if o := s.occ[st.tail]; o.off == o.end || (f.wt != protowire.BytesType && o.val&f.mask == 0) {
				if !s.validateDropped(f, wire, st, 0, depth) {
					return dst, false
				}
				continue
			}
		}
		mark := len(dst)
		if mark > start {
			dst = append(dst, ',')
		}
		dst = append(dst, f.name...)
		var ok bool
		switch {
		case f.isMap:
			dst, ok = s.emitMap(dst, f, wire, st, depth)
		case f.list:
			var n int
			if dst, n, ok = s.emitList(dst, f, wire, st, depth); ok && n == 0 {
				dst = dst[:mark] // only empty packed occurrences: the list is empty
			}
		case f.kind == protoreflect.MessageKind:
			dst, ok = s.emitMessage(dst, f.msg, wire, st.head, false, depth+1)
		default:
			dst, ok = s.appendSingular(dst, f, wire, st, depth)
		}
		if !ok {
			return dst, false
		}
	}
	return append(dst, '}'), true
}

// appendSingular prints the last occurrence of a singular scalar after
// validating the overwritten ones.
func (s *scratch) appendSingular(dst []byte, f *fieldPlan, wire []byte, st fstate, depth int) ([]byte, bool) {
	if st.n > 1 && !s.validateDropped(f, wire, st, st.tail, depth) {
		return dst, false
	}
	return appendValue(dst, f, wire, s.occ[st.tail])
}

// emitList prints a repeated field as a JSON array, returning the number of
// elements.
func (s *scratch) emitList(dst []byte, f *fieldPlan, wire []byte, st fstate, depth int) ([]byte, int, bool) {
	dst = append(dst, '[')
	n := 0
	ok := true
	for c := st.head; c != 0; {
		o := s.occ[c]
		switch {
		case f.kind == protoreflect.MessageKind:
			if n > 0 {
				dst = append(dst, ',')
			}
			dst, ok = s.emitMessage(dst, f.msg, wire, c, true, depth+1)
			n++
		case f.packable && o.wt == uint8(protowire.BytesType):
			b := wire[:o.end]
			for i := int(o.off); i < len(b) && ok; {
				var v uint64
				switch f.wt {
				case protowire.VarintType:
					if v, i = readVarint(b, i); i < 0 {
						return dst, n, false
					}
				case protowire.Fixed32Type:
					if len(b)-i < 4 {
						return dst, n, false
					}
					v, i = readFixed32(b, i), i+4
				default:
					if len(b)-i < 8 {
						return dst, n, false
					}
					v, i = readFixed64(b, i), i+8
				}
				if n > 0 {
					dst = append(dst, ',')
				}
				dst, ok = appendNumber(dst, f, v)
				n++
			}
		default:
			if n > 0 {
				dst = append(dst, ',')
			}
			dst, ok = appendValue(dst, f, wire, o)
			n++
		}
		if !ok {
			return dst, n, false
		}
		c = o.next
	}
	return append(dst, ']'), n, true
}

// emitMap prints a map field as a JSON object with sorted keys. Entries are
// collected first; a later entry with an equal key replaces an earlier one.
func (s *scratch) emitMap(dst []byte, f *fieldPlan, wire []byte, st fstate, depth int) ([]byte, bool) {
	if depth >= maxDepth {
		return dst, false
	}
	ep := f.msg
	kf, vf := &ep.fields[f.keyIdx], &ep.fields[f.valIdx]
	ebase := len(s.ents)
	var seq int32
	for c := st.head; c != 0; c = s.occ[c].next {
		o := s.occ[c]
		// The entry's occurrences stay on s.occ (the value chain refers to
		// them) until the enclosing message pops them.
		base := s.push(len(ep.fields) + ep.nOneofs)
		s.keyBroken = false
		if !s.scan(ep, wire, int(o.off), int(o.end), base, depth+1) || s.keyBroken {
			return dst, false
		}
		ks, vs := s.st[base+int(f.keyIdx)], s.st[base+int(f.valIdx)]
		s.st = s.st[:base]
		e := mapEnt{seq: seq, val: vs}
		seq++
		if ks.n > 0 {
			if ks.n > 1 && !s.validateDropped(kf, wire, ks, ks.tail, depth) {
				return dst, false
			}
			ko := s.occ[ks.tail]
			if kf.kind == protoreflect.StringKind {
				if !utf8.Valid(wire[ko.off:ko.end]) {
					return dst, false
				}
				e.koff, e.kend = ko.off, ko.end
			} else {
				e.key = mapKey(kf, ko.val)
			}
		}
		s.ents = append(s.ents, e)
	}

	ents := s.ents[ebase:]
	if len(ents) > 1 {
		str, signed := kf.kind == protoreflect.StringKind, isSigned(kf.kind)
		slices.SortFunc(ents, func(a, b mapEnt) int {
			var c int
			switch {
			case str:
				c = bytes.Compare(wire[a.koff:a.kend], wire[b.koff:b.kend])
			case signed:
				c = cmp.Compare(int64(a.key), int64(b.key))
			default:
				c = cmp.Compare(a.key, b.key)
			}
			if c == 0 {
				c = cmp.Compare(a.seq, b.seq)
			}
			return c
		})
	}

	dst = append(dst, '{')
	start := len(dst)
	ok := true
	for i, e := range ents {
		if i+1 < len(ents) && sameKey(kf, wire, e, ents[i+1]) {
			// Replaced by a later entry: not printed, but must be valid.
			if !s.validateDropped(vf, wire, e.val, 0, depth) {
				return dst, false
			}
			continue
		}
		if len(dst) > start {
			dst = append(dst, ',')
		}
		if dst, ok = appendMapKey(dst, kf, wire, e); !ok {
			return dst, false
		}
		switch {
		case vf.kind == protoreflect.MessageKind:
			// An absent value is an empty message (head 0: empty chain).
			dst, ok = s.emitMessage(dst, vf.msg, wire, e.val.head, false, depth+1)
		case e.val.n == 0:
			dst, ok = appendDefault(dst, vf)
		default:
			dst, ok = s.appendSingular(dst, vf, wire, e.val, depth)
		}
		if !ok {
			return dst, false
		}
	}
	s.ents = s.ents[:ebase]
	return append(dst, '}'), true
}

func isSigned(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return true
	}
	return false
}

// mapKey converts the raw wire number of a map key to the value the key
// sorts by: signed kinds as two's complement int64, bools as 0/1.
func mapKey(kf *fieldPlan, v uint64) uint64 {
	switch kf.kind {
	case protoreflect.Int32Kind, protoreflect.Sfixed32Kind:
		return uint64(int64(int32(v)))
	case protoreflect.Sint32Kind:
		return uint64(protowire.DecodeZigZag(v & math.MaxUint32))
	case protoreflect.Sint64Kind:
		return uint64(protowire.DecodeZigZag(v))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return uint64(uint32(v))
	case protoreflect.BoolKind:
		if v != 0 {
			return 1
		}
		return 0
	}
	return v // int64, uint64, fixed64, sfixed64
}

func sameKey(kf *fieldPlan, wire []byte, a, b mapEnt) bool {
	if kf.kind == protoreflect.StringKind {
		return bytes.Equal(wire[a.koff:a.kend], wire[b.koff:b.kend])
	}
	return a.key == b.key
}

// appendMapKey prints a key and the colon; protojson renders every key as
// a JSON string.
func appendMapKey(dst []byte, kf *fieldPlan, wire []byte, e mapEnt) ([]byte, bool) {
	switch {
	case kf.kind == protoreflect.StringKind:
		var ok bool
		if dst, ok = appendString(dst, wire[e.koff:e.kend]); !ok {
			return dst, false
		}
	case kf.kind == protoreflect.BoolKind:
		dst = append(dst, '"')
		dst = strconv.AppendBool(dst, e.key != 0)
		dst = append(dst, '"')
	case isSigned(kf.kind):
		dst = append(dst, '"')
		dst = strconv.AppendInt(dst, int64(e.key), 10)
		dst = append(dst, '"')
	default:
		dst = append(dst, '"')
		dst = strconv.AppendUint(dst, e.key, 10)
		dst = append(dst, '"')
	}
	return append(dst, ':'), true
}

// appendValue prints one unpacked scalar occurrence.
func appendValue(dst []byte, f *fieldPlan, wire []byte, o occ) ([]byte, bool) {
	if f.wt == protowire.BytesType {
		return appendBytesValue(dst, f, wire[o.off:o.end])
	}
	return appendNumber(dst, f, o.val)
}

// appendDefault prints the value of an absent scalar where protojson prints
// one anyway (wrappers, map values).
func appendDefault(dst []byte, f *fieldPlan) ([]byte, bool) {
	if f.wt == protowire.BytesType {
		return appendBytesValue(dst, f, nil)
	}
	return appendNumber(dst, f, f.defRaw)
}

func appendBytesValue(dst []byte, f *fieldPlan, b []byte) ([]byte, bool) {
	if f.kind == protoreflect.StringKind {
		return appendString(dst, b)
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"'), true
}

// appendNumber prints a numeric kind from its raw wire value v, converting
// it the way proto.Unmarshal does (truncation to 32 bits, zigzag, ...).
func appendNumber(dst []byte, f *fieldPlan, v uint64) ([]byte, bool) {
	switch f.kind {
	case protoreflect.BoolKind:
		return strconv.AppendBool(dst, v != 0), true
	case protoreflect.EnumKind:
		return appendEnum(dst, f.enum, int32(v))
	case protoreflect.Int32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(dst, int64(int32(v)), 10), true
	case protoreflect.Sint32Kind:
		return strconv.AppendInt(dst, protowire.DecodeZigZag(v&math.MaxUint32), 10), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(dst, uint64(uint32(v)), 10), true
	case protoreflect.FloatKind:
		return appendFloat(dst, float64(math.Float32frombits(uint32(v))), 32), true
	case protoreflect.DoubleKind:
		return appendFloat(dst, math.Float64frombits(v), 64), true
	}
	// 64-bit integers are JSON strings.
	dst = append(dst, '"')
	switch f.kind {
	case protoreflect.Int64Kind, protoreflect.Sfixed64Kind:
		dst = strconv.AppendInt(dst, int64(v), 10)
	case protoreflect.Sint64Kind:
		dst = strconv.AppendInt(dst, protowire.DecodeZigZag(v), 10)
	default: // uint64, fixed64
		dst = strconv.AppendUint(dst, v, 10)
	}
	return append(dst, '"'), true
}

func appendEnum(dst []byte, ep *enumPlan, n int32) ([]byte, bool) {
	if ep.null {
		return append(dst, "null"...), true
	}
	if name := ep.name(n); name != nil {
		return append(dst, name...), true
	}
	if ep.closed {
		// proto.Unmarshal of generated code moves an unknown closed enum
		// number to the unknown fields, dynamicpb keeps it: do not guess.
		return dst, false
	}
	return strconv.AppendInt(dst, int64(n), 10), true
}
