package bridge_test

import (
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	bridgev1 "github.com/grpcbridge/grpcbridge/gen/bridge/v1"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// fetchEvents GETs url with header and returns the event stream it answers,
// failing the test unless the answer is one.
func fetchEvents(t *testing.T, url string, header http.Header) []bridgetest.Event {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	return events(t, resp)
}

// tickIDs returns the event ids of the message events of evs, and their
// ticks as "symbol#seq".
func tickIDs(t *testing.T, evs []bridgetest.Event) (ids, seqs []string) {
	t.Helper()
	for _, ev := range messages(evs) {
		var tick demov1.Tick
		if err := protojson.Unmarshal([]byte(ev.Data), &tick); err != nil {
			t.Fatalf("tick %q: %v", ev.Data, err)
		}
		ids = append(ids, ev.ID)
		seqs = append(seqs, tick.GetSymbol()+"#"+strconv.FormatUint(tick.GetSeq(), 10))
	}
	return ids, seqs
}

// demoFileSet returns the compiled-in descriptors of paths as a set, in
// the order given, without their imports.
func demoFileSet(t *testing.T, paths ...string) *descriptorpb.FileDescriptorSet {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	for _, p := range paths {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(p)
		if err != nil {
			t.Fatal(err)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	return set
}

// writeSet writes set to a file in a temporary directory and returns its
// path.
func writeSet(t *testing.T, set *descriptorpb.FileDescriptorSet) string {
	t.Helper()
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "schema.binpb")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A schema loaded from a descriptor file serves the same calls, with the
// same SSE options and google.api.http paths, as the compiled-in one.
func TestLoadDescriptorSetServesDemo(t *testing.T) {
	t.Parallel()
	// chat, echo and ticker import timestamp.proto, annotations.proto and
	// options.proto, which the set leaves out (buf's --exclude-imports).
	// Reverse dependency order: each file comes before the files it
	// imports would.
	paths := []string{"demo/v1/ticker.proto", "demo/v1/echo.proto", "demo/v1/chat.proto"}
	tests := []struct {
		name  string
		files func(t *testing.T) *protoregistry.Files
	}{
		{"LoadDescriptorSet", func(t *testing.T) *protoregistry.Files {
			files, err := bridge.LoadDescriptorSet(writeSet(t, demoFileSet(t, paths...)))
			if err != nil {
				t.Fatalf("LoadDescriptorSet: %v", err)
			}
			return files
		}},
		{"NewFiles with options as unknown fields", func(t *testing.T) *protoregistry.Files {
			// As a program that does not link the bridge's options would
			// have read the set.
			b, err := proto.Marshal(demoFileSet(t, paths...))
			if err != nil {
				t.Fatal(err)
			}
			var set descriptorpb.FileDescriptorSet
			if err := (proto.UnmarshalOptions{Resolver: new(protoregistry.Types)}).Unmarshal(b, &set); err != nil {
				t.Fatal(err)
			}
			opts := set.GetFile()[0].GetService()[0].GetMethod()[0].GetOptions()
			if len(opts.ProtoReflect().GetUnknown()) == 0 {
				t.Fatal("test setup: the method options were parsed, want them unknown")
			}
			files, err := bridge.NewFiles(&set)
			if err != nil {
				t.Fatalf("NewFiles: %v", err)
			}
			return files
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files := tt.files(t)
			var got []string
			files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
				got = append(got, fd.Path())
				return true
			})
			slices.Sort(got)
			if want := []string{"demo/v1/chat.proto", "demo/v1/echo.proto", "demo/v1/ticker.proto"}; !slices.Equal(got, want) {
				t.Fatalf("schema files %q, want %q (imports resolved, not added)", got, want)
			}

			conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
			h, err := bridge.NewHandler(bridge.WithFiles(files), bridge.WithBackend(conn), bridge.WithExpose("demo.v1.TickerService"))
			if err != nil {
				t.Fatalf("NewHandler: %v", err)
			}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)

			for _, c := range []struct {
				name             string
				path             string
				header           http.Header
				wantIDs, wantSeq []string
			}{
				{"gRPC path", "/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1", nil,
					[]string{"1", "2"}, []string{"A#1", "A#2"}},
				// The cursor field (seq) makes the ids, not a sequence
				// number of the stream.
				{"cursor field", "/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1&after_seq=10", nil,
					[]string{"11", "12"}, []string{"A#11", "A#12"}},
				// The resume field (after_seq) takes Last-Event-ID.
				{"resume field", "/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1",
					http.Header{"Last-Event-ID": {"5"}}, []string{"6", "7"}, []string{"A#6", "A#7"}},
				{"google.api.http path", "/v1/tickers/A:watch?limit=1&interval_ms=1", nil,
					[]string{"1"}, []string{"A#1"}},
			} {
				ids, seqs := tickIDs(t, fetchEvents(t, srv.URL+c.path, c.header))
				if !slices.Equal(ids, c.wantIDs) || !slices.Equal(seqs, c.wantSeq) {
					t.Errorf("%s: ids %q, ticks %q; want %q, %q", c.name, ids, seqs, c.wantIDs, c.wantSeq)
				}
			}
		})
	}
}

// When a file of the set imports something that is neither in the set nor
// compiled in, the error must name that file and the missing import, also
// when other files of the set import that file. buf and protoc write sets
// in dependency order, so the importing files come after it.
func TestNewFilesNamesTheMissingImport(t *testing.T) {
	t.Parallel()
	broken := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("broken/v1/broken.proto"),
		Package:    proto.String("broken.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"nowhere/v1/missing.proto"},
	}
	dependent := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("broken/v1/dependent.proto"),
		Package:    proto.String("broken.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"broken/v1/broken.proto"},
	}
	for _, tt := range []struct {
		name  string
		files []*descriptorpb.FileDescriptorProto
	}{
		{"dependency order", []*descriptorpb.FileDescriptorProto{broken, dependent}},
		{"reverse dependency order", []*descriptorpb.FileDescriptorProto{dependent, broken}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files, err := bridge.NewFiles(&descriptorpb.FileDescriptorSet{File: tt.files})
			if err == nil {
				t.Fatalf("NewFiles = %d files, want an error", files.NumFiles())
			}
			for _, w := range []string{"broken/v1/broken.proto", "nowhere/v1/missing.proto"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to name %s", err, w)
				}
			}
		})
	}
}

// LoadDescriptorSet parses the options it knows, so a program that reads
// them from the schema finds them as extensions, not unknown bytes.
func TestLoadDescriptorSetParsesOptions(t *testing.T) {
	t.Parallel()
	files, err := bridge.LoadDescriptorSet(writeSet(t, demoFileSet(t, "demo/v1/ticker.proto")))
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("demo.v1.TickerService.Watch")
	if err != nil {
		t.Fatal(err)
	}
	opts := d.(protoreflect.MethodDescriptor).Options().(*descriptorpb.MethodOptions)
	if unknown := opts.ProtoReflect().GetUnknown(); len(unknown) != 0 {
		t.Errorf("Watch options keep %d unknown bytes, want them parsed", len(unknown))
	}
	sse := proto.GetExtension(opts, bridgev1.E_Method).(*bridgev1.MethodOptions).GetSse()
	if sse.GetCursorField() != "seq" || sse.GetResumeField() != "after_seq" {
		t.Errorf("Watch (bridge.v1.method) sse = %v, want cursor_field seq, resume_field after_seq", sse)
	}
	rule, _ := proto.GetExtension(opts, annotations.E_Http).(*annotations.HttpRule)
	if got := rule.GetGet(); got != "/v1/tickers/{symbol}:watch" {
		t.Errorf("Watch google.api.http get = %q, want /v1/tickers/{symbol}:watch", got)
	}
}

// chainSet returns a set of n files, schematest/fN.proto, each importing the
// one before and holding a message with a field of the previous message's
// type, listed last file first: every file comes before its import.
func chainSet(n int) *descriptorpb.FileDescriptorSet {
	set := &descriptorpb.FileDescriptorSet{}
	for i := n - 1; i >= 0; i-- {
		fdp := &descriptorpb.FileDescriptorProto{
			Name:    proto.String("schematest/f" + strconv.Itoa(i) + ".proto"),
			Package: proto.String("schematest.v1"),
			Syntax:  proto.String("proto3"),
			MessageType: []*descriptorpb.DescriptorProto{{
				Name: proto.String("M" + strconv.Itoa(i)),
			}},
		}
		if i > 0 {
			prev := "schematest/f" + strconv.Itoa(i-1) + ".proto"
			fdp.Dependency = []string{prev}
			fdp.MessageType[0].Field = []*descriptorpb.FieldDescriptorProto{{
				Name:     proto.String("prev"),
				JsonName: proto.String("prev"),
				Number:   proto.Int32(1),
				Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
				Type:     descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(),
				TypeName: proto.String(".schematest.v1.M" + strconv.Itoa(i-1)),
			}}
		}
		set.File = append(set.File, fdp)
	}
	return set
}

func TestLoadDescriptorSetAnyOrder(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 4} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			set := chainSet(n)
			files, err := bridge.LoadDescriptorSet(writeSet(t, set))
			if err != nil {
				t.Fatalf("LoadDescriptorSet of %d files, dependencies last: %v", n, err)
			}
			if files.NumFiles() != n {
				t.Fatalf("%d files, want %d", files.NumFiles(), n)
			}
			last := "schematest.v1.M" + strconv.Itoa(n-1)
			d, err := files.FindDescriptorByName(protoreflect.FullName(last))
			if err != nil {
				t.Fatalf("find %s: %v", last, err)
			}
			if n > 1 {
				field := d.(protoreflect.MessageDescriptor).Fields().ByName("prev")
				if want := protoreflect.FullName("schematest.v1.M" + strconv.Itoa(n-2)); field.Message().FullName() != want {
					t.Fatalf("%s.prev is a %s, want %s", last, field.Message().FullName(), want)
				}
			}
		})
	}
}

func TestLoadDescriptorSetEmpty(t *testing.T) {
	t.Parallel()
	files, err := bridge.LoadDescriptorSet(writeSet(t, &descriptorpb.FileDescriptorSet{}))
	if err != nil {
		t.Fatalf("LoadDescriptorSet of an empty set: %v", err)
	}
	if files.NumFiles() != 0 {
		t.Fatalf("%d files, want 0", files.NumFiles())
	}
}

func TestLoadDescriptorSetErrors(t *testing.T) {
	t.Parallel()
	unknownImport := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("broken/v1/broken.proto"),
		Package:    proto.String("broken.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"nowhere/v1/missing.proto"},
	}
	unknownType := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("broken/v1/field.proto"),
		Package: proto.String("broken.v1"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("M"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name:     proto.String("x"),
				JsonName: proto.String("x"),
				Number:   proto.Int32(1),
				Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
				Type:     descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(),
				TypeName: proto.String(".nowhere.v1.Missing"),
			}},
		}},
	}
	setFile := func(t *testing.T, set *descriptorpb.FileDescriptorSet) string { return writeSet(t, set) }
	rawFile := func(b string) func(t *testing.T) string {
		return func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "schema.binpb")
			if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}
	}
	tests := []struct {
		name     string
		path     func(t *testing.T) string
		want     []string // in the error message, besides the path
		wantNoEx bool     // the error wraps fs.ErrNotExist
	}{
		{"missing file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing.binpb") },
			[]string{"bridge: descriptor set: "}, true},
		{"directory", func(t *testing.T) string { return t.TempDir() }, []string{"bridge: descriptor set: "}, false},
		{"garbage", rawFile("\xff\xff\xff\xff"), []string{"not a FileDescriptorSet"}, false},
		{"truncated", rawFile("\x0a\x05abc"), []string{"not a FileDescriptorSet"}, false},
		{"garbage file entry", rawFile("\x0a\x03\xff\xff\xff"), []string{"not a FileDescriptorSet"}, false},
		{"JSON", rawFile(`{"file":[]}`), []string{"not a FileDescriptorSet"}, false},
		{"unknown import", func(t *testing.T) string {
			return setFile(t, &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{unknownImport}})
		}, []string{"broken/v1/broken.proto", "nowhere/v1/missing.proto"}, false},
		{"unknown import among good files", func(t *testing.T) string {
			set := demoFileSet(t, "demo/v1/ticker.proto", "demo/v1/echo.proto")
			set.File = append(set.File[:1], append([]*descriptorpb.FileDescriptorProto{unknownImport}, set.File[1:]...)...)
			return setFile(t, set)
		}, []string{"broken/v1/broken.proto"}, false},
		{"unknown field type", func(t *testing.T) string {
			return setFile(t, &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{unknownType}})
		}, []string{"broken/v1/field.proto", "nowhere.v1.Missing"}, false},
		{"import cycle", func(t *testing.T) string {
			set := chainSet(2)
			// f0 now imports f1, which imports f0.
			set.File[1].Dependency = []string{"schematest/f1.proto"}
			return setFile(t, set)
		}, []string{"schematest/f"}, false},
		{"duplicate file", func(t *testing.T) string {
			return setFile(t, demoFileSet(t, "demo/v1/echo.proto", "demo/v1/echo.proto"))
		}, []string{"demo/v1/echo.proto"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := tt.path(t)
			files, err := bridge.LoadDescriptorSet(path)
			if err == nil {
				t.Fatalf("LoadDescriptorSet = %d files, want an error", files.NumFiles())
			}
			if files != nil {
				t.Errorf("LoadDescriptorSet returned files with the error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "bridge: descriptor set") || !strings.Contains(msg, path) {
				t.Errorf("error %q, want it to start with %q and name %s", msg, "bridge: descriptor set", path)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q, want it to contain %q", msg, w)
				}
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.wantNoEx {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v, want %v", err, got, tt.wantNoEx)
			}
		})
	}
}
