package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// pollReady polls /readyz until its status is want, for up to 30 s (gRPC
// reconnects with backoff), and returns the last body.
func pollReady(t *testing.T, url string, want int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, url)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz stayed %d %q, want %d", code, body, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReadinessFollowsTheBackend(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	backend := demo.NewServer()
	go func() { _ = backend.Serve(lis) }()

	var bridges []*testBridge
	for _, admin := range []bool{false, true} {
		args := []string{"-backend", addr, "-expose", "demo.v1.*"}
		if admin {
			args = append(args, "-admin-addr", "127.0.0.1:0")
		}
		cfg, err := parseFlags(args)
		if err != nil {
			t.Fatal(err)
		}
		b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
		if body := pollReady(t, b.url+"/readyz", http.StatusOK); body != "ready\n" {
			t.Fatalf("ready body %q", body)
		}
		if admin {
			if body := pollReady(t, b.adminURL+"/readyz", http.StatusOK); body != "ready\n" {
				t.Fatalf("admin ready body %q", body)
			}
		}
		bridges = append(bridges, b)
	}

	backend.Stop()
	for _, b := range bridges {
		// The public port names nothing internal, with or without an
		// admin listener.
		if body := pollReady(t, b.url+"/readyz", http.StatusServiceUnavailable); body != "not ready\n" || strings.Contains(body, addr) {
			t.Fatalf("public not-ready body %q, want \"not ready\\n\" without the target %s", body, addr)
		}
		if b.adminURL != "" {
			if body := pollReady(t, b.adminURL+"/readyz", http.StatusServiceUnavailable); !strings.Contains(body, "backend "+addr) {
				t.Fatalf("admin not-ready body %q does not name the backend", body)
			}
		}
	}

	// The backend comes back on the same address.
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again to restart the backend: %v", addr, err)
	}
	backend = demo.NewServer()
	go func() { _ = backend.Serve(lis) }()
	t.Cleanup(backend.Stop)
	for _, b := range bridges {
		pollReady(t, b.url+"/readyz", http.StatusOK)
	}
}

func TestReadinessWhileDraining(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	rd := &readiness{log: slog.New(slog.NewTextHandler(&logs, nil))}
	probe := func(detailed bool) (int, string) {
		rec := httptest.NewRecorder()
		rd.handler(detailed).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := probe(false); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("no backends, not draining: %d %q", code, body)
	}
	if logs.Len() != 0 {
		t.Fatalf("ready from the start, yet logged %q", logs.String())
	}
	rd.draining.Store(true)
	if code, body := probe(true); code != http.StatusServiceUnavailable || body != "not ready: draining\n" {
		t.Fatalf("draining, detailed: %d %q", code, body)
	}
	if code, body := probe(false); code != http.StatusServiceUnavailable || body != "not ready\n" {
		t.Fatalf("draining, public: %d %q", code, body)
	}
	// One log line for the change, none for the probes that saw no change.
	if got := strings.Count(logs.String(), "readiness changed"); got != 1 || !strings.Contains(logs.String(), "reasons=draining") {
		t.Fatalf("logs %q, want one readiness change with reasons=draining", logs.String())
	}
}

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-metrics-namespace", "edge"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	if code, _ := get(t, base+"/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1"); code != http.StatusOK {
		t.Fatalf("ticker: %d", code)
	}
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`edge_streams_finished_total{code="OK",method="demo.v1.TickerService/Watch",transport="sse"} 1`,
		`edge_messages_total{direction="to_client",method="demo.v1.TickerService/Watch",transport="sse"} 2`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
