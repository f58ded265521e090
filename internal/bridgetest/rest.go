package bridgetest

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
)

// RestServer implements bridgetest.v1.RestService: every method answers as
// [InspectServer.InspectOnce] does, after sending the request's
// response_headers and setting its response_trailers; with hold it waits
// for the call to end. It counts the calls it receives and reports their
// endings on its InspectServer's Ended channel, so that tests can tell
// whether the bridge called the backend and whether it cancelled the call.
type RestServer struct {
	testv1.UnimplementedRestServiceServer
	Inspect *InspectServer
	calls   atomic.Int64
}

// NewRestServer returns a server with a fresh [InspectServer] inside.
func NewRestServer() *RestServer {
	return &RestServer{Inspect: NewInspectServer()}
}

// Calls returns the number of calls received so far, of any method.
func (s *RestServer) Calls() int {
	return int(s.calls.Load())
}

func (s *RestServer) serve(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	s.calls.Add(1)
	if len(req.GetResponseHeaders()) > 0 {
		if err := grpc.SetHeader(ctx, metadata.New(req.GetResponseHeaders())); err != nil {
			return nil, err
		}
	}
	if len(req.GetResponseTrailers()) > 0 {
		if err := grpc.SetTrailer(ctx, metadata.New(req.GetResponseTrailers())); err != nil {
			return nil, err
		}
	}
	if req.GetHold() {
		<-ctx.Done()
		s.Inspect.ended(ctx)
		return nil, ctx.Err()
	}
	return s.Inspect.InspectOnce(ctx, req)
}

// Get implements RestService.Get.
func (s *RestServer) Get(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}

// Create implements RestService.Create.
func (s *RestServer) Create(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}

// Update implements RestService.Update.
func (s *RestServer) Update(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}

// Patch implements RestService.Patch.
func (s *RestServer) Patch(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}

// Delete implements RestService.Delete.
func (s *RestServer) Delete(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}

// Purge implements RestService.Purge.
func (s *RestServer) Purge(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}

// Touch implements RestService.Touch.
func (s *RestServer) Touch(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}

// Peek implements RestService.Peek.
func (s *RestServer) Peek(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	return s.serve(ctx, req)
}
