package wirejson

import (
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// occ is one occurrence of a field on the wire. Occurrences of the same field
// in one message are chained through next, in wire order.
type occ struct {
	off, end int32  // the payload of a length-delimited value, else the encoded number
	next     int32  // next occurrence of the same field, 0 = none
	wt       uint8  // wire type of this occurrence (packed or not)
	val      uint64 // decoded number (varint or fixed), 0 for length-delimited values
}

// fstate is the per-message, per-field scan result. For a oneof slot, head
// holds the index+1 of the member currently set.
type fstate struct {
	head, tail int32 // occurrence chain, indexes into scratch.occ, 0 = none
	n          int32 // number of occurrences in the chain
}

// mapEnt is one map entry, collected so that entries can be sorted by key.
type mapEnt struct {
	key  uint64 // numeric key (signed kinds as two's complement), bool as 0/1
	koff int32  // string key: wire span
	kend int32
	seq  int32  // wire order: among equal keys the last one wins
	val  fstate // the value's occurrences inside the entry
}

// scratch is the per-call working memory, pooled so that the steady state
// allocates nothing. All three slices are used as stacks: a nested message
// pushes its state above its parent's and pops it when done.
type scratch struct {
	st   []fstate
	occ  []occ
	ents []mapEnt
	junk []byte // output of values that are validated but not printed

	// keyBroken: in the map entry being scanned, the last occurrence of the
	// key number had the wrong wire type and followed a valid key. Such a
	// mistyped key is an unknown field to generated code, but makes
	// proto.Unmarshal of dynamic messages panic (protobuf-go v1.36): no
	// output is right, so AppendJSON declines.
	keyBroken bool

	// validating > 0 while checking a value that is not printed (see
	// validateDropped): only what proto.Unmarshal checks matters then.
	validating int
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch {
	s := scratchPool.Get().(*scratch)
	s.st = s.st[:0]
	s.occ = append(s.occ[:0], occ{}) // index 0 is the "none" sentinel
	s.ents = s.ents[:0]
	s.keyBroken, s.validating = false, 0
	return s
}

func putScratch(s *scratch) {
	// Do not let one huge message pin a lot of memory in the pool.
	if cap(s.occ) > 1<<16 || cap(s.st) > 1<<16 || cap(s.ents) > 1<<14 || cap(s.junk) > 1<<16 {
		return
	}
	scratchPool.Put(s)
}

// push reserves n zeroed state slots and returns the index of the first.
func (s *scratch) push(n int) int {
	base := len(s.st)
	if cap(s.st)-base >= n {
		s.st = s.st[:base+n]
		clear(s.st[base:])
	} else {
		s.st = append(s.st, make([]fstate, n)...)
	}
	return base
}

// readVarint decodes the varint at b[i:], accepting exactly what
// protowire.ConsumeVarint accepts. It returns the index after it, or -1.
func readVarint(b []byte, i int) (uint64, int) {
	if i < len(b) && b[i] < 0x80 {
		return uint64(b[i]), i + 1
	}
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if i >= len(b) {
			return 0, -1
		}
		c := b[i]
		i++
		if shift == 63 {
			if c > 1 {
				return 0, -1 // overflows 64 bits
			}
			return v | uint64(c)<<63, i
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, i
		}
	}
}

func readFixed32(b []byte, i int) uint64 {
	_ = b[i+3]
	return uint64(b[i]) | uint64(b[i+1])<<8 | uint64(b[i+2])<<16 | uint64(b[i+3])<<24
}

func readFixed64(b []byte, i int) uint64 {
	_ = b[i+7]
	return readFixed32(b, i) | readFixed32(b, i+4)<<32
}

// readValue reads the value of wire type wt at b[i:]. For numbers it returns
// the decoded value and its encoded span; for length-delimited values the
// span of the payload. next is -1 for malformed wire and for wire types that
// are not handled here (groups): both make the caller give up.
func readValue(b []byte, i int, wt protowire.Type) (v uint64, off, end, next int) {
	switch wt {
	case protowire.VarintType:
		v, next = readVarint(b, i)
		return v, i, next, next
	case protowire.Fixed32Type:
		if len(b)-i < 4 {
			return 0, 0, 0, -1
		}
		return readFixed32(b, i), i, i + 4, i + 4
	case protowire.Fixed64Type:
		if len(b)-i < 8 {
			return 0, 0, 0, -1
		}
		return readFixed64(b, i), i, i + 8, i + 8
	case protowire.BytesType:
		n, j := readVarint(b, i)
		if j < 0 || n > uint64(len(b)-j) {
			return 0, 0, 0, -1
		}
		return 0, j, j + int(n), j + int(n)
	}
	// Unknown groups are legal wire but rare; proto's decoders differ in
	// how strictly they check their contents, so do not guess.
	return 0, 0, 0, -1
}

// readTag decodes a tag at b[i:] and checks the field number the way
// proto.Unmarshal does. next is -1 on error.
func readTag(b []byte, i int) (num uint64, wt protowire.Type, next int) {
	var tag uint64
	if c := b[i]; c < 0x80 {
		tag, next = uint64(c), i+1
	} else if tag, next = readVarint(b, i); next < 0 {
		return 0, 0, -1
	}
	num = tag >> 3
	if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return 0, 0, -1
	}
	return num, protowire.Type(tag & 7), next
}

// scan records the fields of one encoded segment wire[i:end] of a message of
// type p into the state slots starting at base. A message may consist of
// several segments (a singular message field repeated on the wire is merged,
// which is the same as decoding the segments one after another).
func (s *scratch) scan(p *msgPlan, wire []byte, i, end, base, depth int) bool {
	b := wire[:end]
	for i < end {
		num, wt, j := readTag(b, i)
		if j < 0 {
			return false
		}
		fi := p.lookup(num)
		if fi < 0 {
			if p.ext != nil && p.ext.Has(protowire.Number(num)) {
				return false // possibly an extension, which protojson prints
			}
			if _, _, _, i = readValue(b, j, wt); i < 0 {
				return false
			}
			continue
		}
		f := &p.fields[fi]
		if f.bad {
			return false
		}
		v, off, vend, next := readValue(b, j, wt)
		if next < 0 {
			return false
		}
		i = next
		if wt != f.wt && !(f.packable && wt == protowire.BytesType) {
			if p.mapEntry && int32(fi) == p.f1 && s.st[base+fi].n > 0 {
				s.keyBroken = true
			}
			continue // a wire type mismatch makes it an unknown field
		}
		if p.mapEntry && int32(fi) == p.f1 {
			s.keyBroken = false
		}
		if f.oneof >= 0 && !s.setOneof(p, wire, base, fi, depth) {
			return false
		}
		s.occ = append(s.occ, occ{off: int32(off), end: int32(vend), wt: uint8(wt), val: v})
		idx := int32(len(s.occ) - 1)
		st := &s.st[base+fi]
		if st.tail != 0 {
			s.occ[st.tail].next = idx
		} else {
			st.head = idx
		}
		st.tail = idx
		st.n++
	}
	return true
}

// setOneof makes field fi the current member of its oneof. The previous
// member's value is dropped, as proto.Unmarshal does, but is validated first
// because proto.Unmarshal would have rejected it if invalid.
func (s *scratch) setOneof(p *msgPlan, wire []byte, base, fi, depth int) bool {
	slot := base + len(p.fields) + int(p.fields[fi].oneof)
	cur := int(s.st[slot].head) - 1
	if cur == fi {
		return true
	}
	if cur >= 0 {
		if !s.validateDropped(&p.fields[cur], wire, s.st[base+cur], 0, depth) {
			return false
		}
		s.st[base+cur] = fstate{}
	}
	s.st[slot].head = int32(fi + 1)
	return true
}

// validateDropped validates the occurrences in chain st of a singular field
// f that will not be printed, stopping before occurrence stop (0: validate
// all). proto.Unmarshal rejects malformed wire and invalid UTF-8 there even
// though protojson never sees the value. Messages are validated by encoding
// them into a junk buffer in validating mode, which skips the checks that
// only protojson makes (timestamp ranges, required fields, Any, ...).
func (s *scratch) validateDropped(f *fieldPlan, wire []byte, st fstate, stop int32, depth int) bool {
	if f.kind == protoreflect.MessageKind {
		if st.head == 0 {
			return true
		}
		var ok bool
		s.validating++
		s.junk, ok = s.emitMessage(s.junk[:0], f.msg, wire, st.head, false, depth+1)
		s.validating--
		return ok
	}
	if !f.check {
		return true
	}
	for c := st.head; c != 0 && c != stop; c = s.occ[c].next {
		if !s.valid(f, wire, s.occ[c]) {
			return false
		}
	}
	return true
}

// valid validates a scalar occurrence that is not printed.
func (s *scratch) valid(f *fieldPlan, wire []byte, o occ) bool {
	switch {
	case f.kind == protoreflect.StringKind:
		return utf8.Valid(wire[o.off:o.end])
	case f.enum != nil && f.enum.closed:
		return f.enum.name(int32(o.val)) != nil
	}
	return true
}
