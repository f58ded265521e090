package main

import (
	"net"
	"strings"
	"testing"

	"github.com/grpcbridge/grpcbridge/internal/demo"
)

func TestResponseMaxBytes(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := demo.NewServer()
	go func() { _ = backend.Serve(lis) }()
	t.Cleanup(backend.Stop)
	cfg, err := parseFlags([]string{"-backend", lis.Addr().String(), "-expose", "demo.v1.*", "-response-max-bytes", "1000"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)

	// Under the limit: delivered.
	if code, body := get(t, base+"/demo.v1.EchoService/Stream?count=1&size=900"); code != 200 || !strings.Contains(body, "event: end") {
		t.Fatalf("900-byte message: %d\n%s", code, body)
	}
	// Over it: the call fails with RESOURCE_EXHAUSTED, whichever way the
	// browser gets it (the backend's headers may or may not have come first).
	code, body := get(t, base+"/demo.v1.EchoService/Stream?count=1&size=2000")
	if !strings.Contains(body, `"code":8`) || (code != 200 && code != 429) {
		t.Fatalf("2000-byte message: %d\n%s\nwant RESOURCE_EXHAUSTED", code, body)
	}
	if strings.Contains(body, "event: message") {
		t.Fatalf("the oversized message was delivered:\n%s", body)
	}
}
