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

func TestReflectionStartup(t *testing.T) {
	t.Parallel()
	// demo.NewServer registers server reflection, v1 and v1alpha.
	addr := serveGRPC(t, demo.NewServer())
	cfg, err := parseFlags([]string{"-config", reflectionConfig(t, addr), "-expose", "demo.v1.*"})
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

// serveErr runs serve with cfg and returns its error, which it must return
// at once: a start-up failure.
func serveErr(t *testing.T, cfg *Config) error {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), schemaTimeout)
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
			name: "no reflection, no descriptors, service not compiled in",
			args: []string{"-backend", addr, "-expose", "dyn.v1.*"},
			want: []string{`expose pattern "dyn.v1.*" matches no method of the schema`, "the backend has no reflection: true and no -descriptors was given"},
		},
		{
			name: "reflection: true against a backend without it",
			args: []string{"-config", reflectionConfig(t, addr), "-expose", "demo.v1.*"},
			want: []string{"backend reflecting: bridge: the backend does not implement server reflection", "reflection.Register", "give -descriptors"},
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
		watchSchema(ctx, h, func(ctx context.Context) (*protoregistry.Files, error) { return loadSchema(ctx, cfg, conns) }, 0, trigger, slog.New(logs))
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

func TestWatchSchemaSources(t *testing.T) {
	t.Parallel()
	// runWatch runs watchSchema for h until the test ends and returns its
	// trigger and its schema reload records.
	runWatch := func(t *testing.T, h *bridge.Handler, reload func(context.Context) (*protoregistry.Files, error), refresh time.Duration) (chan<- os.Signal, *schemaLogs) {
		t.Helper()
		logs := newSchemaLogs()
		trigger := make(chan os.Signal, 1)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			watchSchema(ctx, h, reload, refresh, trigger, slog.New(logs))
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

	t.Run("descriptor file is re-read", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "demo.binpb")
		writeDescriptorSet(t, path, "demo/v1/ticker.proto")
		cfg, err := parseFlags([]string{"-backend", "x:1", "-expose", "demo.v1.*", "-descriptors", path})
		if err != nil {
			t.Fatal(err)
		}
		h, base := newHandler(t, cfg)
		trigger, logs := runWatch(t, h, func(ctx context.Context) (*protoregistry.Files, error) { return loadSchema(ctx, cfg, nil) }, 0)
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

	t.Run("compiled-in schema cannot change", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseFlags([]string{"-backend", "x:1", "-expose", "demo.v1.*"})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := newHandler(t, cfg)
		trigger, logs := runWatch(t, h, nil, time.Millisecond)
		trigger <- syscall.SIGHUP
		if r := logs.next(t); r.Level != slog.LevelInfo || !strings.Contains(r.Message, "compiled into the bridge") {
			t.Fatalf("SIGHUP with the compiled-in schema: %s %q", r.Level, r.Message)
		}
	})

	t.Run("refresh timer", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseFlags([]string{"-backend", "x:1", "-expose", "demo.v1.*"})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := newHandler(t, cfg)
		var calls atomic.Int32
		_, logs := runWatch(t, h, func(context.Context) (*protoregistry.Files, error) {
			calls.Add(1)
			return protoregistry.GlobalFiles, nil
		}, 5*time.Millisecond)
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
