// Package demo implements the demo gRPC services (TickerService, ChatService
// and EchoService) that grpcbridge's examples, conformance and load tests run
// against.
package demo

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// Register registers the three demo services on s. Each call creates its own
// chat hub, so chat rooms are shared by all streams of one registrar but not
// across registrars.
func Register(s grpc.ServiceRegistrar) {
	demov1.RegisterTickerServiceServer(s, TickerServer{})
	demov1.RegisterChatServiceServer(s, NewChatServer())
	demov1.RegisterEchoServiceServer(s, EchoServer{})
}

// NewServer returns a gRPC server, built with opts, that serves the demo
// services, server reflection (so tools such as grpcurl need no .proto
// files) and the standard health service, which reports SERVING both
// overall and for each demo service.
func NewServer(opts ...grpc.ServerOption) *grpc.Server {
	// Bridges may ping it as often as gRPC lets a client (every 10 s), to
	// notice a dead path (cmd/bridge's backend_keepalive); grpc-go's
	// default policy (5 min) would answer that with a too_many_pings
	// GOAWAY. Half of that, so that timer jitter never counts as abuse.
	opts = append([]grpc.ServerOption{grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second})}, opts...)
	s := grpc.NewServer(opts...)
	Register(s)
	reflection.Register(s)

	hs := health.NewServer()
	for _, name := range []string{
		"", // the server as a whole
		demov1.TickerService_ServiceDesc.ServiceName,
		demov1.ChatService_ServiceDesc.ServiceName,
		demov1.EchoService_ServiceDesc.ServiceName,
	} {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s, hs)
	return s
}
