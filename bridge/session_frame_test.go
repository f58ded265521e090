package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// FuzzDecodeSessionFrame checks the session frame decoder on any input:
// no panic, and every frame it accepts encodes back to exactly the bytes
// it was decoded from (one encoding per frame), with OPEN, WINDOW/ACK and
// HELLO payloads round-tripping too.
func FuzzDecodeSessionFrame(f *testing.F) {
	seeds := [][]byte{
		appendFrame(nil, sessionFrame{typ: frameOpen, seq: 1, call: 1, payload: appendOpen(nil, openPayload{path: "/demo.v1.EchoService/Echo"})}),
		appendFrame(nil, sessionFrame{typ: frameMessage, seq: 2, call: 1, payload: []byte{0x0a, 0x02, 'h', 'i'}}),
		appendFrame(nil, sessionFrame{typ: frameAck, payload: []byte{0xac, 0x02}}),
		appendFrame(nil, sessionFrame{typ: frameHello, payload: appendHello(nil, helloPayload{token: "t", maxCalls: 100, window: 1 << 18})}),
		{0x02, 0x00, 0x80, 0x00, 0x01, 0x00}, // a seq not in its shortest form
		{0x0d, 0x00, 0x00, 0x00, 0x00},       // an unknown type
		{0x02, 0x00, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rest := data
		for len(rest) > 0 {
			fr, next, err := decodeFrame(rest, 1<<20)
			if err != nil {
				return
			}
			consumed := rest[:len(rest)-len(next)]
			if enc := appendFrame(nil, fr); !bytes.Equal(enc, consumed) {
				t.Fatalf("frame %x encodes back as %x", consumed, enc)
			}
			switch fr.typ {
			case frameOpen:
				if o, err := decodeOpen(fr.payload); err == nil {
					if enc := appendOpen(nil, o); !bytes.Equal(enc, fr.payload) {
						t.Fatalf("OPEN payload %x encodes back as %x", fr.payload, enc)
					}
				}
			case frameWindow, frameAck:
				if v, err := decodeUvarintPayload(fr); err == nil {
					if enc := appendUvarintBytes(v); !bytes.Equal(enc, fr.payload) {
						t.Fatalf("%s payload %x encodes back as %x", fr.typ, fr.payload, enc)
					}
				}
			case frameHello:
				if h, err := decodeHello(fr.payload); err == nil {
					if enc := appendHello(nil, h); !bytes.HasPrefix(fr.payload, enc) {
						t.Fatalf("HELLO payload %x does not start with its encoding %x", fr.payload, enc)
					}
				}
			}
			rest = next
		}
	})
}

func appendUvarintBytes(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func TestDecodeFrameRefusals(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{0x0d, 0, 0, 0, 0}},
		{"sequenced without seq", []byte{byte(frameMessage), 0, 0, 1, 0}},
		{"sequenced without call", []byte{byte(frameMessage), 0, 1, 0, 0}},
		{"unsequenced with seq", []byte{byte(frameAck), 0, 1, 0, 1, 0}},
		{"long varint", []byte{byte(frameMessage), 0, 0x81, 0x00, 1, 0}},
		{"truncated payload", []byte{byte(frameMessage), 0, 1, 1, 5, 1}},
		{"control payload too long", append([]byte{byte(framePing), 0, 0, 0, 0x81, 0x80, 0x04}, make([]byte, 65537)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, _, err := decodeFrame(tc.in, 1<<20); err == nil {
				t.Errorf("decodeFrame(%x) accepted it", tc.in)
			}
		})
	}
	big := appendFrame(nil, sessionFrame{typ: frameMessage, seq: 1, call: 1, payload: make([]byte, 11)})
	if _, _, err := decodeFrame(big, 10); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("a MESSAGE over the limit: %v, want errFrameTooLarge", err)
	}
}

func TestSessionTokenRoundTrip(t *testing.T) {
	t.Parallel()
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	tok := sessionToken{id: newSessionID(), expiry: time.Now().Add(time.Hour).Truncate(time.Second), owner: "10.1.2.3:8080"}
	s := tokenKeys{k1}.sign(tok)
	for _, keys := range []tokenKeys{{k1}, {k2, k1}} {
		got, err := keys.verify(s, time.Now())
		if err != nil || got != tok {
			t.Errorf("verify with %d keys: %+v %v, want %+v", len(keys), got, err, tok)
		}
	}
	if _, err := (tokenKeys{k2}).verify(s, time.Now()); !errors.Is(err, errTokenInvalid) {
		t.Errorf("another key: %v, want errTokenInvalid", err)
	}
	if _, err := (tokenKeys{k1}).verify(s, tok.expiry); !errors.Is(err, errTokenExpired) {
		t.Errorf("at expiry: %v, want errTokenExpired", err)
	}
	for _, bad := range []string{"", "x", "a.b", s + "x", "." + s} {
		if _, err := (tokenKeys{k1}).verify(bad, time.Now()); err == nil {
			t.Errorf("verify(%q) accepted it", bad)
		}
	}
}

// TestSessionProtocolExample keeps the bytes of docs/protocol.md's
// session example true.
func TestSessionProtocolExample(t *testing.T) {
	t.Parallel()
	tok := tokenKeys{bytes.Repeat([]byte{7}, 32)}.sign(sessionToken{id: newSessionID(), expiry: time.Now().Add(time.Hour), owner: "127.0.0.1:8080"})
	if len(tok) != 0x60 {
		t.Errorf("a token for 127.0.0.1:8080 is %d bytes, the example says 96", len(tok))
	}
	hello := appendHello(nil, helloPayload{token: tok, maxCalls: defaultSessionMaxCalls, window: defaultSessionWindow,
		maxMessage: defaultReadMaxBytes, graceMs: uint64(defaultSessionGrace.Milliseconds())})
	if want := []byte{0x00, 0x64, 0x80, 0x80, 0x10, 0x80, 0x80, 0x80, 0x02, 0xb0, 0xea, 0x01}; !bytes.HasSuffix(hello, want) || len(hello) != 0x6d {
		t.Errorf("HELLO payload: %d bytes ending % x", len(hello), hello[len(hello)-12:])
	}
	open := appendFrame(nil, sessionFrame{typ: frameOpen, seq: 1, call: 1, payload: appendOpen(nil, openPayload{path: "/demo.v1.EchoService/Echo"})})
	if want := []byte{0x01, 0x00, 0x01, 0x01, 0x1b, 0x00, 0x19}; !bytes.HasPrefix(open, want) {
		t.Errorf("OPEN: % x", open[:7])
	}
	st := encodeStatus(newCodec(protoregistry.GlobalFiles), status.New(codes.OK, ""), nil)
	if string(st) != `{"status":{"code":0,"message":"","details":[]},"trailers":{}}` || len(st) != 0x3d {
		t.Errorf("STATUS payload %s (%d bytes)", st, len(st))
	}
	frames := appendFrame(nil, sessionFrame{typ: frameHeaders, seq: 1, call: 1, payload: encodeHeaders(nil)})
	frames = appendFrame(frames, sessionFrame{typ: frameMessage, seq: 2, call: 1, payload: []byte{0x0a, 0x02, 'h', 'i', 0x18, 0x01}})
	if got := string(appendSessionEvent(nil, frames, 2)); got != "id: 2\ndata: BQABAQ57ImhlYWRlcnMiOnt9fQIAAgEGCgJoaRgB\n\n" {
		t.Errorf("event: %q", got)
	}
}
