package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// schemaTimeout bounds every wait of these tests, so that a bug fails a test
// instead of hanging it. It is never what a test asserts.
const schemaTimeout = 10 * time.Second

// serveGRPC serves s on a loopback port until the test ends and returns
// the address.
func serveGRPC(t *testing.T, s *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-served
	})
	return lis.Addr().String()
}

// reflectionConfig writes a config file with one backend, target, that has
// reflection: true, and returns its path.
func reflectionConfig(t *testing.T, target string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	yaml := fmt.Sprintf("backends:\n  - name: reflecting\n    target: %s\n    reflection: true\n", target)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReflectionStartup is the README's standalone backend: cmd/demo's
// server, with reflection, bridged with flags only. The demo services are
// compiled into the bridge too, so the test checks that their schema came
// by reflection rather than from the compiled-in copy.
func TestReflectionStartup(t *testing.T) {
	t.Parallel()
	// demo.NewServer registers server reflection, v1 and v1alpha.
	addr := serveGRPC(t, demo.NewServer())
	cfg, err := parseFlags([]string{"-backend", addr, "-expose", "demo.v1.*"})
	if err != nil {
		t.Fatal(err)
	}
	if got := schemaSourceOf(cfg); got != schemaReflection {
		t.Fatalf("schema source %v, want reflection", got)
	}
	base := startBridge(t, cfg)
	// Ids are the ticks' seq (default ids would start at 1): the method
	// options, and the google.api.http path, came through reflection.
	code, body := get(t, base+"/v1/tickers/XYZ:watch?after_seq=10&limit=2&interval_ms=1")
	if ids, ended := tickIDs(t, body); code != 200 || ids != "11,12" || !ended {
		t.Fatalf("ticker: %d, ids %q, ended %v:\n%s", code, ids, ended, body)
	}
}

// TestReflectionByDefault bridges a backend whose services are compiled
// into no program (dyn.v1), with no config file and no -descriptors: only
// its server reflection can describe them.
func TestReflectionByDefault(t *testing.T) {
	t.Parallel()
	addr, _ := newReleasingBackend(t)
	cfg, err := parseFlags([]string{"-backend", addr, "-expose", "dyn.v1.*"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	// Ids 10, 20: dyn.v1.Clock's cursor option came with the schema.
	code, body := get(t, base+"/v1/clock:ticks?count=2")
	if ids, ended := tickIDs(t, body); code != 200 || ids != "10,20" || !ended {
		t.Fatalf("dyn.v1.Clock: %d, ids %q, ended %v:\n%s", code, ids, ended, body)
	}
}

// TestReflectionWaitsForABackendStartingLate starts the bridge before its
// backend, as a deployment that rolls both out at once does: the start-up
// fetch waits for the backend instead of failing on the refused
// connection.
func TestReflectionWaitsForABackendStartingLate(t *testing.T) {
	t.Parallel()
	lis := listenLoopback(t)
	addr := lis.Addr().String()
	_ = lis.Close() // refused until the backend listens there
	cfg, err := parseFlags([]string{"-backend", addr, "-expose", "demo.v1.*"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	time.Sleep(200 * time.Millisecond) // serve is in its first fetch
	backend, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the backend's port was taken meanwhile: %v", err)
	}
	srv := demo.NewServer()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(backend)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	// The bridge answers once its schema has come; the request waits in the
	// listener's backlog until then.
	code, body := get(t, base+"/v1/tickers/LATE:watch?limit=1&interval_ms=1")
	if ids, ended := tickIDs(t, body); code != 200 || ids != "1" || !ended {
		t.Fatalf("ticker: %d, ids %q, ended %v:\n%s", code, ids, ended, body)
	}
}

// configWithBackends writes a config file with the backends given as YAML
// list items, and returns its path.
func configWithBackends(t *testing.T, items ...string) string {
	t.Helper()
	return writeConfig(t, "backends:\n"+strings.Join(items, ""))
}

func TestSchemaSourceSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		args  []string
		want  schemaSource
		asked []int  // the backends asked by reflection
		err   string // "": parseFlags succeeds
	}{
		{name: "default: every backend by reflection", args: []string{"-backend", "x:1", "-backend", "b.*=y:1", "-expose", "a.*"}, want: schemaReflection, asked: []int{0, 1}},
		{name: "demo", args: []string{"-demo"}, want: schemaCompiledIn},
		{name: "demo without reflection", args: []string{"-demo", "-reflection=false"}, want: schemaCompiledIn},
		{name: "descriptor file", args: []string{"-backend", "x:1", "-expose", "a.*", "-descriptors", "s.binpb"}, want: schemaFile},
		{name: "builtin", args: []string{"-backend", "x:1", "-expose", "a.*", "-descriptors", "builtin"}, want: schemaCompiledIn},
		{name: "reflection off, builtin", args: []string{"-backend", "x:1", "-expose", "a.*", "-reflection=false", "-descriptors", "builtin"}, want: schemaCompiledIn},
		{name: "reflection off, file", args: []string{"-backend", "x:1", "-expose", "a.*", "-reflection=false", "-descriptors", "s.binpb"}, want: schemaFile},
		{
			name: "one backend opted out",
			args: []string{"-expose", "a.*", "-config", configWithBackends(t, "  - target: x:1\n", "  - target: y:1\n    services: [b.*]\n    reflection: false\n")},
			want: schemaReflection, asked: []int{0},
		},
		{
			name: "reflection off, one backend asked",
			args: []string{"-expose", "a.*", "-reflection=false", "-config", configWithBackends(t, "  - target: x:1\n    reflection: true\n")},
			err:  "backends[0]: reflection: true, but -reflection=false turns server reflection off",
		},
		{
			name: "reflection off, no descriptors",
			args: []string{"-backend", "x:1", "-expose", "a.*", "-reflection=false"},
			err:  "-reflection=false and no -descriptors: nothing describes the backends' services; give -descriptors file.binpb (buf build -o), or -descriptors builtin",
		},
		{
			name: "every backend opted out",
			args: []string{"-expose", "a.*", "-config", configWithBackends(t, "  - target: x:1\n    reflection: false\n")},
			err:  "every backend has reflection: false and no -descriptors was given",
		},
		{
			name: "reflection: true and a descriptor file",
			args: []string{"-expose", "a.*", "-descriptors", "s.binpb", "-config", configWithBackends(t, "  - target: x:1\n    reflection: true\n")},
			err:  "backends[0]: reflection and -descriptors are two schema sources; pick one",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseFlags(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseFlags = %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := schemaSourceOf(cfg); got != tc.want {
				t.Errorf("schema source %v, want %v", got, tc.want)
			}
			if got := reflecting(cfg); !slices.Equal(got, tc.asked) {
				t.Errorf("backends asked by reflection %v, want %v", got, tc.asked)
			}
		})
	}
}

// serveErr runs serve with cfg and returns its error, which it must return
// at once: a start-up failure.
func serveErr(t *testing.T, cfg *Config) error {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), schemaTimeout+reflectionTimeout)
	defer cancel()
	return serve(ctx, cfg, slog.New(slog.DiscardHandler), listeners{public: lis})
}

func TestStartupWithoutSchemaSource(t *testing.T) {
	t.Parallel()
	noReflection := grpc.NewServer()
	demo.Register(noReflection)
	addr := serveGRPC(t, noReflection)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{
			name: "a backend without reflection, no descriptors",
			args: []string{"-backend", addr, "-expose", "demo.v1.*"},
			want: []string{"backend " + addr + ": bridge: the backend does not implement server reflection", "reflection.Register", "give -descriptors"},
		},
		{
			name: "reflection: true against a backend without it",
			args: []string{"-config", reflectionConfig(t, addr), "-expose", "demo.v1.*"},
			want: []string{"backend reflecting: bridge: the backend does not implement server reflection", "reflection.Register", "give -descriptors"},
		},
		{
			name: "builtin, service not compiled in",
			args: []string{"-backend", addr, "-expose", "dyn.v1.*", "-descriptors", "builtin"},
			want: []string{`expose pattern "dyn.v1.*" matches no method of the schema`, "-descriptors builtin is only the schema compiled into the bridge"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseFlags(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			err = serveErr(t, cfg)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("serve = %v, want an error containing %q", err, want)
				}
			}
		})
	}
}

// switchResolver is the descriptor registry of a backend's reflection
// service: dyn/v1/dyn.proto in the version set last (none: nil), then the
// compiled-in descriptors. Switching it is the backend's release of a new
// schema; its handlers run from the start.
type switchResolver struct {
	files atomic.Pointer[protoregistry.Files]
}

func (r *switchResolver) set(t *testing.T, dyn protoreflect.FileDescriptor) {
	t.Helper()
	files := new(protoregistry.Files)
	if dyn != nil {
		if err := files.RegisterFile(dyn); err != nil {
			t.Fatal(err)
		}
	}
	r.files.Store(files)
}

func (r *switchResolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.files.Load().FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r *switchResolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.files.Load().FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// newReleasingBackend serves the demo services and dyn.v1's on a loopback
// port with server reflection over a switchResolver that starts with
// dyn.v1.Clock, and returns the address and the resolver.
func newReleasingBackend(t *testing.T) (string, *switchResolver) {
	t.Helper()
	r := &switchResolver{}
	r.set(t, bridgetest.DynFile(false))
	s := grpc.NewServer()
	demo.Register(s)
	bridgetest.RegisterDyn(s)
	opts := reflection.ServerOptions{Services: s, DescriptorResolver: r}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
	return serveGRPC(t, s), r
}

// schemaLogs is a slog.Handler that passes the schema reload records to a
// channel, dropping them when it is full rather than blocking the bridge.
type schemaLogs struct {
	records chan slog.Record
	attrs   []slog.Attr
}

func newSchemaLogs() *schemaLogs { return &schemaLogs{records: make(chan slog.Record, 8)} }

func (l *schemaLogs) Enabled(context.Context, slog.Level) bool { return true }
func (l *schemaLogs) WithGroup(string) slog.Handler            { return l }

func (l *schemaLogs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &schemaLogs{records: l.records, attrs: append(slices.Clip(l.attrs), attrs...)}
}

func (l *schemaLogs) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "schema") {
		r = r.Clone()
		r.AddAttrs(l.attrs...)
		select {
		case l.records <- r:
		default:
		}
	}
	return nil
}

// next returns the next schema reload record.
func (l *schemaLogs) next(t *testing.T) slog.Record {
	t.Helper()
	select {
	case r := <-l.records:
		return r
	case <-time.After(schemaTimeout):
		t.Fatal("no schema reload logged")
		return slog.Record{}
	}
}

func recordAttr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// statusOf GETs url and returns the HTTP status.
func statusOf(t *testing.T, url string) int {
	t.Helper()
	code, _ := get(t, url)
	return code
}

func TestSchemaHotReloadKeepsLiveStreams(t *testing.T) {
	t.Parallel()
	addr, release := newReleasingBackend(t)
	cfg, err := parseFlags([]string{"-config", reflectionConfig(t, addr), "-expose", "demo.v1.*", "-expose", "dyn.v1.*"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	conns := map[int]*grpc.ClientConn{0: conn}

	// What serve does, with a trigger channel in place of SIGHUP.
	files, err := loadSchema(t.Context(), cfg, conns)
	if err != nil {
		t.Fatal(err)
	}
	h, err := bridge.NewHandler(bridge.WithFiles(files), bridge.WithBackend(conn), bridge.WithExpose(cfg.Expose...))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	logs := newSchemaLogs()
	trigger := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(t.Context())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchSchema(ctx, h, schemaReload{load: func(ctx context.Context) (*protoregistry.Files, error) { return loadSchema(ctx, cfg, conns) }}, trigger, slog.New(logs))
	}()
	t.Cleanup(func() {
		cancel()
		<-watched
	})

	// A live stream, open across both reloads.
	live, err := http.Get(srv.URL + "/demo.v1.TickerService/Watch?symbol=LIVE&interval_ms=5")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	stream := bridgetest.NewSSEReader(live.Body)
	seen := 0
	readTicks := func(n int) {
		t.Helper()
		for want := seen + n; seen < want; {
			ev, err := stream.Next()
			if err != nil {
				t.Fatalf("live stream after %d ticks: %v", seen, err)
			}
			switch ev.Type {
			case "message":
				seen++
				if ev.ID != fmt.Sprint(seen) {
					t.Fatalf("live stream: tick %d has id %q", seen, ev.ID)
				}
			case "end", "error":
				t.Fatalf("live stream ended after %d ticks: %s %s", seen, ev.Type, ev.Data)
			}
		}
	}
	readTicks(2)
	if code := statusOf(t, srv.URL+"/dyn.v1.Calendar/Days?count=1"); code != http.StatusNotFound {
		t.Fatalf("dyn.v1.Calendar before its release: %d, want 404", code)
	}

	// A release without dyn.v1 leaves -expose dyn.v1.* matching nothing: the
	// reload fails and the bridge keeps the schema it has.
	release.set(t, nil)
	trigger <- syscall.SIGHUP
	if r := logs.next(t); r.Level != slog.LevelWarn || !strings.Contains(recordAttr(r, "error"), `"dyn.v1.*" matches no method`) {
		t.Fatalf("reload without dyn.v1: %s %q %s, want a warning", r.Level, r.Message, recordAttr(r, "error"))
	}
	if code, body := get(t, srv.URL+"/v1/clock:ticks?count=1"); code != 200 || !strings.Contains(body, "id: 10\n") {
		t.Fatalf("dyn.v1.Clock after the failed reload: %d\n%s", code, body)
	}
	readTicks(2)

	// The release that adds dyn.v1.Calendar: new streams see it.
	release.set(t, bridgetest.DynFile(true))
	trigger <- syscall.SIGHUP
	if r := logs.next(t); r.Level != slog.LevelInfo || r.Message != "schema reloaded" || recordAttr(r, "trigger") != "hangup" || recordAttr(r, "files") == "0" {
		t.Fatalf("reload with dyn.v1.Calendar: %s %q files=%s trigger=%s", r.Level, r.Message, recordAttr(r, "files"), recordAttr(r, "trigger"))
	}
	if code, body := get(t, srv.URL+"/dyn.v1.Calendar/Days?count=2"); code != 200 || !strings.Contains(body, `{"n":"20"}`) {
		t.Fatalf("dyn.v1.Calendar after its release: %d\n%s", code, body)
	}

	// The live stream never noticed.
	readTicks(3)
}

// TestSIGHUPReloadsSchema sends a real SIGHUP to the test process. It is not
// parallel, so that no other test's bridge is starting up meanwhile; and it
// catches SIGHUP itself as well, so that a bug in the bridge's handling
// fails the test rather than killing the test binary.
func TestSIGHUPReloadsSchema(t *testing.T) {
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	addr, release := newReleasingBackend(t)
	cfg, err := parseFlags([]string{"-config", reflectionConfig(t, addr), "-expose", "demo.v1.*", "-expose", "dyn.v1.*",
		"-schema-refresh", "1h"})
	if err != nil {
		t.Fatal(err)
	}
	logs := newSchemaLogs()
	base := startTestBridge(t, cfg, slog.New(logs)).url

	// An answer means serve is serving, so its SIGHUP handler is in place.
	if code := statusOf(t, base+"/dyn.v1.Calendar/Days?count=1"); code != http.StatusNotFound {
		t.Fatalf("dyn.v1.Calendar before its release: %d, want 404", code)
	}
	release.set(t, bridgetest.DynFile(true))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if r := logs.next(t); r.Message != "schema reloaded" || recordAttr(r, "source") != "reflection" {
		t.Fatalf("after SIGHUP: %s %q source=%s error=%s", r.Level, r.Message, recordAttr(r, "source"), recordAttr(r, "error"))
	}
	if code, body := get(t, base+"/dyn.v1.Calendar/Days?count=1"); code != 200 || !strings.Contains(body, `{"n":"10"}`) {
		t.Fatalf("dyn.v1.Calendar after SIGHUP: %d\n%s", code, body)
	}
}

// replaceDescriptorSet writes the named compiled-in files as a descriptor
// set at path the way deployments do, atomically (a new file renamed over
// the old one), so that a poll never sees it half written.
func replaceDescriptorSet(t *testing.T, path string, files ...string) {
	t.Helper()
	writeDescriptorSet(t, path+".new", files...)
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// noRecord fails the test if a schema reload record arrives within d.
func (l *schemaLogs) noRecord(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case r := <-l.records:
		t.Fatalf("unexpected %s %q trigger=%s error=%s", r.Level, r.Message, recordAttr(r, "trigger"), recordAttr(r, "error"))
	case <-time.After(d):
	}
}

func TestWatchSchemaSources(t *testing.T) {
	t.Parallel()
	// runWatch runs watchSchema for h until the test ends and returns its
	// trigger and its schema reload records.
	runWatch := func(t *testing.T, h *bridge.Handler, r schemaReload) (chan<- os.Signal, *schemaLogs) {
		t.Helper()
		logs := newSchemaLogs()
		trigger := make(chan os.Signal, 1)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			watchSchema(ctx, h, r, trigger, slog.New(logs))
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		return trigger, logs
	}
	newHandler := func(t *testing.T, cfg *Config) (*bridge.Handler, string) {
		t.Helper()
		files, err := loadSchema(t.Context(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
		h, err := bridge.NewHandler(bridge.WithFiles(files), bridge.WithBackend(conn), bridge.WithExpose(cfg.Expose...))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return h, srv.URL
	}
	descriptorConfig := func(t *testing.T, files ...string) (*Config, string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "demo.binpb")
		writeDescriptorSet(t, path, files...)
		cfg, err := parseFlags([]string{"-backend", "x:1", "-expose", "demo.v1.*", "-descriptors", path})
		if err != nil {
			t.Fatal(err)
		}
		return cfg, path
	}
	load := func(cfg *Config) func(context.Context) (*protoregistry.Files, error) {
		return func(ctx context.Context) (*protoregistry.Files, error) { return loadSchema(ctx, cfg, nil) }
	}

	t.Run("descriptor file is re-read on SIGHUP", func(t *testing.T) {
		t.Parallel()
		cfg, path := descriptorConfig(t, "demo/v1/ticker.proto")
		h, base := newHandler(t, cfg)
		trigger, logs := runWatch(t, h, schemaReload{load: load(cfg)})
		if code := statusOf(t, base+"/demo.v1.EchoService/Stream?count=1"); code != http.StatusNotFound {
			t.Fatalf("EchoService before the new file: %d, want 404", code)
		}
		writeDescriptorSet(t, path, "demo/v1/ticker.proto", "demo/v1/echo.proto")
		trigger <- syscall.SIGHUP
		if r := logs.next(t); r.Message != "schema reloaded" || recordAttr(r, "files") != "2" {
			t.Fatalf("reload: %s %q files=%s error=%s", r.Level, r.Message, recordAttr(r, "files"), recordAttr(r, "error"))
		}
		if code := statusOf(t, base+"/demo.v1.EchoService/Stream?count=1"); code != 200 {
			t.Fatalf("EchoService after the new file: %d, want 200", code)
		}
	})

	t.Run("descriptor file is polled", func(t *testing.T) {
		t.Parallel()
		const poll = 10 * time.Millisecond
		quiet := 20 * poll // long enough for a reload that should not happen
		cfg, path := descriptorConfig(t, "demo/v1/ticker.proto")
		h, base := newHandler(t, cfg)
		f := &descriptorFile{path: path}
		f.changed()
		_, logs := runWatch(t, h, schemaReload{load: load(cfg), every: poll, tick: "file changed", poll: f.changed})
		echo := base + "/demo.v1.EchoService/Stream?count=1"

		replaceDescriptorSet(t, path, "demo/v1/ticker.proto", "demo/v1/echo.proto")
		if r := logs.next(t); r.Message != "schema reloaded" || recordAttr(r, "trigger") != "file changed" || recordAttr(r, "files") != "2" {
			t.Fatalf("after the change: %s %q trigger=%s files=%s error=%s", r.Level, r.Message, recordAttr(r, "trigger"), recordAttr(r, "files"), recordAttr(r, "error"))
		}
		if code := statusOf(t, echo); code != 200 {
			t.Fatalf("EchoService after the new file: %d, want 200", code)
		}

		// The same bytes again, with a new modification time: nothing to load.
		replaceDescriptorSet(t, path, "demo/v1/ticker.proto", "demo/v1/echo.proto")
		logs.noRecord(t, quiet)

		// A broken file: reported once, and the schema stays.
		if err := os.WriteFile(path+".new", []byte("not a descriptor set"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
		if r := logs.next(t); r.Level != slog.LevelWarn || recordAttr(r, "trigger") != "file changed" || !strings.Contains(recordAttr(r, "error"), "not a FileDescriptorSet") {
			t.Fatalf("broken file: %s %q trigger=%s error=%s", r.Level, r.Message, recordAttr(r, "trigger"), recordAttr(r, "error"))
		}
		logs.noRecord(t, quiet)
		if code := statusOf(t, echo); code != 200 {
			t.Fatalf("EchoService after the broken file: %d, want 200 (the schema before it)", code)
		}

		// Fixed: the new schema loads.
		replaceDescriptorSet(t, path, "demo/v1/ticker.proto")
		if r := logs.next(t); r.Message != "schema reloaded" || recordAttr(r, "files") != "1" {
			t.Fatalf("after the fix: %s %q files=%s error=%s", r.Level, r.Message, recordAttr(r, "files"), recordAttr(r, "error"))
		}
		if code := statusOf(t, echo); code != http.StatusNotFound {
			t.Fatalf("EchoService after the file without it: %d, want 404", code)
		}
	})

	t.Run("compiled-in schema cannot change", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseFlags([]string{"-backend", "x:1", "-expose", "demo.v1.*", "-descriptors", "builtin"})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := newHandler(t, cfg)
		trigger, logs := runWatch(t, h, schemaReload{every: time.Millisecond})
		trigger <- syscall.SIGHUP
		if r := logs.next(t); r.Level != slog.LevelInfo || !strings.Contains(r.Message, "compiled into the bridge") {
			t.Fatalf("SIGHUP with the compiled-in schema: %s %q", r.Level, r.Message)
		}
	})

	t.Run("refresh timer", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseFlags([]string{"-backend", "x:1", "-expose", "demo.v1.*", "-descriptors", "builtin"})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := newHandler(t, cfg)
		var calls atomic.Int32
		_, logs := runWatch(t, h, schemaReload{load: func(context.Context) (*protoregistry.Files, error) {
			calls.Add(1)
			return protoregistry.GlobalFiles, nil
		}, every: 5 * time.Millisecond, tick: "refresh"})
		for range 2 {
			if r := logs.next(t); r.Message != "schema reloaded" || recordAttr(r, "trigger") != "refresh" {
				t.Fatalf("timer reload: %s %q trigger=%s", r.Level, r.Message, recordAttr(r, "trigger"))
			}
		}
		if calls.Load() < 2 {
			t.Fatalf("%d reloads, want 2 or more", calls.Load())
		}
	})
}

// TestDescriptorFileReloadedOnChange is the poll as serve runs it: a
// descriptor file replaced on disk, as a ConfigMap update does, serves its
// new method within the poll interval, with no SIGHUP.
func TestDescriptorFileReloadedOnChange(t *testing.T) {
	t.Parallel()
	addr := serveGRPC(t, demo.NewServer())
	path := filepath.Join(t.TempDir(), "demo.binpb")
	writeDescriptorSet(t, path, "demo/v1/ticker.proto")
	cfg, err := parseFlags([]string{"-backend", addr, "-expose", "demo.v1.*", "-descriptors", path})
	if err != nil {
		t.Fatal(err)
	}
	logs := newSchemaLogs()
	base := startTestBridge(t, cfg, slog.New(logs)).url
	echo := base + "/demo.v1.EchoService/Stream?count=1"
	// An answer means serve is serving, so its watch has looked at the file.
	if code := statusOf(t, echo); code != http.StatusNotFound {
		t.Fatalf("EchoService before the new file: %d, want 404", code)
	}
	changed := time.Now()
	replaceDescriptorSet(t, path, "demo/v1/ticker.proto", "demo/v1/echo.proto")
	if r := logs.next(t); r.Message != "schema reloaded" || recordAttr(r, "trigger") != "file changed" || recordAttr(r, "source") != "descriptors" {
		t.Fatalf("after the change: %s %q trigger=%s source=%s error=%s", r.Level, r.Message, recordAttr(r, "trigger"), recordAttr(r, "source"), recordAttr(r, "error"))
	}
	t.Logf("reloaded %v after the change (poll every %v)", time.Since(changed).Round(time.Millisecond), descriptorsPoll)
	if code := statusOf(t, echo); code != 200 {
		t.Fatalf("EchoService after the new file: %d, want 200", code)
	}
}
