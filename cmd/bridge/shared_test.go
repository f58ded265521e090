package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
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
