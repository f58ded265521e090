package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// openServerStream opens a call of m that takes one request (a unary or
// server-streaming method, as SSE serves them), sends req and half-closes.
// A non-nil status means the call could not start. Responses arrive as
// wire bytes: RecvMsg takes a *rawFrame.
func openServerStream(ctx context.Context, m *method, req proto.Message) (grpc.ClientStream, *status.Status) {
	stream, err := m.conn.NewStream(ctx, &m.streamDesc, m.path, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return nil, statusFromError(err)
	}
	// On io.EOF the call has already ended; RecvMsg returns its status.
	if err := stream.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, statusFromError(err)
	}
	_ = stream.CloseSend() // always nil for client streams
	return stream, nil
}

// recvStatus is the final status of a call whose RecvMsg returned err:
// io.EOF is the backend's OK, anything else its error.
func recvStatus(err error) *status.Status {
	if errors.Is(err, io.EOF) {
		return status.New(codes.OK, "")
	}
	return statusFromError(err)
}

// headersJSON renders the allow-listed response headers for the SSE
// headers event.
func (h *Handler) headersJSON(hdr metadata.MD) []byte {
	data, _ := json.Marshal(h.responseMD.responseMetadata(hdr)) // a map of strings always marshals
	return data
}

// recvWire receives the next response of a stream that openServerStream
// opened, as wire bytes: wire is valid until free is called. A non-nil
// status is the call's final one.
func recvWire(stream grpc.ClientStream, f *rawFrame) (wire []byte, st *status.Status) {
	if err := stream.RecvMsg(f); err != nil {
		return nil, recvStatus(err)
	}
	if len(f.data) == 1 {
		return f.data[0].ReadOnlyData(), nil
	}
	return f.data.Materialize(), nil
}

// eventID is the SSE id of a response: its cursor field when the method
// has one, or else its position seq in the stream.
func eventID(m *method, msg proto.Message, seq uint64) string {
	if m.cursor != nil {
		return formatCursor(msg.ProtoReflect().Get(m.cursor), m.cursor)
	}
	return strconv.FormatUint(seq, 10)
}
