package bridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"

	"google.golang.org/grpc/codes"
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
