package bridge

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// statusFromError is the one place that turns an error into the gRPC status
// a browser sees. gRPC statuses pass through; context errors become
// CANCELED and DEADLINE_EXCEEDED; anything else is UNKNOWN without its
// text, which is bridge-internal and must not reach browsers.
func statusFromError(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	if s, ok := status.FromError(err); ok {
		return s
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, context.Canceled.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	return status.New(codes.Unknown, "bridge: internal error")
}

// statusJSON is the JSON form of a google.rpc.Status as browsers get it:
// in error bodies, SSE end and error events, and WebSocket status frames.
// Trailers are present only where the call has them (end of a stream).
type statusJSON struct {
	Code     codes.Code          `json:"code"`
	Message  string              `json:"message"`
	Details  []json.RawMessage   `json:"details"`
	Trailers map[string][]string `json:"trailers,omitzero"` // nil: no trailers key; empty: "trailers":{}
}

// anyJSON stands in for a status detail whose type the schema does not
// know: protojson cannot render it, so its type URL and bytes go as is.
type anyJSON struct {
	Type  string `json:"@type"`
	Value string `json:"value"`
}

// marshalStatus renders st (and trailers, when non-nil) as JSON. Details are
// rendered with the proto3 JSON mapping when enc knows their type.
func marshalStatus(enc *codec, st *status.Status, trailers map[string][]string) []byte {
	p := st.Proto()
	out := statusJSON{
		Code:     codes.Code(p.GetCode()),
		Message:  p.GetMessage(),
		Details:  make([]json.RawMessage, 0, len(p.GetDetails())),
		Trailers: trailers,
	}
	for _, d := range p.GetDetails() {
		b, err := protojson.MarshalOptions{Resolver: enc.types}.Marshal(d)
		if err != nil {
			b, _ = json.Marshal(anyJSON{Type: d.GetTypeUrl(), Value: base64.StdEncoding.EncodeToString(d.GetValue())})
		}
		out.Details = append(out.Details, b)
	}
	b, err := json.Marshal(out)
	if err != nil {
		// Unreachable: every field above marshals. Keep the code at least.
		return []byte(`{"code":2,"message":"bridge: internal error","details":[]}`)
	}
	return b
}

// Statuses that the gRPC client makes on the bridge's behalf, when the
// backend cannot be reached or the connection to it breaks, describe the
// bridge's side of the network: addresses, ports, resolvers, certificates,
// xDS node ids. They are recognised by the texts grpc-go gives them, and a
// browser gets [hiddenStatus] instead: a message it can act on, and the
// request id that finds the detail in the bridge's log. Statuses that the
// backend sent pass unchanged.
var clientMadeMarkers = []string{
	"connection error:",
	"last connection error:",
	"last resolver error:",
	"name resolver error:",
	"produced zero addresses",
	"there is no address available",
	"transport:",
	"transport is closing",
	"error reading from server:",
	"error writing to server:",
	"stream terminated by RST_STREAM",
	"the client connection is closing",
	"unexpected HTTP status code received from server",
	"failed to exit idle mode",
	"while waiting for new LB policy update",
	"all SubConns are in TransientFailure",
	"dial tcp",
	"dial unix",
	"xds:",
	"node ID",
	"x509:",
	"authentication handshake failed",
}

// clientMade reports whether st is a status that the gRPC client made
// about its connection to the backend rather than one the backend sent.
// Only the codes grpc-go gives such statuses are considered.
func clientMade(st *status.Status) bool {
	switch st.Code() {
	case codes.Unavailable, codes.Internal, codes.Unknown:
	default:
		return false
	}
	msg := st.Message()
	for _, m := range clientMadeMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// hiddenMessages are the texts of the statuses that replace client-made
// ones, by code.
var hiddenMessages = map[codes.Code]string{
	codes.Unavailable: "backend unavailable",
	codes.Internal:    "the connection to the backend failed",
	codes.Unknown:     "the backend sent an invalid response",
}

// publicStatus is the status a caller gets for st, an upstream call's
// final status: st itself, unless the gRPC client made it, in which case
// the same code with a message that names nothing internal and a
// google.rpc.RequestInfo detail with the request id. The original goes to
// log at Warn at the same moment, with the same id. ctx is the call's
// context (its outgoing metadata may carry the browser's x-request-id).
func publicStatus(ctx context.Context, log *slog.Logger, method string, st *status.Status) *status.Status {
	if !clientMade(st) {
		return st
	}
	id := requestID(ctx)
	log.LogAttrs(ctx, slog.LevelWarn, "backend call failed",
		slog.String(logKeyMethod, method),
		slog.String(logKeyRequestID, id),
		slog.String(logKeyCode, st.Code().String()),
		slog.String(logKeyMessage, st.Message()))
	hidden := status.New(st.Code(), hiddenMessages[st.Code()])
	if withID, err := hidden.WithDetails(&errdetails.RequestInfo{RequestId: id}); err == nil {
		return withID
	}
	return hidden
}

// maxRequestIDBytes bounds a request id taken from the browser's
// x-request-id: it is echoed in an error and a log line.
const maxRequestIDBytes = 128

// requestID is the id under which a failed call is logged: the
// x-request-id that the call forwards when there is one, else a new
// random id.
func requestID(ctx context.Context) string {
	md, _ := metadata.FromOutgoingContext(ctx)
	if ids := md.Get(mdRequestID); len(ids) > 0 && ids[0] != "" && len(ids[0]) <= maxRequestIDBytes && isPrintableASCII(ids[0]) {
		return ids[0]
	}
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return hex.EncodeToString(b[:])
}

// quoteName quotes a name taken from a client's frame for an error message,
// shortened to a readable length on a UTF-8 boundary.
func quoteName(s string) string {
	if len(s) <= maxQuotedBytes {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q...", truncateUTF8(s, maxQuotedBytes))
}

// truncateUTF8 returns the longest prefix of s of at most n bytes that does
// not end inside a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
