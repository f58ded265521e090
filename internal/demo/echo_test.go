package demo_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

func TestEchoRoundTrip(t *testing.T) {
	c := demov1.NewEchoServiceClient(dialDemo(t))
	stream, err := c.Echo(t.Context())
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	for i, text := range []string{"one", "two", ""} {
		payload := []byte(text + "!")
		if err := stream.Send(&demov1.EchoRequest{Text: text, Payload: payload}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if resp.GetText() != text || string(resp.GetPayload()) != string(payload) || resp.GetSeq() != uint64(i+1) {
			t.Errorf("got (%q, %q, %d), want (%q, %q, %d)",
				resp.GetText(), resp.GetPayload(), resp.GetSeq(), text, payload, i+1)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend: %v, want io.EOF", err)
	}
}

// streamAll runs a Stream call and returns its responses and final error
// (nil when it ended normally).
func streamAll(t *testing.T, c demov1.EchoServiceClient, req *demov1.StreamRequest) ([]*demov1.EchoResponse, error) {
	t.Helper()
	stream, err := c.Stream(t.Context(), req)
	if err != nil {
		return nil, err
	}
	var resps []*demov1.EchoResponse
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return resps, nil
		}
		if err != nil {
			return resps, err
		}
		resps = append(resps, resp)
	}
}

// checkSeqs fails the test unless resps has n responses with seq 1..n and
// size bytes of payload i%256 at index i.
func checkSeqs(t *testing.T, resps []*demov1.EchoResponse, n, size int) {
	t.Helper()
	if len(resps) != n {
		t.Fatalf("got %d responses, want %d", len(resps), n)
	}
	for i, resp := range resps {
		if resp.GetSeq() != uint64(i+1) {
			t.Errorf("response %d: seq %d, want %d", i, resp.GetSeq(), i+1)
		}
		p := resp.GetPayload()
		if len(p) != size {
			t.Fatalf("response %d: %d payload bytes, want %d", i, len(p), size)
		}
		for j, b := range p {
			if b != byte(j) {
				t.Fatalf("response %d: payload[%d] = %d, want %d", i, j, b, byte(j))
			}
		}
	}
}

func TestStreamCountAndSize(t *testing.T) {
	c := demov1.NewEchoServiceClient(dialDemo(t))
	for _, tc := range []struct {
		name string
		req  *demov1.StreamRequest
	}{
		{"paced", &demov1.StreamRequest{Count: 5, Size: 300, IntervalMs: 1}},
		{"as fast as possible", &demov1.StreamRequest{Count: 50, Size: 10}},
		{"empty payload", &demov1.StreamRequest{Count: 2}},
		{"largest payload", &demov1.StreamRequest{Count: 1, Size: demo.MaxStreamPayload}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resps, err := streamAll(t, c, tc.req)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			checkSeqs(t, resps, int(tc.req.GetCount()), int(tc.req.GetSize()))
		})
	}
}

func TestStreamFailAfter(t *testing.T) {
	c := demov1.NewEchoServiceClient(dialDemo(t))
	for _, tc := range []struct {
		name string
		req  *demov1.StreamRequest
		sent int
		code codes.Code
	}{
		{"explicit code", &demov1.StreamRequest{FailAfter: 3, FailCode: int32(codes.Unavailable), FailMessage: "try later"}, 3, codes.Unavailable},
		{"default code", &demov1.StreamRequest{Size: 4, FailAfter: 2, FailMessage: "boom"}, 2, codes.Unknown},
		{"paced", &demov1.StreamRequest{Count: 10, IntervalMs: 1, FailAfter: 2, FailCode: int32(codes.Internal), FailMessage: "x"}, 2, codes.Internal},
		{"count reached first", &demov1.StreamRequest{Count: 2, FailAfter: 5, FailCode: int32(codes.Internal)}, 2, codes.OK},
		{"fail at count", &demov1.StreamRequest{Count: 2, FailAfter: 2, FailCode: int32(codes.Aborted), FailMessage: "y"}, 2, codes.Aborted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resps, err := streamAll(t, c, tc.req)
			checkSeqs(t, resps, tc.sent, int(tc.req.GetSize()))
			if tc.code == codes.OK {
				if err != nil {
					t.Fatalf("Stream: %v, want success", err)
				}
				return
			}
			wantStatus(t, err, tc.code, tc.req.GetFailMessage())
		})
	}
}

func TestStreamUntilClientLeaves(t *testing.T) {
	c := demov1.NewEchoServiceClient(dialDemo(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := c.Stream(ctx, &demov1.StreamRequest{Size: 8})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	for i := range 100 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		if resp.GetSeq() != uint64(i+1) {
			t.Fatalf("response %d: seq %d", i, resp.GetSeq())
		}
	}
	cancel()
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	wantStatus(t, err, codes.Canceled, "")
}

func TestStreamValidation(t *testing.T) {
	c := demov1.NewEchoServiceClient(dialDemo(t))
	for _, tc := range []struct {
		name string
		req  *demov1.StreamRequest
	}{
		{"negative count", &demov1.StreamRequest{Count: -1}},
		{"negative size", &demov1.StreamRequest{Size: -1}},
		{"size too large", &demov1.StreamRequest{Size: demo.MaxStreamPayload + 1}},
		{"negative interval", &demov1.StreamRequest{IntervalMs: -1}},
		{"negative fail_after", &demov1.StreamRequest{FailAfter: -1}},
		{"negative fail_code", &demov1.StreamRequest{FailAfter: 1, FailCode: -1}},
		{"fail_code too large", &demov1.StreamRequest{FailAfter: 1, FailCode: 17}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resps, err := streamAll(t, c, tc.req)
			if len(resps) != 0 {
				t.Errorf("got %d responses before the error, want 0", len(resps))
			}
			wantStatus(t, err, codes.InvalidArgument, "")
		})
	}
}
