package bridgetest

import (
	"context"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
)

// InspectServer implements bridgetest.v1.InspectService: it answers with
// what it received, so tests can see the request and metadata the bridge
// built. Ended receives the context error of every call when it returns, so
// tests can observe that the bridge cancelled an upstream call.
type InspectServer struct {
	testv1.UnimplementedInspectServiceServer
	Ended chan error
}

// NewInspectServer returns a server whose Ended channel holds up to 16
// unread call endings; further endings are dropped rather than blocking.
func NewInspectServer() *InspectServer {
	return &InspectServer{Ended: make(chan error, 16)}
}

// Inspect implements InspectService.Inspect.
func (s *InspectServer) Inspect(req *testv1.InspectRequest, stream grpc.ServerStreamingServer[testv1.InspectResponse]) error {
	ctx := stream.Context()
	defer s.ended(ctx)
	if len(req.GetResponseHeaders()) > 0 {
		if err := stream.SendHeader(metadata.New(req.GetResponseHeaders())); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.New(req.GetResponseTrailers()))
	if req.GetHold() {
		<-ctx.Done()
		return ctx.Err()
	}
	count := max(req.GetCount(), 1)
	for i := range count {
		if i > 0 && req.GetIntervalMs() > 0 {
			select {
			case <-time.After(time.Duration(req.GetIntervalMs()) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := stream.Send(response(ctx, req, uint64(i)+1)); err != nil {
			return err
		}
	}
	if c := req.GetFailCode(); c != 0 {
		return status.Errorf(codes.Code(c), "inspect: failing with %s as asked", codes.Code(c))
	}
	return nil
}

// InspectOnce implements InspectService.InspectOnce.
func (s *InspectServer) InspectOnce(ctx context.Context, req *testv1.InspectRequest) (*testv1.InspectResponse, error) {
	defer s.ended(ctx)
	if c := req.GetFailCode(); c != 0 {
		return nil, status.Errorf(codes.Code(c), "inspect: failing with %s as asked", codes.Code(c))
	}
	return response(ctx, req, 1), nil
}

func (s *InspectServer) ended(ctx context.Context) {
	select {
	case s.Ended <- ctx.Err():
	default:
	}
}

func response(ctx context.Context, req *testv1.InspectRequest, seq uint64) *testv1.InspectResponse {
	md, _ := metadata.FromIncomingContext(ctx)
	flat := make(map[string]string, len(md))
	for k, vs := range md {
		flat[k] = strings.Join(vs, ", ")
	}
	return &testv1.InspectResponse{
		Request:  req,
		Metadata: flat,
		Seq:      seq,
		Cursor:   req.GetCursorPrefix() + strconv.FormatUint(req.GetAfter()+seq, 10),
	}
}
