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
		return nil, m.callStatus(ctx, err)
	}
	// On io.EOF the call has already ended; RecvMsg returns its status.
	if err := stream.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, m.callStatus(ctx, err)
	}
	_ = stream.CloseSend() // always nil for client streams
	return stream, nil
}

// callStatus is the status a browser gets when an upstream call of m ended
// with err: OK for io.EOF (the backend's OK), the backend's status as it
// is, and a status the gRPC client made about the connection without its
// internal details (see [publicStatus]). ctx is the call's context.
func (m *method) callStatus(ctx context.Context, err error) *status.Status {
	if errors.Is(err, io.EOF) {
		return status.New(codes.OK, "")
	}
	return publicStatus(ctx, m.log, m.name, statusFromError(err))
}

// checkRequest reports why data is not the wire form of a request of m,
// or nil when it is, as proto.Unmarshal would decide. The request frames
// of WebSocket and session calls go to the backend as they are, so this is
// their only decode: wirejson, which is exact or declines, transcodes into
// a scratch buffer without allocating; only what it declines (a type it
// does not handle, or invalid input) is decoded, which also explains the
// error.
func (m *method) checkRequest(data []byte) error {
	if m.inputJSON != nil {
		scratch := getSSEBuf()
		scratch, ok := m.inputJSON.AppendJSON(scratch, data)
		putSSEBuf(scratch)
		if ok {
			return nil
		}
	}
	if err := proto.Unmarshal(data, m.input.New().Interface()); err != nil {
		return explainDecodeError(m.input.Descriptor(), data, err)
	}
	return nil
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
func (m *method) recvWire(stream grpc.ClientStream, f *rawFrame) (wire []byte, st *status.Status) {
	if err := stream.RecvMsg(f); err != nil {
		return nil, m.callStatus(stream.Context(), err)
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
