package demo

import (
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// MaxStreamPayload is the largest payload a Stream call may ask for. It
// leaves 64 bytes of the 4 MiB default gRPC message limit for the rest of
// the EchoResponse, so every response fits a client with default settings.
const MaxStreamPayload = 4<<20 - 64

// EchoServer implements demov1.EchoServiceServer, a backend whose behaviour
// conformance and load tests control through their requests. The zero value
// is ready to use.
type EchoServer struct {
	demov1.UnimplementedEchoServiceServer
}

// Echo answers each request with its text and payload and a seq counting
// from 1 per call, and ends normally when the client half-closes.
func (EchoServer) Echo(stream grpc.BidiStreamingServer[demov1.EchoRequest, demov1.EchoResponse]) error {
	var seq uint64
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		seq++
		resp := &demov1.EchoResponse{Text: req.GetText(), Payload: req.GetPayload(), Seq: seq}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Stream sends req.Count responses (forever when 0) carrying req.Size bytes
// of payload and a seq from 1, the first at once and then one every
// req.IntervalMs (as fast as flow control allows when 0). When
// req.FailAfter > 0, the call fails with req.FailCode (UNKNOWN when 0) and
// req.FailMessage once it has sent that many responses, unless Count ended
// it first.
func (EchoServer) Stream(req *demov1.StreamRequest, stream grpc.ServerStreamingServer[demov1.EchoResponse]) error {
	if err := validateStream(req); err != nil {
		return err
	}

	// The payload's content is deterministic so that tests can check it
	// arrived intact. One slice serves every response: it is never
	// modified, and marshalling only reads it.
	payload := make([]byte, req.GetSize())
	for i := range payload {
		payload[i] = byte(i)
	}

	ctx := stream.Context()
	var tick <-chan time.Time
	if req.GetIntervalMs() > 0 {
		ticker := time.NewTicker(time.Duration(req.GetIntervalMs()) * time.Millisecond)
		defer ticker.Stop()
		tick = ticker.C
	}

	count := int64(req.GetCount())
	failAfter := int64(req.GetFailAfter())
	for sent := int64(0); ; {
		if failAfter > 0 && sent == failAfter {
			code := codes.Code(req.GetFailCode())
			if code == codes.OK {
				code = codes.Unknown
			}
			return status.Error(code, req.GetFailMessage())
		}
		if count > 0 && sent == count {
			return nil
		}
		if sent > 0 && tick != nil {
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-tick:
			}
		} else if err := ctx.Err(); err != nil {
			// Without an interval nothing else notices the client leaving
			// until Send fails, which may take a while with buffering.
			return status.FromContextError(err).Err()
		}
		sent++
		if err := stream.Send(&demov1.EchoResponse{Payload: payload, Seq: uint64(sent)}); err != nil {
			return err
		}
	}
}

// validateStream rejects StreamRequests whose fields are out of range.
func validateStream(req *demov1.StreamRequest) error {
	switch {
	case req.GetCount() < 0:
		return status.Error(codes.InvalidArgument, "count must not be negative")
	case req.GetSize() < 0:
		return status.Error(codes.InvalidArgument, "size must not be negative")
	case req.GetSize() > MaxStreamPayload:
		return status.Errorf(codes.InvalidArgument, "size must not exceed %d", MaxStreamPayload)
	case req.GetIntervalMs() < 0:
		return status.Error(codes.InvalidArgument, "interval_ms must not be negative")
	case req.GetFailAfter() < 0:
		return status.Error(codes.InvalidArgument, "fail_after must not be negative")
	case req.GetFailCode() < 0 || req.GetFailCode() > int32(codes.Unauthenticated):
		// 0 is allowed and means UNKNOWN; 1..16 are the gRPC failure codes.
		return status.Error(codes.InvalidArgument, "fail_code must be between 1 and 16, or 0 for UNKNOWN")
	}
	return nil
}
