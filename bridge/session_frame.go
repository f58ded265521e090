package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The frames of the grpc-session.v1 protocol (docs/protocol.md,
// "Sessions"): the same bytes on the WebSocket carrier, in upstream POST
// bodies, in poll answers, and base64 in event-stream events.
//
//	type (1 byte) | flags (1 byte) | seq (uvarint) | call (uvarint) | length (uvarint) | payload

// frameType is a session frame's first byte.
type frameType byte

// The frame types. OPEN to WINDOW are sequenced: numbered per direction,
// kept until acknowledged, and resent after a cut.
const (
	frameOpen      frameType = 0x01
	frameMessage   frameType = 0x02
	frameHalfClose frameType = 0x03
	frameCancel    frameType = 0x04
	frameHeaders   frameType = 0x05
	frameStatus    frameType = 0x06
	frameWindow    frameType = 0x07
	frameAck       frameType = 0x08
	framePing      frameType = 0x09
	framePong      frameType = 0x0a
	frameGoaway    frameType = 0x0b
	frameHello     frameType = 0x0c
)

var frameNames = [...]string{
	frameOpen: "OPEN", frameMessage: "MESSAGE", frameHalfClose: "HALF_CLOSE", frameCancel: "CANCEL",
	frameHeaders: "HEADERS", frameStatus: "STATUS", frameWindow: "WINDOW", frameAck: "ACK",
	framePing: "PING", framePong: "PONG", frameGoaway: "GOAWAY", frameHello: "HELLO",
}

func (t frameType) String() string {
	if int(t) < len(frameNames) && frameNames[t] != "" {
		return frameNames[t]
	}
	return fmt.Sprintf("0x%02x", byte(t))
}

func (t frameType) known() bool { return t >= frameOpen && t <= frameHello }

// sequenced reports whether frames of the type carry a sequence number and
// a call id.
func (t frameType) sequenced() bool { return t >= frameOpen && t <= frameWindow }

// Payload limits: a MESSAGE may be as large as the message limit, every
// other payload at most maxControlPayload. maxPingPayload bounds PING and
// PONG.
const (
	maxControlPayload = 64 << 10
	maxPingPayload    = 64
)

// sessionFrame is one decoded frame. payload aliases the buffer it was
// decoded from.
type sessionFrame struct {
	typ     frameType
	flags   byte
	seq     uint64
	call    uint64
	payload []byte
}

// errFrameTooLarge is decodeFrame's error for a payload over its limit,
// for which the session ends with RESOURCE_EXHAUSTED.
var errFrameTooLarge = errors.New("frame payload over the limit")

// appendFrame appends f's encoding to dst.
func appendFrame(dst []byte, f sessionFrame) []byte {
	dst = append(dst, byte(f.typ), f.flags)
	dst = binary.AppendUvarint(dst, f.seq)
	dst = binary.AppendUvarint(dst, f.call)
	dst = binary.AppendUvarint(dst, uint64(len(f.payload)))
	return append(dst, f.payload...)
}

// decodeFrame decodes the frame at the start of buf and returns it and the
// bytes after it. It checks the framing only: a known type, seq and call
// set for sequenced types and zero for the others, minimal varints, a
// payload within its limit (maxMessage for MESSAGE) and within buf.
// Whether the frame may travel in its direction is the session's check.
func decodeFrame(buf []byte, maxMessage int64) (sessionFrame, []byte, error) {
	if len(buf) < 2 {
		return sessionFrame{}, nil, errors.New("truncated frame header")
	}
	f := sessionFrame{typ: frameType(buf[0]), flags: buf[1]}
	if !f.typ.known() {
		return sessionFrame{}, nil, fmt.Errorf("unknown frame type %s", f.typ)
	}
	rest := buf[2:]
	var length uint64
	for _, v := range []*uint64{&f.seq, &f.call, &length} {
		n, used, err := readUvarint(rest)
		if err != nil {
			return sessionFrame{}, nil, fmt.Errorf("%s frame: %w", f.typ, err)
		}
		*v, rest = n, rest[used:]
	}
	if f.typ.sequenced() {
		if f.seq == 0 || f.call == 0 {
			return sessionFrame{}, nil, fmt.Errorf("%s frame: seq and call must not be 0", f.typ)
		}
	} else if f.seq != 0 || f.call != 0 {
		return sessionFrame{}, nil, fmt.Errorf("%s frame: seq and call must be 0", f.typ)
	}
	limit := uint64(maxControlPayload)
	if f.typ == frameMessage {
		limit = uint64(max(maxMessage, 0))
	}
	if length > limit {
		return sessionFrame{}, nil, fmt.Errorf("%s frame: %w: %d bytes, at most %d", f.typ, errFrameTooLarge, length, limit)
	}
	if length > uint64(len(rest)) {
		return sessionFrame{}, nil, fmt.Errorf("%s frame: truncated payload", f.typ)
	}
	f.payload = rest[:length:length]
	return f, rest[length:], nil
}

// readUvarint reads a minimal protobuf varint: a value with a longer
// encoding than it needs is refused, so that every frame has exactly one
// encoding.
func readUvarint(b []byte) (v uint64, n int, err error) {
	v, n = binary.Uvarint(b)
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

// readLenString reads a uvarint length and that many bytes of UTF-8.
func readLenString(b []byte) (s string, rest []byte, err error) {
	n, used, err := readUvarint(b)
	if err != nil {
		return "", nil, err
	}
	b = b[used:]
	if n > uint64(len(b)) {
		return "", nil, errors.New("truncated string")
	}
	if !utf8.Valid(b[:n]) {
		return "", nil, errors.New("string not UTF-8")
	}
	return string(b[:n]), b[n:], nil
}

func appendLenString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// openPayload is the payload of an OPEN frame.
type openPayload struct {
	window   uint64 // the call's downstream window; 0: the session's
	path     string // the method's gRPC path
	metadata []byte // a grpc-ws.v1 metadata object, or empty
}

func decodeOpen(b []byte) (openPayload, error) {
	var o openPayload
	window, n, err := readUvarint(b)
	if err != nil {
		return o, fmt.Errorf("OPEN window: %w", err)
	}
	o.window = window
	if o.path, b, err = readLenString(b[n:]); err != nil {
		return o, fmt.Errorf("OPEN path: %w", err)
	}
	o.metadata = b
	return o, nil
}

func appendOpen(dst []byte, o openPayload) []byte {
	dst = binary.AppendUvarint(dst, o.window)
	dst = appendLenString(dst, o.path)
	return append(dst, o.metadata...)
}

// decodeUvarintPayload decodes the payload of WINDOW and ACK: one uvarint
// and nothing after it.
func decodeUvarintPayload(f sessionFrame) (uint64, error) {
	v, n, err := readUvarint(f.payload)
	if err != nil {
		return 0, fmt.Errorf("%s frame: %w", f.typ, err)
	}
	if n != len(f.payload) {
		return 0, fmt.Errorf("%s frame: bytes after the value", f.typ)
	}
	return v, nil
}

// helloPayload is the payload of a HELLO frame.
type helloPayload struct {
	token      string
	ack        uint64 // the last upstream seq the bridge has
	maxCalls   uint64
	window     uint64 // each call's initial upstream window
	maxMessage uint64
	graceMs    uint64
}

func appendHello(dst []byte, h helloPayload) []byte {
	dst = appendLenString(dst, h.token)
	for _, v := range []uint64{h.ack, h.maxCalls, h.window, h.maxMessage, h.graceMs} {
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

// decodeHello decodes a HELLO payload, ignoring bytes after the fields it
// knows, as clients must.
func decodeHello(b []byte) (helloPayload, error) {
	var h helloPayload
	var err error
	if h.token, b, err = readLenString(b); err != nil {
		return h, fmt.Errorf("HELLO token: %w", err)
	}
	for _, v := range []*uint64{&h.ack, &h.maxCalls, &h.window, &h.maxMessage, &h.graceMs} {
		n, used, err := readUvarint(b)
		if err != nil {
			return h, fmt.Errorf("HELLO: %w", err)
		}
		*v, b = n, b[used:]
	}
	return h, nil
}
