package bridge_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
)

// serveGRPCPort serves the handler's GRPCHandler over HTTP/1.1 and h2c, as
// an internal port, and returns a gRPC client connected to it and its URL.
func serveGRPCPort(t *testing.T, h *bridge.Handler) (*grpc.ClientConn, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h.GRPCHandler())
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	conn, err := grpc.NewClient(srv.Listener.Addr().String(), grpcInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, srv.URL
}

// jsonStatus sends a request and returns its HTTP status and its JSON
// google.rpc.Status, failing unless the body is one.
func jsonStatus(t *testing.T, tr *http.Transport, method, url, contentType string) (int, codes.Code, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader("\x00\x00\x00\x00\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: HTTP %d %s %q, want a JSON status", method, url, resp.StatusCode, ct, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("%s %s: %q: %v", method, url, body, err)
	}
	return resp.StatusCode, st.Code, st.Message
}

func TestGRPCHandlerIsTheOnlyNativeGRPCPort(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil, bridge.WithNativeGRPCOnlyOnGRPCHandler())
	internal, internalURL := serveGRPCPort(t, env.handler)

	// Not parallel: no other call may start while it checks that none did.
	t.Run("the public handler refuses native gRPC", func(t *testing.T) {
		_, err := testv1.NewInspectServiceClient(env.conn).InspectOnce(t.Context(), &testv1.InspectRequest{})
		wantStatus(t, err, codes.PermissionDenied, "native gRPC is served on the internal port only")
		_, err = healthpb.NewHealthClient(env.conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		wantStatus(t, err, codes.PermissionDenied, "native gRPC is served on the internal port only")
		select {
		case m := <-env.metrics.started:
			t.Fatalf("the refused call reached the backend: %s started", m)
		default:
		}
	})
	t.Run("over HTTP/1.1 the refusal is JSON", func(t *testing.T) {
		t.Parallel()
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		code, c, msg := jsonStatus(t, tr, http.MethodPost, env.url+"/demo.v1.EchoService/Echo", "application/grpc")
		if code != http.StatusForbidden || c != codes.PermissionDenied || msg != "native gRPC is served on the internal port only" {
			t.Fatalf("HTTP %d %s %q, want 403 PERMISSION_DENIED", code, c, msg)
		}
	})
	t.Run("the public handler still serves browsers", func(t *testing.T) {
		t.Parallel()
		resp, err := http.Get(env.url + "/bridgetest.v1.InspectService/InspectOnce?name=x")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("SSE on the public handler: HTTP %d", resp.StatusCode)
		}
	})
	t.Run("the gRPC port serves pass-through and health", func(t *testing.T) {
		t.Parallel()
		if _, err := testv1.NewInspectServiceClient(internal).InspectOnce(t.Context(), &testv1.InspectRequest{}); err != nil {
			t.Fatalf("pass-through on the gRPC port: %v", err)
		}
		resp, err := healthpb.NewHealthClient(internal).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health on the gRPC port: %v %v", resp, err)
		}
	})
	t.Run("the gRPC port serves nothing else", func(t *testing.T) {
		t.Parallel()
		h2c := &http.Transport{Protocols: new(http.Protocols)}
		h2c.Protocols.SetUnencryptedHTTP2(true)
		defer h2c.CloseIdleConnections()
		h1 := &http.Transport{}
		defer h1.CloseIdleConnections()
		for _, tt := range []struct {
			name, method, path, contentType string
			tr                              *http.Transport
			wantHTTP                        int
			wantCode                        codes.Code
			wantMessage                     string
		}{
			{"SSE GET", http.MethodGet, "/bridgetest.v1.InspectService/InspectOnce?name=x", "", h1, http.StatusNotFound, codes.NotFound, "serves native gRPC only"},
			{"SSE POST", http.MethodPost, "/bridgetest.v1.InspectService/InspectOnce", "application/json", h1, http.StatusUnsupportedMediaType, codes.InvalidArgument, "is not gRPC"},
			{"healthz", http.MethodGet, "/healthz", "", h2c, http.StatusNotFound, codes.NotFound, "serves native gRPC only"},
			{"gRPC-Web", http.MethodPost, "/demo.v1.EchoService/Echo", "application/grpc-web+proto", h2c, http.StatusUnsupportedMediaType, codes.InvalidArgument, "gRPC-Web is not served"},
			{"gRPC over HTTP/1.1", http.MethodPost, "/demo.v1.EchoService/Echo", "application/grpc", h1, http.StatusHTTPVersionNotSupported, codes.InvalidArgument, "native gRPC needs HTTP/2"},
		} {
			code, c, msg := jsonStatus(t, tt.tr, tt.method, internalURL+tt.path, tt.contentType)
			if code != tt.wantHTTP || c != tt.wantCode || !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("%s: HTTP %d %s %q, want %d %s saying %q", tt.name, code, c, msg, tt.wantHTTP, tt.wantCode, tt.wantMessage)
			}
		}
	})
}

func TestGRPCHandlerKeepsTheCallerPolicy(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, nil,
		bridge.WithNativeGRPCOnlyOnGRPCHandler(),
		bridge.WithNativeGRPCNetworks(netip.MustParsePrefix("10.9.0.0/16")))
	internal, _ := serveGRPCPort(t, env.handler)
	_, err := testv1.NewInspectServiceClient(internal).InspectOnce(t.Context(), &testv1.InspectRequest{})
	if st := wantStatus(t, err, codes.PermissionDenied, ""); !strings.Contains(st.Message(), "internal networks only") {
		t.Fatalf("refusal %q, want the caller-network refusal", st.Message())
	}
}

func TestGRPCHandlerWithoutTheOption(t *testing.T) {
	t.Parallel()
	// Without WithNativeGRPCOnlyOnGRPCHandler, both serve native gRPC.
	env := newPTEnv(t, nil)
	internal, _ := serveGRPCPort(t, env.handler)
	for name, conn := range map[string]*grpc.ClientConn{"public": env.conn, "gRPC port": internal} {
		if _, err := testv1.NewInspectServiceClient(conn).InspectOnce(t.Context(), &testv1.InspectRequest{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
