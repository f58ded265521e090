package bridge

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestWSCloseCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code codes.Code
		want int
	}{
		{codes.OK, 1000},
		{codes.Canceled, 4001},
		{codes.Unknown, 4002},
		{codes.InvalidArgument, 4003},
		{codes.DeadlineExceeded, 4004},
		{codes.NotFound, 4005},
		{codes.AlreadyExists, 4006},
		{codes.PermissionDenied, 4007},
		{codes.ResourceExhausted, 4008},
		{codes.FailedPrecondition, 4009},
		{codes.Aborted, 4010},
		{codes.OutOfRange, 4011},
		{codes.Unimplemented, 4012},
		{codes.Internal, 4013},
		{codes.Unavailable, 4014},
		{codes.DataLoss, 4015},
		{codes.Unauthenticated, 4016},
		// Outside gRPC's codes: UNKNOWN, never outside 4000-4999.
		{codes.Code(17), 4002},
		{codes.Code(1 << 20), 4002},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			t.Parallel()
			if got := wsCloseCode(tt.code); got != tt.want {
				t.Errorf("wsCloseCode(%v) = %d, want %d", tt.code, got, tt.want)
			}
		})
	}
}
