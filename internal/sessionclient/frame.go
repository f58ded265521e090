// Package sessionclient is a minimal Go client of the bridge's
// grpc-session.v1 protocol (docs/protocol.md, "Sessions"): many calls on
// one session, over a WebSocket or over the HTTP fallback (an event stream
// down, POST requests up), with per-call flow control. It serves the
// benchmark harness (cmd/bench) and tools; it is written from the protocol
// document and shares no code with the bridge.
//
// It does not reattach a cut downstream: a cut ends the session, and its
// calls end UNAVAILABLE.
package sessionclient

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame types, as docs/protocol.md numbers them. OPEN to WINDOW are
// sequenced.
const (
	TypeOpen      byte = 0x01
	TypeMessage   byte = 0x02
	TypeHalfClose byte = 0x03
	TypeCancel    byte = 0x04
	TypeHeaders   byte = 0x05
	TypeStatus    byte = 0x06
	TypeWindow    byte = 0x07
	TypeAck       byte = 0x08
	TypePing      byte = 0x09
	TypePong      byte = 0x0a
	TypeGoaway    byte = 0x0b
	TypeHello     byte = 0x0c
)

// Frame is one session frame. Payload aliases the buffer it was decoded
// from.
type Frame struct {
	Type    byte
	Flags   byte
	Seq     uint64
	Call    uint64
	Payload []byte
}

// sequenced reports whether frames of type t carry a seq and a call id.
func sequenced(t byte) bool { return t >= TypeOpen && t <= TypeWindow }

// AppendFrame appends f's encoding to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	dst = append(dst, f.Type, f.Flags)
	dst = binary.AppendUvarint(dst, f.Seq)
	dst = binary.AppendUvarint(dst, f.Call)
	dst = binary.AppendUvarint(dst, uint64(len(f.Payload)))
	return append(dst, f.Payload...)
}

// DecodeFrame decodes the frame at the start of b and returns it and the
// bytes after it. It checks the framing: a known type, seq and call set
// exactly for sequenced types, minimal varints, a payload within b.
func DecodeFrame(b []byte) (Frame, []byte, error) {
	if len(b) < 2 {
		return Frame{}, nil, errors.New("truncated frame header")
	}
	f := Frame{Type: b[0], Flags: b[1]}
	if f.Type < TypeOpen || f.Type > TypeHello {
		return Frame{}, nil, fmt.Errorf("unknown frame type 0x%02x", f.Type)
	}
	rest := b[2:]
	var length uint64
	for _, v := range []*uint64{&f.Seq, &f.Call, &length} {
		x, n, err := readUvarint(rest)
		if err != nil {
			return Frame{}, nil, fmt.Errorf("frame 0x%02x: %w", f.Type, err)
		}
		*v, rest = x, rest[n:]
	}
	if sequenced(f.Type) != (f.Seq != 0 && f.Call != 0) || !sequenced(f.Type) && (f.Seq != 0 || f.Call != 0) {
		return Frame{}, nil, fmt.Errorf("frame 0x%02x: seq %d and call %d do not fit its type", f.Type, f.Seq, f.Call)
	}
	if length > uint64(len(rest)) {
		return Frame{}, nil, fmt.Errorf("frame 0x%02x: truncated payload", f.Type)
	}
	f.Payload = rest[:length:length]
	return f, rest[length:], nil
}

// DecodeFrames decodes a batch: one or more whole frames back to back.
func DecodeFrames(b []byte) ([]Frame, error) {
	var out []Frame
	for len(b) > 0 {
		f, rest, err := DecodeFrame(b)
		if err != nil {
			return nil, err
		}
		out, b = append(out, f), rest
	}
	return out, nil
}

// readUvarint reads a varint in its shortest form, as the protocol
// requires.
func readUvarint(b []byte) (uint64, int, error) {
	v, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, 0, errors.New("truncated varint")
	case n < 0:
		return 0, 0, errors.New("varint overflows 64 bits")
	case n > 1 && b[n-1] == 0:
		return 0, 0, errors.New("varint not in its shortest form")
	}
	return v, n, nil
}

// uvarintPayload decodes the payload of ACK and WINDOW: one varint.
func uvarintPayload(f Frame) (uint64, error) {
	v, n, err := readUvarint(f.Payload)
	if err == nil && n != len(f.Payload) {
		err = errors.New("bytes after the value")
	}
	if err != nil {
		return 0, fmt.Errorf("frame 0x%02x: %w", f.Type, err)
	}
	return v, nil
}

// AppendOpen appends an OPEN payload: the call's downstream window (0: the
// session's), the method's gRPC path, and metadata JSON (or none).
func AppendOpen(dst []byte, window uint64, path string, metadata []byte) []byte {
	dst = binary.AppendUvarint(dst, window)
	dst = binary.AppendUvarint(dst, uint64(len(path)))
	dst = append(dst, path...)
	return append(dst, metadata...)
}

// Hello is a HELLO frame's payload.
type Hello struct {
	Token      string
	Ack        uint64 // the last upstream seq the bridge has received
	MaxCalls   uint64
	Window     uint64 // each call's initial upstream window, bytes
	MaxMessage uint64
	GraceMs    uint64
}

// AppendHello appends h's encoding (for tests and fakes).
func AppendHello(dst []byte, h Hello) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(h.Token)))
	dst = append(dst, h.Token...)
	for _, v := range []uint64{h.Ack, h.MaxCalls, h.Window, h.MaxMessage, h.GraceMs} {
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

// DecodeHello decodes a HELLO payload, ignoring bytes after the fields it
// knows, as the protocol asks of clients.
func DecodeHello(b []byte) (Hello, error) {
	var h Hello
	n, used, err := readUvarint(b)
	if err != nil {
		return h, fmt.Errorf("HELLO token: %w", err)
	}
	b = b[used:]
	if n > uint64(len(b)) {
		return h, errors.New("HELLO token: truncated")
	}
	h.Token, b = string(b[:n]), b[n:]
	for _, v := range []*uint64{&h.Ack, &h.MaxCalls, &h.Window, &h.MaxMessage, &h.GraceMs} {
		x, used, err := readUvarint(b)
		if err != nil {
			return h, fmt.Errorf("HELLO: %w", err)
		}
		*v, b = x, b[used:]
	}
	return h, nil
}
