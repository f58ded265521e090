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
// A non-nil status means the call could not start.
func openServerStream(ctx context.Context, m *method, req proto.Message) (grpc.ClientStream, *status.Status) {
	stream, err := m.conn.NewStream(ctx, &m.streamDesc, m.path)
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

// eventID is the SSE id of a response: its cursor field when the method
// has one, or else its position seq in the stream.
func eventID(m *method, msg proto.Message, seq uint64) string {
	if m.cursor != nil {
		return cursorID(msg, m.cursor)
	}
	return strconv.FormatUint(seq, 10)
}
