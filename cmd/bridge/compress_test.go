package main

import (
	"compress/gzip"
	"net/http"
	"testing"

	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// TestMethodConfigCompression: a methods entry with only compression turns
// SSE gzip on for the method and keeps the SSE options of its proto (the
// ticker's cursor field, seq, is still each event's id).
func TestMethodConfigCompression(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `demo: true
methods:
  demo.v1.TickerService/Watch:
    compression: {sse: true}
`)
	cfg, err := parseFlags([]string{"-config", path})
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Methods["demo.v1.TickerService/Watch"]
	if got.Compression == nil || *got.Compression != (CompressionConfig{SSE: true}) || got.hasSSE() {
		t.Fatalf("method config %+v (compression %+v), want only SSE compression", got, got.Compression)
	}
	base := startBridge(t, cfg)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/demo.v1.TickerService/Watch?symbol=ACME&interval_ms=1&after_seq=41&limit=1", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", ce)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := bridgetest.NewSSEReader(zr)
	for {
		ev, err := r.Next()
		if err != nil {
			t.Fatalf("read ticks: %v", err)
		}
		if ev.Type == "message" {
			if ev.ID != "42" {
				t.Fatalf("first tick's id %q, want 42 (the proto's cursor field, seq)", ev.ID)
			}
			return
		}
	}
}
