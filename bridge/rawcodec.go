package bridge

import (
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Messages as raw bytes: every transport relays a response (and the
// WebSocket and native gRPC transports a request) as the bytes the other
// side sent, without decoding and re-encoding it.

// rawFrame is one gRPC message as it travels on the wire (after
// decompression): [rawCodec] receives it without decoding and sends it
// without encoding. Between the two it holds one reference to each of its
// buffers; the send hands them to grpc-go, which frees them once written.
// A frame is used by one goroutine at a time.
type rawFrame struct {
	data mem.BufferSlice
}

// free releases the buffers that a send did not take.
func (f *rawFrame) free() {
	f.data.Free()
	f.data = nil
}

// protoCodec is grpc-go's protobuf codec, for the messages of the health
// service, which the server's forced codec also carries.
var protoCodec = encoding.GetCodecV2(protoenc.Name)

// rawCodec is the codec of the pass-through server and its upstream calls.
// A [*rawFrame] passes untouched, in both directions, without a copy; every
// other value (the health service's messages) is protobuf.
type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*rawFrame)
	if !ok {
		return protoCodec.Marshal(v)
	}
	out := f.data
	f.data = nil // handed over to grpc-go with its references
	return out, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	// grpc-go frees data when Unmarshal returns: keep a reference until
	// the frame is sent.
	data.Ref()
	f.data = data
	return nil
}

// Name is empty so that an upstream call of a bare application/grpc
// request stays bare: grpc-go derives the content-subtype of a call from
// the forced codec's name, and the caller's own is set explicitly.
func (rawCodec) Name() string { return "" }
