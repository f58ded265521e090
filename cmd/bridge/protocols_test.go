package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// priorKnowledgeClient speaks cleartext HTTP/2 with prior knowledge only,
// as curl --http2-prior-knowledge does.
func priorKnowledgeClient(t *testing.T) *http.Client {
	t.Helper()
	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(transport.CloseIdleConnections)
	return &http.Client{Transport: transport}
}

// TestNativeGRPCInEveryConfiguration calls the bridge with a grpc-go
// client in each configuration of the public port: cleartext by default
// (h2c on, no flag needed), cleartext with h2c off, and TLS (where h2c has
// no effect). Where the port cannot serve native gRPC, the client gets a
// status that says why, not a framing error.
func TestNativeGRPCInEveryConfiguration(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	tlsCreds := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool}))
	for _, tc := range []struct {
		name     string
		args     []string
		tls      bool
		wantCode codes.Code // of both calls; OK: 2 ticks and SERVING
		wantMsg  string
	}{
		{name: "cleartext by default", args: []string{"-demo"}, wantCode: codes.OK},
		{name: "cleartext with -h2c", args: []string{"-demo", "-h2c"}, wantCode: codes.OK},
		{name: "h2c off", args: []string{"-demo", "-h2c=false"}, wantCode: codes.Unavailable, wantMsg: msgH2COff},
		{name: "TLS", args: []string{"-demo", "-tls-cert", certFile, "-tls-key", keyFile}, tls: true, wantCode: codes.OK},
		{name: "TLS with h2c off", args: []string{"-demo", "-tls-cert", certFile, "-tls-key", keyFile, "-h2c=false"}, tls: true, wantCode: codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseFlags(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			addr := strings.TrimPrefix(startBridge(t, cfg), "http://")
			var conn *grpc.ClientConn
			if tc.tls {
				conn, err = grpc.NewClient(addr, tlsCreds)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = conn.Close() })
			} else {
				conn = dialInsecure(t, addr)
			}
			n, err := watchTicks(t, conn, 2)
			if st := status.Convert(err); st.Code() != tc.wantCode || st.Message() != tc.wantMsg || (tc.wantCode == codes.OK && n != 2) {
				t.Errorf("Watch: %d ticks, %v; want %v %q", n, err, tc.wantCode, tc.wantMsg)
			}
			resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
			if st := status.Convert(err); st.Code() != tc.wantCode || st.Message() != tc.wantMsg ||
				(tc.wantCode == codes.OK && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING) {
				t.Errorf("health: %v, %v; want %v %q", resp, err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestHTTP2PriorKnowledgeByDefault(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	resp, err := priorKnowledgeClient(t).Get(base + "/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ids, ended := tickIDs(t, string(body)); resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || ids != "1,2" || !ended {
		t.Fatalf("%s %d, ids %q, ended %v; want HTTP/2 200 with ticks 1,2 and an end", resp.Proto, resp.StatusCode, ids, ended)
	}
	// HTTP/1.1 on the same port, as before.
	if code, body := get(t, base+"/demo.v1.TickerService/Watch?symbol=A&limit=1&interval_ms=1"); code != http.StatusOK || !strings.Contains(body, "event: end") {
		t.Fatalf("HTTP/1.1: %d %q", code, body)
	}
}

func TestH2COffServesHTTP1AndRefusesHTTP2(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-h2c=false"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	if code, body := get(t, base+"/demo.v1.TickerService/Watch?symbol=A&limit=1&interval_ms=1"); code != http.StatusOK || !strings.Contains(body, "event: end") {
		t.Fatalf("HTTP/1.1: %d %q", code, body)
	}
	resp, err := priorKnowledgeClient(t).Get(base + "/demo.v1.TickerService/Watch?symbol=A&limit=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusHTTPVersionNotSupported || resp.Header.Get("Content-Type") != "application/json" ||
		st.Code != int(codes.Unavailable) || st.Message != msgH2COff {
		t.Fatalf("HTTP/2 with h2c off: %d %s %+v, want a JSON 505 that says why", resp.StatusCode, resp.Header.Get("Content-Type"), st)
	}
}

// TestPlaintextGRPCOnTheTLSPortFailsAtOnce: a gRPC client without TLS on
// the TLS port gets UNAVAILABLE at once, with [msgTLSOnly] (tlssniff.go),
// rather than a bare EOF or a wait.
func TestPlaintextGRPCOnTheTLSPortFailsAtOnce(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := selfSigned(t)
	cfg, err := parseFlags([]string{"-demo", "-tls-cert", certFile, "-tls-key", keyFile})
	if err != nil {
		t.Fatal(err)
	}
	conn := dialInsecure(t, strings.TrimPrefix(startBridge(t, cfg), "http://"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != msgTLSOnly || ctx.Err() != nil {
		t.Fatalf("health without TLS on the TLS port: %v (context: %v), want UNAVAILABLE %q before the deadline", err, ctx.Err(), msgTLSOnly)
	}
}

// TestGrpcurl runs grpcurl, the tool a new user reaches for first, against
// the bridge: list and call on a default port (cleartext, no flag), and a
// refusal that says why, at once, with h2c off and with -plaintext on the
// TLS port. It needs the grpcurl binary: $GRPCURL (CI installs a pinned
// version there) or grpcurl on PATH.
func TestGrpcurl(t *testing.T) {
	t.Parallel()
	grpcurl := os.Getenv("GRPCURL")
	if grpcurl == "" {
		var err error
		if grpcurl, err = exec.LookPath("grpcurl"); err != nil {
			t.Skip("no grpcurl: set GRPCURL or put it on PATH")
		}
	}
	run := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, grpcurl, args...).CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("grpcurl %q did not finish within 20s: %s", args, out)
		}
		return string(out), err
	}
	bridgeAddr := func(t *testing.T, args ...string) string {
		t.Helper()
		cfg, err := parseFlags(args)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(startBridge(t, cfg), "http://")
	}
	t.Run("default", func(t *testing.T) {
		t.Parallel()
		addr := bridgeAddr(t, "-demo")
		if out, err := run(t, "-plaintext", addr, "list"); err != nil || !strings.Contains(out, "demo.v1.TickerService\n") || !strings.Contains(out, "grpc.health.v1.Health\n") {
			t.Errorf("grpcurl list: %v\n%s", err, out)
		}
		if out, err := run(t, "-plaintext", "-d", `{"symbol":"ACME"}`, addr, "demo.v1.TickerService/Quote"); err != nil || !strings.Contains(out, `"symbol": "ACME"`) {
			t.Errorf("grpcurl Quote: %v\n%s", err, out)
		}
	})
	t.Run("h2c off", func(t *testing.T) {
		t.Parallel()
		out, err := run(t, "-plaintext", bridgeAddr(t, "-demo", "-h2c=false"), "list")
		if err == nil || !strings.Contains(out, "code = Unavailable desc = "+msgH2COff) {
			t.Errorf("grpcurl list with h2c off: %v\n%s\nwant a failure that says why", err, out)
		}
	})
	t.Run("-plaintext on the TLS port", func(t *testing.T) {
		t.Parallel()
		certFile, keyFile, _ := selfSigned(t)
		out, err := run(t, "-plaintext", bridgeAddr(t, "-demo", "-tls-cert", certFile, "-tls-key", keyFile), "list")
		if err == nil || !strings.Contains(out, "code = Unavailable desc = "+msgTLSOnly) {
			t.Errorf("grpcurl -plaintext list on the TLS port: %v\n%s\nwant a failure that says why", err, out)
		}
	})
}
