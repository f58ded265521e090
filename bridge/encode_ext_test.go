package bridge_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// rawStreamBackend serves demo.v1.EchoService/Stream by sending frames as
// they are: each is the wire form of one response, well-formed or not.
// (An Empty whose unknown fields are the frame marshals to exactly the
// frame.)
func rawStreamBackend(t *testing.T, frames ...[]byte) string {
	t.Helper()
	desc := grpc.ServiceDesc{
		ServiceName: "demo.v1.EchoService",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Stream",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				if err := ss.RecvMsg(new(emptypb.Empty)); err != nil {
					return err
				}
				for _, f := range frames {
					m := new(emptypb.Empty)
					m.ProtoReflect().SetUnknown(f)
					if err := ss.SendMsg(m); err != nil {
						return err
					}
				}
				return nil
			},
		}},
	}
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { s.RegisterService(&desc, struct{}{}) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.EchoService"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// Responses become the JSON that protojson gives, whatever the order of
// their fields on the wire and however often a field repeats; a response
// that does not decode ends the stream with INTERNAL.
func TestSSEResponseEncoding(t *testing.T) {
	t.Parallel()
	// seq, then payload, then text twice: the JSON keeps declaration order,
	// and the last text wins.
	outOfOrder := protowire.AppendTag(nil, 3, protowire.VarintType)
	outOfOrder = protowire.AppendVarint(outOfOrder, 1<<40)
	outOfOrder = protowire.AppendTag(outOfOrder, 2, protowire.BytesType)
	outOfOrder = protowire.AppendBytes(outOfOrder, []byte{0, 1, 0xfe, 0xff})
	outOfOrder = protowire.AppendTag(outOfOrder, 1, protowire.BytesType)
	outOfOrder = protowire.AppendString(outOfOrder, "first")
	outOfOrder = protowire.AppendTag(outOfOrder, 99, protowire.BytesType) // unknown: not shown
	outOfOrder = protowire.AppendString(outOfOrder, "ignored")
	outOfOrder = protowire.AppendTag(outOfOrder, 1, protowire.BytesType)
	outOfOrder = protowire.AppendString(outOfOrder, "l\u00e4st \"quoted\" <tag>\n")
	zeros := protowire.AppendTag(nil, 3, protowire.VarintType) // a zero on the wire is still unpopulated
	zeros = protowire.AppendVarint(zeros, 0)
	badUTF8 := protowire.AppendTag(nil, 1, protowire.BytesType)
	badUTF8 = protowire.AppendString(badUTF8, "\xff")

	for _, tc := range []struct {
		name     string
		frames   [][]byte
		wantMsgs int
		wantErr  string // substring of an INTERNAL status; "" for an OK end
	}{
		{"out of order, repeated, unknown fields", [][]byte{outOfOrder, zeros}, 2, ""},
		{"truncated", [][]byte{outOfOrder, {0x0a, 0x05, 'a'}}, 1, "unmarshal"},
		{"invalid UTF-8 in a string", [][]byte{badUTF8}, 0, "unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := rawStreamBackend(t, tc.frames...)
			resp, err := http.Get(url + "/demo.v1.EchoService/Stream")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			evs := events(t, resp)
			msgs := messages(evs)
			if len(msgs) != tc.wantMsgs {
				t.Fatalf("%d messages, want %d: %+v", len(msgs), tc.wantMsgs, evs)
			}
			for i, ev := range msgs {
				var want demov1.EchoResponse
				if err := proto.Unmarshal(tc.frames[i], &want); err != nil {
					t.Fatal(err)
				}
				b, _ := protojson.Marshal(&want)
				var compact bytes.Buffer
				_ = json.Compact(&compact, b)
				if ev.Data != compact.String() {
					t.Errorf("message %d: %s, want protojson's %s", i, ev.Data, compact.String())
				}
			}
			last := evs[len(evs)-1]
			st := decodeStatus(t, last.Data)
			if tc.wantErr == "" {
				if last.Type != "end" || st.Code != codes.OK {
					t.Fatalf("last event %+v, want end OK", last)
				}
				return
			}
			if last.Type != "error" || st.Code != codes.Internal || !strings.Contains(st.Message, tc.wantErr) {
				t.Fatalf("last event %+v, want an INTERNAL error about %q", last, tc.wantErr)
			}
		})
	}
}
