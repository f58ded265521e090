package bridge

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
)

// ids returns the ids of items.
func ids(items []*sseItem) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.id)
	}
	return out
}

// span returns the ids from..to as strings.
func span(from, to int) []string {
	out := []string{}
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

func TestReplayWindow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		size   int
		base   string // the id the call was opened at
		pushed int    // events 1..pushed
		after  string
		want   []string // nil: the window does not know the id
	}{
		{"at the head", 4, "", 10, "10", span(11, 10)},
		{"inside", 4, "", 10, "8", span(9, 10)},
		{"the oldest held", 4, "", 10, "7", span(8, 10)},
		{"just before the oldest (evicted)", 4, "", 10, "6", span(7, 10)},
		{"just outside", 4, "", 10, "5", nil},
		{"never produced", 4, "", 10, "11", nil},
		{"not an id of the call", 4, "", 10, "x", nil},
		{"empty id", 4, "", 10, "", nil},
		{"not full yet", 4, "", 2, "1", span(2, 2)},
		{"the call's opening id", 4, "0", 3, "0", span(1, 3)},
		{"the opening id, evicted", 4, "0", 5, "0", nil},
		{"size one: the head", 1, "", 5, "5", span(6, 5)},
		{"size one: just before it", 1, "", 5, "4", span(5, 5)},
		{"size one: outside", 1, "", 5, "3", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := replayWindow{base: tc.base}
			for i := 1; i <= tc.pushed; i++ {
				w.push(&sseItem{kind: itemFrame, id: strconv.Itoa(i)}, tc.size)
				// The memory bound: never more than size events.
				if len(w.items) > tc.size {
					t.Fatalf("after %d pushes the window holds %d events, over its size %d", i, len(w.items), tc.size)
				}
			}
			got, ok := w.after(tc.after)
			if ok != (tc.want != nil) || !slices.Equal(ids(got), tc.want) {
				t.Fatalf("after(%q) = %v, %v; want %v", tc.after, ids(got), ok, tc.want)
			}
		})
	}
}

func TestReplayWindowAhead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		base   string
		pushed int // events 1..pushed
		id     string
		ok     bool
	}{
		{"one ahead", "", 10, "11", true},
		{"ahead by the limit", "", 10, "14", true},
		{"ahead by more", "", 10, "15", false},
		{"at the head", "", 10, "10", false},
		{"behind", "", 10, "3", false},
		{"not a number", "", 10, "x11", false},
		{"no event yet: past the opening id", "20", 0, "22", true},
		{"no event and no opening id", "", 0, "1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := replayWindow{base: tc.base}
			for i := 1; i <= tc.pushed; i++ {
				w.push(&sseItem{kind: itemFrame, id: strconv.Itoa(i)}, 4)
			}
			n, ok := w.ahead(tc.id, 4)
			if ok != tc.ok || (ok && strconv.FormatUint(n, 10) != tc.id) {
				t.Fatalf("ahead(%q) = %d, %v; want %v", tc.id, n, ok, tc.ok)
			}
		})
	}
}

func TestReplayWindowBound(t *testing.T) {
	t.Parallel()
	const size = 5
	var w replayWindow
	for i := 1; i <= 1000; i++ {
		w.push(&sseItem{kind: itemFrame, id: strconv.Itoa(i)}, size)
		if len(w.items) > size {
			t.Fatalf("after %d pushes the window holds %d events, over %d", i, len(w.items), size)
		}
	}
	// The ring holds exactly the last events, in order, and forgets the
	// rest (nothing else keeps them alive).
	all, ok := w.after(w.base)
	if !ok || !slices.Equal(ids(all), span(996, 1000)) || w.base != "995" {
		t.Fatalf("window %v (base %q, %v), want 996..1000 after 995", ids(all), w.base, ok)
	}
	if cap(w.items) > 2*size {
		t.Fatalf("the ring's array has room for %d events, want at most %d", cap(w.items), 2*size)
	}
}

func TestStreamLifetime(t *testing.T) {
	t.Parallel()
	const d = time.Minute
	t.Run("random", func(t *testing.T) {
		t.Parallel()
		c := &config{}
		seen := make(map[time.Duration]bool)
		for range 1000 {
			got := c.streamLifetime(d)
			if got < d-d/10 || got > d {
				t.Fatalf("streamLifetime(%v) = %v, want within the last tenth", d, got)
			}
			seen[got] = true
		}
		if len(seen) < 100 {
			t.Fatalf("1000 streams got %d distinct lifetimes: no spread", len(seen))
		}
	})
	t.Run("seam", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			jitter, want time.Duration
		}{
			{0, d},
			{time.Second, d - time.Second},
			{d / 10, d - d/10},
			{d, d - d/10}, // clamped to the spread
			{-time.Second, d},
		} {
			c := &config{streamJitter: func(spread time.Duration) time.Duration {
				if spread != d/10 {
					t.Errorf("spread %v, want %v", spread, d/10)
				}
				return tc.jitter
			}}
			if got := c.streamLifetime(d); got != tc.want {
				t.Errorf("jitter %v: lifetime %v, want %v", tc.jitter, got, tc.want)
			}
		}
	})
	t.Run("too short to spread", func(t *testing.T) {
		t.Parallel()
		if got := (&config{}).streamLifetime(5); got != 5 {
			t.Fatalf("streamLifetime(5ns) = %v", got)
		}
	})
}

func TestMessageShape(t *testing.T) {
	t.Parallel()
	compiled := testv1.File_bridgetest_v1_inspect_proto.Services().Get(0).Methods().ByName("Inspect")
	// rebuild returns Inspect from a copy of its file, as a reload
	// delivers it, after edit.
	rebuild := func(edit func(*descriptorpb.FileDescriptorProto)) *descriptorpb.FileDescriptorProto {
		fdp := protodesc.ToFileDescriptorProto(testv1.File_bridgetest_v1_inspect_proto)
		edit(fdp)
		return fdp
	}
	inspectOf := func(t *testing.T, fdp *descriptorpb.FileDescriptorProto) *method {
		fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
		if err != nil {
			t.Fatal(err)
		}
		return &method{desc: fd.Services().Get(0).Methods().ByName("Inspect")}
	}
	field := func(msg string, f *descriptorpb.FieldDescriptorProto) func(*descriptorpb.FileDescriptorProto) {
		return func(fdp *descriptorpb.FileDescriptorProto) {
			for _, m := range fdp.MessageType {
				if m.GetName() == msg {
					m.Field = append(m.Field, f)
				}
			}
		}
	}
	extra := &descriptorpb.FieldDescriptorProto{
		Name: proto.String("extra"), Number: proto.Int32(99), JsonName: proto.String("extra"),
		Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
	}
	want := messageShape(compiled)
	for _, tc := range []struct {
		name string
		edit func(*descriptorpb.FileDescriptorProto)
		same bool
	}{
		{"reloaded as is", func(*descriptorpb.FileDescriptorProto) {}, true},
		{"comments and another message", func(fdp *descriptorpb.FileDescriptorProto) {
			fdp.SourceCodeInfo = &descriptorpb.SourceCodeInfo{}
			fdp.MessageType = append(fdp.MessageType, &descriptorpb.DescriptorProto{Name: proto.String("Unrelated")})
		}, true},
		{"a response field more", field("InspectResponse", extra), false},
		{"a request field more", field("InspectRequest", extra), false},
		{"a nested message's field more", field("Filter", extra), false},
		{"an enum value more", func(fdp *descriptorpb.FileDescriptorProto) {
			for _, e := range fdp.EnumType {
				e.Value = append(e.Value, &descriptorpb.EnumValueDescriptorProto{Name: proto.String("COLOR_EXTRA"), Number: proto.Int32(99)})
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := messageShape(inspectOf(t, rebuild(tc.edit)).desc)
			if (got == want) != tc.same {
				t.Fatalf("same shape %v, want %v", got == want, tc.same)
			}
		})
	}
}
