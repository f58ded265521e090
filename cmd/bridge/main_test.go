package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseFlagsErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "nothing exposed: give -expose (or -demo)"},
		{[]string{"-expose", "a.*"}, "no backend: give -backend (or -demo)"},
		{[]string{"-demo", "-backend", "x:1"}, "-demo runs its own backend"},
		{[]string{"-demo", "-tls-cert", "c.pem"}, "-tls-cert and -tls-key go together"},
		{[]string{"-expose", "a.*", "-backend", "=x:1"}, `"=x:1": want target or pattern=target`},
		{[]string{"-expose", "a.*", "-backend", "x:1", "-backend", "y:1"}, "more than one default backend"},
		{[]string{"-demo", "-log-format", "xml"}, `-log-format "xml"`},
		{[]string{"-demo", "stray"}, "unexpected arguments"},
		{[]string{"-demo", "-admin-addr", "9090"}, `-admin-addr "9090": want host:port`},
		{[]string{"-demo", "-grpc-addr", ":8080"}, "-addr and -grpc-addr are both :8080: give each listener its own port"},
		{[]string{"-demo", "-admin-addr", ":9090", "-grpc-addr", ":9090"}, "-admin-addr and -grpc-addr are both :9090"},
		{[]string{"-demo", "-shutdown-delay", "-1s"}, "-shutdown-delay cannot be negative"},
		{[]string{"-demo", "-backend-keepalive", "5s"}, "-backend-keepalive must be 0 (off) or at least 10s"},
		{[]string{"-demo", "-backend-keepalive", "10s", "-backend-keepalive-timeout", "0s"}, "-backend-keepalive-timeout must be positive"},
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
	} {
		_, err := parseFlags(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	cfg, err := parseFlags([]string{"-expose", "a.*", "-expose", "b.S/M", "-backend", "x:1", "-backend", "b.*=dns:///b:9000"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Expose) != 2 || len(cfg.Backends) != 2 || cfg.Addr != ":8080" || cfg.HeartbeatInterval != 15*time.Second {
		t.Fatalf("config %+v", cfg)
	}
}

// testBridge is a bridge serving a config on loopback ports: one for each
// listener the config asks for.
type testBridge struct {
	url      string             // the public listener: http://host:port
	adminURL string             // the admin listener; "" without -admin-addr
	grpcAddr string             // the native gRPC listener, host:port; "" without -grpc-addr
	stop     context.CancelFunc // what SIGTERM does through signal.NotifyContext
	exited   chan struct{}      // closed when serve has returned err
	err      error
}

// startTestBridge serves cfg, logging to log, until the test ends or
// stop.
func startTestBridge(t *testing.T, cfg *Config, log *slog.Logger) *testBridge {
	t.Helper()
	ls := listeners{public: listenLoopback(t)}
	b := &testBridge{url: "http://" + ls.public.Addr().String(), exited: make(chan struct{})}
	if cfg.AdminAddr != "" {
		ls.admin = listenLoopback(t)
		b.adminURL = "http://" + ls.admin.Addr().String()
	}
	if cfg.GRPCAddr != "" {
		ls.grpc = listenLoopback(t)
		b.grpcAddr = ls.grpc.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	go func() {
		defer close(b.exited)
		b.err = serve(ctx, cfg, log, ls)
	}()
	t.Cleanup(func() {
		cancel()
		<-b.exited // within the shutdown delay plus the drain timeout
		if b.err != nil {
			t.Errorf("serve: %v", b.err)
		}
	})
	return b
}

// startBridge serves cfg until the test ends, and returns the public
// listener's base URL.
func startBridge(t *testing.T, cfg *Config) string {
	t.Helper()
	return startTestBridge(t, cfg, slog.New(slog.DiscardHandler)).url
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// tickIDs returns the ids of the message events of a ticker stream, and
// whether it ended with an end event.
func tickIDs(t *testing.T, body string) (string, bool) {
	t.Helper()
	r := bridgetest.NewSSEReader(strings.NewReader(body))
	var ids []string
	ended := false
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return strings.Join(ids, ","), ended
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case "message":
			ids = append(ids, ev.ID)
		case "end":
			ended = true
		}
	}
}

func TestDemoMode(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)

	code, body := get(t, base+"/demo.v1.TickerService/Watch?symbol=ACME&limit=3&interval_ms=1")
	if ids, ended := tickIDs(t, body); code != 200 || ids != "1,2,3" || !ended {
		t.Fatalf("ticker: %d, ids %q, ended %v:\n%s", code, ids, ended, body)
	}
	if code, body := get(t, base+"/"); code != 200 || !strings.Contains(body, "<title>gRPC bridge demo</title>") {
		t.Fatalf("demo page: %d %.80q", code, body)
	}
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, _ := get(t, base+"/grpc.health.v1.Health/Watch"); code != 404 {
		t.Fatalf("unexposed health service: %d, want 404", code)
	}
}

func TestBridgesBackendInAnotherServer(t *testing.T) {
	t.Parallel()
	// The demo services as a standalone gRPC server on a loopback port,
	// reached through -backend, with the schema from a descriptor file.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := demo.NewServer()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	descriptors := filepath.Join(t.TempDir(), "demo.binpb")
	writeDescriptorSet(t, descriptors, "demo/v1/ticker.proto", "demo/v1/echo.proto")
	cfg, err := parseFlags([]string{"-backend", lis.Addr().String(), "-expose", "demo.v1.TickerService", "-descriptors", descriptors})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	code, body := get(t, base+"/v1/tickers/XYZ:watch?limit=2&interval_ms=1")
	if ids, ended := tickIDs(t, body); code != 200 || ids != "1,2" || !ended {
		t.Fatalf("ticker: %d, ids %q, ended %v:\n%s", code, ids, ended, body)
	}
	if code, _ := get(t, base+"/demo.v1.EchoService/Stream?count=1"); code != 404 {
		t.Fatalf("EchoService is in the schema but not exposed: got %d, want 404", code)
	}
}

// writeDescriptorSet writes the named compiled-in files, without their
// imports, as a FileDescriptorSet, as `buf build --exclude-imports -o` does.
func writeDescriptorSet(t *testing.T, path string, files ...string) {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	for _, name := range files {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
		if err != nil {
			t.Fatal(err)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownDrainsLiveStreams(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-retry", "1500ms"})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
	resp, err := http.Get(b.url + "/demo.v1.TickerService/Watch?symbol=A&interval_ms=5")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bridgetest.NewSSEReader(resp.Body)
	readTicks(t, r, 2)
	b.stop()
	if last := lastEvent(r); last.Type != "" || last.Retry != 1500*time.Millisecond {
		t.Fatalf("last block %+v, want a lone retry hint", last)
	}
	select {
	case <-b.exited:
	case <-time.After(cfg.DrainTimeout):
		t.Fatal("serve did not return within the drain timeout")
	}
}

// readTicks reads events until n messages.
func readTicks(t *testing.T, r *bridgetest.SSEReader, n int) {
	t.Helper()
	for seen := 0; seen < n; {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "message" {
			seen++
		}
	}
}

// lastEvent reads a stream to its end and returns its last block.
func lastEvent(r *bridgetest.SSEReader) bridgetest.Event {
	var last bridgetest.Event
	for {
		ev, err := r.Next()
		if err != nil {
			return last
		}
		last = ev
	}
}
