package demo_test

import (
	"slices"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

func TestNewServerHealth(t *testing.T) {
	c := healthpb.NewHealthClient(dialDemo(t))
	for _, service := range []string{"", "demo.v1.TickerService", "demo.v1.ChatService", "demo.v1.EchoService"} {
		resp, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", service, resp.GetStatus())
		}
	}
}

func TestNewServerReflection(t *testing.T) {
	c := reflectionpb.NewServerReflectionClient(dialDemo(t))
	stream, err := c.ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	req := &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}
	if err := stream.Send(req); err != nil {
		t.Fatalf("Send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{
		demov1.TickerService_ServiceDesc.ServiceName,
		demov1.ChatService_ServiceDesc.ServiceName,
		demov1.EchoService_ServiceDesc.ServiceName,
		healthpb.Health_ServiceDesc.ServiceName,
	} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}
