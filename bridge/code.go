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

// wsCloseCode maps a call's final gRPC code to the close code of the
// WebSocket close frame that follows the status frame: 1000 (normal
// closure, RFC 6455 section 7.4.1) for OK, and 4000 + code otherwise. Codes
// 4000 to 4999 are the range RFC 6455 section 7.4.2 reserves for private
// use, so no registered close code is reused with another meaning. A code
// outside gRPC's 0 to 16 is UNKNOWN, as the gRPC status code spec says.
// Written as literals so that the table reads like the protocol document.
func wsCloseCode(code codes.Code) int {
	switch code {
	case codes.OK:
		return 1000
	case codes.Canceled:
		return 4001
	case codes.Unknown:
		return 4002
	case codes.InvalidArgument:
		return 4003
	case codes.DeadlineExceeded:
		return 4004
	case codes.NotFound:
		return 4005
	case codes.AlreadyExists:
		return 4006
	case codes.PermissionDenied:
		return 4007
	case codes.ResourceExhausted:
		return 4008
	case codes.FailedPrecondition:
		return 4009
	case codes.Aborted:
		return 4010
	case codes.OutOfRange:
		return 4011
	case codes.Unimplemented:
		return 4012
	case codes.Internal:
		return 4013
	case codes.Unavailable:
		return 4014
	case codes.DataLoss:
		return 4015
	case codes.Unauthenticated:
		return 4016
	default:
		return 4002
	}
}
