package main

import (
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

	cfg, err := parseFlags([]string{"-backend", addr, "-expose", "demo.v1.*"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	if body := pollReady(t, base+"/readyz", http.StatusOK); body != "ready\n" {
		t.Fatalf("ready body %q", body)
	}

	backend.Stop()
	if body := pollReady(t, base+"/readyz", http.StatusServiceUnavailable); !strings.Contains(body, "backend "+addr) {
		t.Fatalf("not-ready body %q does not name the backend", body)
	}

	// The backend comes back on the same address.
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again to restart the backend: %v", addr, err)
	}
	backend = demo.NewServer()
	go func() { _ = backend.Serve(lis) }()
	t.Cleanup(backend.Stop)
	pollReady(t, base+"/readyz", http.StatusOK)
}

func TestReadinessWhileDraining(t *testing.T) {
	t.Parallel()
	rd := &readiness{}
	rec := httptest.NewRecorder()
	rd.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("no backends, not draining: %d", rec.Code)
	}
	rd.draining.Store(true)
	rec = httptest.NewRecorder()
	rd.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "draining") {
		t.Fatalf("draining: %d %q", rec.Code, rec.Body.String())
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
