package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

func TestMethodConfigShared(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `demo: true
methods:
  demo.v1.TickerService/Watch: {cursor_field: seq, resume_field: after_seq, shared: true}
`)
	cfg, err := parseFlags([]string{"-config", path})
	if err != nil {
		t.Fatal(err)
	}
	want := MethodConfig{CursorField: "seq", ResumeField: "after_seq", Shared: true}
	if got := cfg.Methods["demo.v1.TickerService/Watch"]; got != want {
		t.Fatalf("method config %+v, want %+v", got, want)
	}

	// Wired through: a second subscriber joins the first one's call, so
	// its ticks continue that call's sequence instead of starting at 1.
	base := startBridge(t, cfg)
	const url = "/demo.v1.TickerService/Watch?symbol=ACME&interval_ms=10"
	first := openTicks(t, base+url)
	for seq := uint64(0); seq < 5; {
		seq = first(t)
	}
	second := openTicks(t, base+url)
	if seq := second(t); seq < 5 {
		t.Fatalf("second subscriber's first tick %d, want the shared call's sequence (5 or later)", seq)
	}
}

// openTicks opens a ticker stream and returns a function that reads the
// next tick's id.
func openTicks(t *testing.T, url string) func(*testing.T) uint64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	r := bridgetest.NewSSEReader(resp.Body)
	return func(t *testing.T) uint64 {
		t.Helper()
		for {
			ev, err := r.Next()
			if err != nil {
				t.Fatalf("read ticks: %v", err)
			}
			if ev.Type == "message" {
				n, err := strconv.ParseUint(ev.ID, 10, 64)
				if err != nil {
					t.Fatalf("tick id %q: %v", ev.ID, err)
				}
				return n
			}
		}
	}
}

func TestMethodConfigSharedRefusesBidi(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-config", writeConfig(t, `demo: true
methods:
  demo.v1.EchoService/Echo: {shared: true}
`)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	err = serve(context.Background(), cfg, slog.New(slog.DiscardHandler), listeners{public: lis})
	if err == nil || !strings.Contains(err.Error(), "only server-streaming methods can be shared") {
		t.Fatalf("serve: %v, want a refusal of shared on a bidirectional method", err)
	}
}

func TestSharedReplayConfig(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "demo: true\nshared_replay: 16\n")
	cfg, err := parseFlags([]string{"-config", path})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SharedReplay != 16 {
		t.Fatalf("shared_replay %d, want 16", cfg.SharedReplay)
	}
	if cfg, err = parseFlags([]string{"-config", path, "-shared-replay", "32"}); err != nil || cfg.SharedReplay != 32 {
		t.Fatalf("-shared-replay over the file: %d, %v; want 32", cfg.SharedReplay, err)
	}
	// The value reaches the bridge, which refuses a negative window.
	cfg, err = parseFlags([]string{"-demo", "-shared-replay", "-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := serveErr(t, cfg); err == nil || !strings.Contains(err.Error(), "shared replay window of -1 events") {
		t.Fatalf("serve with -shared-replay -1: %v, want a refusal", err)
	}
}

// TestSharedStreamsAcrossSchemaRefresh runs eight subscribers of one shared
// ticker across schema reloads from server reflection (schema_refresh
// takes the path SIGHUP takes): each reconnects after a reload with its
// Last-Event-ID and rejoins the one live call. The ticks carry the time
// the backend sent them, so two subscribers that got the same tick (id and
// data alike) got it from the same upstream call.
func TestSharedStreamsAcrossSchemaRefresh(t *testing.T) {
	t.Parallel()
	const subs = 8
	addr := serveGRPC(t, demo.NewServer())
	cfg, err := parseFlags([]string{"-config", writeConfig(t, fmt.Sprintf(`backends:
  - {name: reflecting, target: %s, reflection: true}
expose: [demo.v1.*]
schema_refresh: 50ms
methods:
  demo.v1.TickerService/Watch: {cursor_field: seq, resume_field: after_seq, shared: true}
`, addr))})
	if err != nil {
		t.Fatal(err)
	}
	logs := newSchemaLogs()
	base := startTestBridge(t, cfg, slog.New(logs)).url
	// reloaded waits for a reload that starts after the call.
	reloaded := func() {
		t.Helper()
		for len(logs.records) > 0 {
			<-logs.records
		}
		if r := logs.next(t); r.Message != "schema reloaded" {
			t.Fatalf("schema refresh: %s %q %s", r.Level, r.Message, recordAttr(r, "error"))
		}
	}

	ticks := make(map[string]string) // id -> data, as the first subscriber to get it saw it
	type sub struct {
		r    *bridgetest.SSEReader
		stop func()
		last uint64
	}
	connect := func(s *sub) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/demo.v1.TickerService/Watch?symbol=ACME&interval_ms=10", nil)
		if s.last != 0 {
			req.Header.Set("Last-Event-ID", strconv.FormatUint(s.last, 10))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		s.r, s.stop = bridgetest.NewSSEReader(resp.Body), func() { cancel(); _ = resp.Body.Close() }
	}
	// read reads n ticks: contiguous ids, each the same tick that every
	// other subscriber got with that id.
	read := func(i int, s *sub, n int) {
		t.Helper()
		for got := 0; got < n; {
			ev, err := s.r.Next()
			if err != nil {
				t.Fatalf("subscriber %d after id %d: %v", i, s.last, err)
			}
			if ev.Type != "message" {
				continue
			}
			id, _ := strconv.ParseUint(ev.ID, 10, 64)
			if s.last != 0 && id != s.last+1 {
				t.Fatalf("subscriber %d: id %q after %d", i, ev.ID, s.last)
			}
			if seen, ok := ticks[ev.ID]; ok && seen != ev.Data {
				t.Fatalf("subscriber %d got tick %s as %s, another subscriber as %s: two upstream calls", i, ev.ID, ev.Data, seen)
			}
			ticks[ev.ID] = ev.Data
			s.last = id
			got++
		}
	}
	all := make([]*sub, subs)
	for i := range all {
		all[i] = &sub{}
		connect(all[i])
		t.Cleanup(func() { all[i].stop() })
		read(i, all[i], 2)
	}
	for range 2 {
		reloaded()
		// One after the other, as after their maximum stream duration.
		for i, s := range all {
			s.stop()
			connect(s)
			read(i, s, 3)
		}
	}
}
