package bridge_test

import (
	"net/netip"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
)

func TestGRPCPassThroughInternalNetworksOnly(t *testing.T) {
	t.Parallel()
	t.Run("loopback is internal by default", func(t *testing.T) {
		t.Parallel()
		env := newPTEnv(t, nil)
		if _, err := testv1.NewInspectServiceClient(env.conn).InspectOnce(t.Context(), &testv1.InspectRequest{}); err != nil {
			t.Fatalf("call from 127.0.0.1: %v", err)
		}
	})
	t.Run("caller outside the networks", func(t *testing.T) {
		t.Parallel()
		env := newPTEnv(t, nil, bridge.WithNativeGRPCNetworks(netip.MustParsePrefix("10.9.0.0/16")))
		_, err := testv1.NewInspectServiceClient(env.conn).InspectOnce(t.Context(), &testv1.InspectRequest{})
		wantStatus(t, err, codes.PermissionDenied,
			"native gRPC is served to internal networks only, and 127.0.0.1 is not in one; browsers use SSE or WebSockets")
		// The bridge's own health service stays open: it tells nothing.
		resp, err := healthpb.NewHealthClient(env.conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health: %v %v", resp, err)
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		env := newPTEnv(t, nil, bridge.WithNativeGRPCNetworks())
		_, err := testv1.NewInspectServiceClient(env.conn).InspectOnce(t.Context(), &testv1.InspectRequest{})
		wantStatus(t, err, codes.PermissionDenied, "")
	})
}
