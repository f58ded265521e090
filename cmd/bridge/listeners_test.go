package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// getJSON is get that also returns the Content-Type.
func getJSON(t *testing.T, url string) (int, string, string) {
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
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestAdminListener(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-admin-addr", "127.0.0.1:0", "-metrics-namespace", "edge"})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
	if code, _ := get(t, b.url+"/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1"); code != http.StatusOK {
		t.Fatalf("ticker: %d", code)
	}

	// The admin listener: metrics, readiness with its reasons, liveness.
	code, body := get(t, b.adminURL+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `edge_streams_finished_total{code="OK",method="demo.v1.TickerService/Watch",transport="sse"} 1`) {
		t.Fatalf("admin /metrics: %d, without the ticker's stream:\n%.400s", code, body)
	}
	if body := pollReady(t, b.adminURL+"/readyz", http.StatusOK); body != "ready\n" {
		t.Fatalf("admin /readyz %q", body)
	}
	if code, body := get(t, b.adminURL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("admin /healthz: %d %q", code, body)
	}
	// ... and nothing of the bridge.
	if code, _ := get(t, b.adminURL+"/demo.v1.TickerService/Watch?symbol=A&limit=1"); code != http.StatusNotFound {
		t.Fatalf("the bridge on the admin listener: %d, want 404", code)
	}

	// The public port: no metrics, bodies that name nothing.
	if code, ct, body := getJSON(t, b.url+"/metrics"); code != http.StatusNotFound || ct != "application/json" || strings.Contains(body, "edge_") {
		t.Fatalf("public /metrics: %d %s %.200q, want the bridge's JSON 404", code, ct, body)
	}
	if body := pollReady(t, b.url+"/readyz", http.StatusOK); body != "ready\n" {
		t.Fatalf("public /readyz %q", body)
	}
	if code, body := get(t, b.url+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("public /healthz: %d %q", code, body)
	}
}

// dialInsecure connects a gRPC client to addr in cleartext HTTP/2.
func dialInsecure(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// watchTicks calls demo.v1.TickerService/Watch over native gRPC for limit
// ticks and returns how many arrived, and the call's final error (nil for
// OK).
func watchTicks(t *testing.T, conn *grpc.ClientConn, limit int32) (int, error) {
	t.Helper()
	stream, err := demov1.NewTickerServiceClient(conn).Watch(t.Context(), &demov1.WatchRequest{Symbol: "G", Limit: limit, IntervalMs: 1})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		n++
	}
}

func TestGRPCListener(t *testing.T) {
	t.Parallel()
	// -h2c, so that the public port speaks HTTP/2 and a gRPC client gets
	// its answer rather than a failed connection.
	cfg, err := parseFlags([]string{"-demo", "-h2c", "-grpc-addr", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))

	internal := dialInsecure(t, b.grpcAddr)
	if n, err := watchTicks(t, internal, 2); err != nil || n != 2 {
		t.Fatalf("Watch on the gRPC listener: %d ticks, %v; want 2, OK", n, err)
	}
	if resp, err := healthpb.NewHealthClient(internal).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health on the gRPC listener: %v %v", resp, err)
	}

	public := dialInsecure(t, strings.TrimPrefix(b.url, "http://"))
	_, err = watchTicks(t, public, 1)
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "native gRPC is served on the internal port only" {
		t.Fatalf("Watch on the public port: %v, want PERMISSION_DENIED naming no address", err)
	}
	if code, body := get(t, b.url+"/demo.v1.TickerService/Watch?symbol=A&limit=1"); code != http.StatusOK || !strings.Contains(body, "event: end") {
		t.Fatalf("SSE on the public port: %d %q", code, body)
	}

	// The gRPC listener serves native gRPC and nothing else.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/demo.v1.TickerService/Watch?symbol=A&limit=1"} {
		if code, ct, body := getJSON(t, "http://"+b.grpcAddr+path); code != http.StatusNotFound || ct != "application/json" {
			t.Errorf("GET %s on the gRPC listener: %d %s %q, want a JSON 404", path, code, ct, body)
		}
	}
}

func TestGRPCOnThePublicPortWithoutGRPCAddr(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-h2c"})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
	if n, err := watchTicks(t, dialInsecure(t, strings.TrimPrefix(b.url, "http://")), 2); err != nil || n != 2 {
		t.Fatalf("Watch on the public port: %d ticks, %v; want 2, OK", n, err)
	}
}

// TestShutdownDelay is the drain of design.md's "Command line": on SIGTERM
// /readyz turns 503 at once, the bridge keeps serving new requests for the
// shutdown delay, then streams get their hand-off and the process exits
// within the drain timeout.
func TestShutdownDelay(t *testing.T) {
	t.Parallel()
	const delay = 3 * time.Second
	cfg, err := parseFlags([]string{"-demo", "-admin-addr", "127.0.0.1:0", "-grpc-addr", "127.0.0.1:0",
		"-shutdown-delay", delay.String(), "-drain-timeout", "5s", "-retry", "1500ms"})
	if err != nil {
		t.Fatal(err)
	}
	b := startTestBridge(t, cfg, slog.New(slog.DiscardHandler))
	pollReady(t, b.url+"/readyz", http.StatusOK)
	watch := func() *bridgetest.SSEReader {
		t.Helper()
		resp, err := http.Get(b.url + "/demo.v1.TickerService/Watch?symbol=A&interval_ms=5")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("ticker: %d", resp.StatusCode)
		}
		r := bridgetest.NewSSEReader(resp.Body)
		readTicks(t, r, 1)
		return r
	}
	before := watch()

	stopped := time.Now()
	b.stop() // what SIGTERM does through signal.NotifyContext
	if body := pollReady(t, b.url+"/readyz", http.StatusServiceUnavailable); body != "not ready\n" {
		t.Fatalf("public /readyz while draining %q", body)
	}
	if code, body := get(t, b.adminURL+"/readyz"); code != http.StatusServiceUnavailable || body != "not ready: draining\n" {
		t.Fatalf("admin /readyz while draining: %d %q", code, body)
	}
	// New requests are still served: SSE on the public port, native gRPC
	// on the gRPC listener.
	after := watch()
	if n, err := watchTicks(t, dialInsecure(t, b.grpcAddr), 1); err != nil || n != 1 {
		t.Fatalf("Watch during the shutdown delay: %d ticks, %v", n, err)
	}
	// The gRPC health service says NOT_SERVING at once too, while calls
	// are still served.
	hc, err := healthpb.NewHealthClient(dialInsecure(t, b.grpcAddr)).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health during the shutdown delay: %v, %v; want NOT_SERVING", hc, err)
	}
	if elapsed := time.Since(stopped); elapsed >= delay {
		t.Fatalf("the checks took %v, longer than the delay %v: too slow a machine to tell", elapsed, delay)
	}

	// Then every stream gets its hand-off, not before the delay.
	for name, r := range map[string]*bridgetest.SSEReader{"stream opened before SIGTERM": before, "stream opened after SIGTERM": after} {
		if last := lastEvent(r); last.Type != "" || last.Retry != 1500*time.Millisecond {
			t.Errorf("%s: last block %+v, want a lone retry hint", name, last)
		}
		if elapsed := time.Since(stopped); elapsed < delay {
			t.Errorf("%s ended %v after SIGTERM, before the shutdown delay %v", name, elapsed, delay)
		}
	}
	select {
	case <-b.exited:
	case <-time.After(delay + cfg.DrainTimeout - time.Since(stopped)):
		t.Fatal("serve did not return within the shutdown delay plus the drain timeout")
	}
}
