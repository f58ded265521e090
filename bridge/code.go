package bridge

import (
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
)

// httpStatusFromCode maps a gRPC code to the HTTP status of an error answered
// before the first byte of a stream, exactly as grpc-gateway does, so that
// the bridge and a grpc-gateway in front of the same service agree.
func httpStatusFromCode(code codes.Code) int {
	return runtime.HTTPStatusFromCode(code)
}

// isTransient reports whether a status is worth retrying as it is: the
// backend is down, unreachable or restarting, or the call was aborted by a
// concurrency conflict. For these, SSE answers 200 with a retry: hint, so the
// browser's EventSource keeps reconnecting (with Last-Event-ID) until the
// backend is back; every other code is final.
func isTransient(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.Aborted:
		return true
	default:
		return false
	}
}
