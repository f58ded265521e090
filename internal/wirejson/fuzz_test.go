package wirejson

import (
	"math/rand"
	"testing"
)

// FuzzAppendJSON feeds arbitrary wire bytes to the encoders of the rich
// proto3, proto2 and editions test types. It must never panic, and the differential
// oracle (checkWire) must hold: equal to protojson when ok, declined when
// proto.Unmarshal or protojson fail.
func FuzzAppendJSON(f *testing.F) {
	s := schema()
	all, p2, ed := New(s.all), New(s.p2), New(s.ed)
	g := &gen{r: rand.New(rand.NewSource(1)), fallbacks: true}
	for range 20 {
		f.Add(g.wire(s.all))
		f.Add(g.wire(s.p2))
		f.Add(g.wire(s.ed))
	}
	f.Add([]byte{})
	f.Add(deep(20))
	f.Fuzz(func(t *testing.T, wire []byte) {
		checkWire(t, all, s.all, wire)
		checkWire(t, p2, s.p2, wire)
		checkWire(t, ed, s.ed, wire)
	})
}
