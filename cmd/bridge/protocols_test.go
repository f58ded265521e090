package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

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
