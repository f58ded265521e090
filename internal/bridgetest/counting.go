package bridgetest

import (
	"sync/atomic"

	"google.golang.org/grpc"

	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
)

// CountingInspectServer is an [InspectServer] that also counts the
// Inspect calls it has received, so that tests can tell how many upstream
// calls the bridge opened.
type CountingInspectServer struct {
	*InspectServer
	calls atomic.Int64
}

// NewCountingInspectServer returns a counting server with a fresh
// [InspectServer] inside.
func NewCountingInspectServer() *CountingInspectServer {
	return &CountingInspectServer{InspectServer: NewInspectServer()}
}

// Inspect counts the call, then serves it as [InspectServer.Inspect] does.
func (s *CountingInspectServer) Inspect(req *testv1.InspectRequest, stream grpc.ServerStreamingServer[testv1.InspectResponse]) error {
	s.calls.Add(1)
	return s.InspectServer.Inspect(req, stream)
}

// Calls returns the number of Inspect calls received so far.
func (s *CountingInspectServer) Calls() int {
	return int(s.calls.Load())
}
