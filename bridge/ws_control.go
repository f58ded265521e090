package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Keys of the client's JSON control objects of the grpc-ws.v1 protocol,
// carried in WebSocket text frames (the server's are the struct tags of
// its frames below). See docs/protocol.md.
const (
	controlKeyMetadata = "metadata" // client: request metadata, first frame only
	controlKeyEnd      = "end"      // client: half-close
)

// maxQuotedBytes bounds how much of a name taken from a client's frame is
// quoted back in an error message, so that an error never echoes a large
// input.
const maxQuotedBytes = 64

// errNotUTF8 is decodeControl's error for a text frame that is not UTF-8,
// for which the WebSocket closes with 1007 (RFC 6455 sections 7.4.1 and
// 8.1) rather than the 1008 of the other violations.
var errNotUTF8 = errors.New("control frame: not valid UTF-8")

// control is one control object a client sends: a metadata frame or an end
// frame, never both. [decodeControl] makes one from a frame's bytes.
type control struct {
	// metadata holds the entries of a metadata frame as the client sent
	// them: keys as written, values in order. Non-nil (possibly empty) for a
	// metadata frame, nil for an end frame.
	metadata map[string][]string
	// end is true for an end frame: the client half-closes.
	end bool
}

// decodeControl decodes the payload of a text frame from a client. It is
// strict, so that a typo in a client is an error that names it rather than
// a frame that is silently ignored: the payload must be valid UTF-8 and one
// JSON object with exactly one of the keys "metadata" (an object whose
// values are arrays of strings) and "end" (the literal true), each at most
// once, and nothing after the object. Metadata keys are returned as
// written; whether the handler accepts them is checked later, against the
// request allow-list.
func decodeControl(data []byte) (control, error) {
	// encoding/json would replace invalid UTF-8 with U+FFFD silently, and a
	// text frame must be UTF-8 (RFC 6455 section 5.6) in the first place.
	if !utf8.Valid(data) {
		return control{}, errNotUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if !readDelim(dec, '{') {
		return control{}, errors.New("control frame: want a JSON object")
	}
	var c control
	var sawEnd bool
	for dec.More() {
		key, err := readString(dec)
		if err != nil {
			return control{}, errors.New("control frame: not valid JSON")
		}
		switch key {
		case controlKeyMetadata:
			if c.metadata != nil {
				return control{}, errors.New(`control frame: key "metadata" appears twice`)
			}
			if c.metadata, err = decodeMetadata(dec); err != nil {
				return control{}, err
			}
		case controlKeyEnd:
			if sawEnd {
				return control{}, errors.New(`control frame: key "end" appears twice`)
			}
			sawEnd = true
			tok, err := dec.Token()
			if err != nil {
				return control{}, errors.New("control frame: not valid JSON")
			}
			if tok != true {
				return control{}, errors.New(`control frame: "end" must be true`)
			}
			c.end = true
		default:
			return control{}, fmt.Errorf("control frame: unknown key %s; want %q or %q", quoteName(key), controlKeyMetadata, controlKeyEnd)
		}
	}
	if !readDelim(dec, '}') {
		return control{}, errors.New("control frame: not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return control{}, errors.New("control frame: data after the JSON object")
	}
	switch {
	case c.metadata != nil && c.end:
		return control{}, errors.New(`control frame: "metadata" and "end" must be sent in separate frames`)
	case c.metadata == nil && !c.end:
		return control{}, fmt.Errorf("control frame: want the key %q or %q", controlKeyMetadata, controlKeyEnd)
	}
	return c, nil
}

// decodeMetadata decodes the value of a metadata key: an object whose
// values are arrays of strings. The map and every slice are non-nil.
func decodeMetadata(dec *json.Decoder) (map[string][]string, error) {
	errShape := errors.New(`control frame: "metadata" must be an object whose values are arrays of strings`)
	tok, err := dec.Token()
	if err != nil {
		return nil, errors.New("control frame: not valid JSON")
	}
	if tok != json.Delim('{') {
		return nil, errShape
	}
	md := make(map[string][]string)
	for dec.More() {
		key, err := readString(dec)
		if err != nil {
			return nil, errors.New("control frame: not valid JSON")
		}
		if _, dup := md[key]; dup {
			return nil, fmt.Errorf("control frame: metadata key %s appears twice", quoteName(key))
		}
		if tok, err = dec.Token(); err != nil {
			return nil, errors.New("control frame: not valid JSON")
		}
		if tok != json.Delim('[') {
			return nil, fmt.Errorf("control frame: metadata %s must be an array of strings", quoteName(key))
		}
		values := []string{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, errors.New("control frame: not valid JSON")
			}
			v, ok := tok.(string)
			if !ok {
				return nil, fmt.Errorf("control frame: metadata %s must be an array of strings", quoteName(key))
			}
			values = append(values, v)
		}
		if !readDelim(dec, ']') {
			return nil, errors.New("control frame: not valid JSON")
		}
		md[key] = values
	}
	if !readDelim(dec, '}') {
		return nil, errors.New("control frame: not valid JSON")
	}
	return md, nil
}

// readDelim reports whether the next token is the delimiter d.
func readDelim(dec *json.Decoder, d json.Delim) bool {
	tok, err := dec.Token()
	return err == nil && tok == d
}

// readString reads an object key. The decoder itself rejects any other
// token where a key belongs.
func readString(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", errors.New("not a string")
	}
	return s, nil
}

// headersFrame is the server's headers frame.
type headersFrame struct {
	Headers map[string][]string `json:"headers"`
}

// statusFrame is the server's status frame: the status as in every other
// place that browsers see one, and the trailers beside it.
type statusFrame struct {
	Status   json.RawMessage     `json:"status"`
	Trailers map[string][]string `json:"trailers"`
}

// encodeHeaders encodes the headers frame: {"headers": {"key": ["value"]}}.
// md holds the allow-listed response headers, binary values already in
// base64; nil encodes as an empty object.
func encodeHeaders(md map[string][]string) []byte {
	b, err := json.Marshal(headersFrame{Headers: jsonMetadata(md)})
	if err != nil {
		// Unreachable: maps of strings always marshal.
		return []byte(`{"headers":{}}`)
	}
	return b
}

// encodeStatus encodes the status frame:
// {"status": {"code": 0, "message": "", "details": []}, "trailers": {}}.
// The status object is [marshalStatus]'s, so details render as in SSE and
// error bodies; trailers are the allow-listed response trailers, nil
// encoding as an empty object.
func encodeStatus(enc *codec, st *status.Status, trailers map[string][]string) []byte {
	b, err := json.Marshal(statusFrame{
		Status:   marshalStatus(enc, st, nil),
		Trailers: jsonMetadata(trailers),
	})
	if err != nil {
		// Unreachable: marshalStatus returns valid JSON. Keep the code.
		return fmt.Appendf(nil, `{"status":{"code":%d,"message":"","details":[]},"trailers":{}}`, st.Code())
	}
	return b
}

// jsonMetadata returns md with nil replaced by empty values, so that the
// JSON always has an object of arrays and never null.
func jsonMetadata(md map[string][]string) map[string][]string {
	out := make(map[string][]string, len(md))
	for k, v := range md {
		if v == nil {
			v = []string{}
		}
		out[k] = v
	}
	return out
}

// brokenFraming returns the ending for an error from reading the socket
// that is a frame breaking RFC 6455 rather than the client leaving: a
// reserved bit set, an unmasked frame, a fragmented or oversized control
// frame, an unknown opcode, a bad close frame, or a length with the top bit
// set. gorilla/websocket has already sent the close frame with 1002 for all
// but the last, so no status frame reaches the client; the ending is for
// the logs and metrics. ok is false for every other error.
func brokenFraming(err error) (e wsEnd, ok bool) {
	var (
		ce *websocket.CloseError
		ne net.Error
	)
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		// No read limit is set (read enforces its own): gorilla reports a
		// frame length that does not fit in 63 bits this way.
		err = errors.New("websocket: frame length out of range")
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return wsEnd{}, false
	case !strings.HasPrefix(err.Error(), "websocket: "):
		// gorilla makes its protocol errors with errors.New("websocket: ..."),
		// so their text is all there is to tell them by.
		return wsEnd{}, false
	}
	msg := "WebSocket protocol error: " + strings.TrimPrefix(err.Error(), "websocket: ")
	return wsEnd{st: status.New(codes.InvalidArgument, msg), closeCode: websocket.CloseProtocolError}, true
}

// clientFaultClose reports whether a close code says that the client broke
// the protocol: 1002, 1007, 1008 and 1009.
func clientFaultClose(code int) bool {
	switch code {
	case websocket.CloseProtocolError, websocket.CloseInvalidFramePayloadData,
		websocket.ClosePolicyViolation, websocket.CloseMessageTooBig:
		return true
	}
	return false
}
