package sessionclient

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func TestDecodeFrameTakesTheProtocolExample(t *testing.T) {
	// docs/protocol.md's example: MESSAGE seq 2, call 1, EchoRequest{text: "hi"},
	// then HALF_CLOSE seq 3, call 1, in one batch.
	b, _ := hex.DecodeString("020002010" + "40a026869" + "0300030100")
	frames, err := DecodeFrames(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 {
		t.Fatalf("got %d frames, want 2", len(frames))
	}
	m, hc := frames[0], frames[1]
	if m.Type != TypeMessage || m.Seq != 2 || m.Call != 1 || !bytes.Equal(m.Payload, []byte{0x0a, 0x02, 'h', 'i'}) {
		t.Errorf("first frame %+v, want MESSAGE seq 2 call 1 0a026869", m)
	}
	if hc.Type != TypeHalfClose || hc.Seq != 3 || hc.Call != 1 || len(hc.Payload) != 0 {
		t.Errorf("second frame %+v, want HALF_CLOSE seq 3 call 1", hc)
	}
	if got := AppendFrame(AppendFrame(nil, m), hc); !bytes.Equal(got, b) {
		t.Errorf("re-encoded as %x, want %x", got, b)
	}
}

func TestDecodeFrameRefusesBadFraming(t *testing.T) {
	for _, tc := range []struct{ name, hex, want string }{
		{"unknown type", "0d00000000", "unknown frame type"},
		{"sequenced without seq", "0200000100", "do not fit"},
		{"unsequenced with seq", "0800010000", "do not fit"},
		{"varint not minimal", "020081000100", "shortest form"},
		{"truncated payload", "0200010105aa", "truncated payload"},
		{"truncated header", "02", "truncated frame header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tc.hex)
			_, err := DecodeFrames(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeFrames(%s) = %v, want an error containing %q", tc.hex, err, tc.want)
			}
		})
	}
}

func TestHelloRoundTripIgnoresLaterFields(t *testing.T) {
	h := Hello{Token: "tok.mac", Ack: 3, MaxCalls: 100, Window: 262144, MaxMessage: 4 << 20, GraceMs: 30000}
	b := append(AppendHello(nil, h), 0x07, 0x01) // fields of a later revision
	got, err := DecodeHello(b)
	if err != nil || got != h {
		t.Fatalf("DecodeHello = %+v, %v; want %+v", got, err, h)
	}
	if _, err := DecodeHello(AppendHello(nil, h)[:5]); err == nil {
		t.Error("a truncated HELLO decoded")
	}
}

func TestAppendOpenMatchesTheProtocolExample(t *testing.T) {
	// OPEN seq 1, call 1: window 0, path "/demo.v1.EchoService/Echo".
	want, _ := hex.DecodeString("010001011b0019" + hex.EncodeToString([]byte("/demo.v1.EchoService/Echo")))
	got := AppendFrame(nil, Frame{Type: TypeOpen, Seq: 1, Call: 1, Payload: AppendOpen(nil, 0, "/demo.v1.EchoService/Echo", nil)})
	if !bytes.Equal(got, want) {
		t.Fatalf("OPEN = %x, want %x", got, want)
	}
}
