package bridge

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// SSE field names and event types of the bridge's event stream (WHATWG HTML,
// section 9.2 "Server-sent events", "Interpreting an event stream").
const (
	sseEventMessage = "message"
	sseEventHeaders = "headers"
	sseEventEnd     = "end"
	sseEventError   = "error"
	ssePing         = ": ping\n\n"
)

// appendEvent appends one event to dst. An empty id writes no id field, so
// the browser keeps its last event id (the headers, end and error events).
// data is split at every line break (CRLF, LF or CR, the three that the
// event-stream grammar knows) into several data fields, which the browser
// joins with LF again; so no payload can end the event early.
func appendEvent(dst []byte, id, event string, data []byte) []byte {
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "event: "...)
	dst = append(dst, event...)
	dst = append(dst, '\n')
	for {
		i := lineBreak(data)
		if i < 0 {
			break
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}

// lineBreak is the index of the first CR or LF in data, or -1. Two
// IndexByte scans (vectorised) rather than bytes.IndexAny, which tests
// each byte against a set: this runs on every event, and JSON has no
// line break.
func lineBreak(data []byte) int {
	lf := bytes.IndexByte(data, '\n')
	before := data
	if lf >= 0 {
		before = data[:lf]
	}
	if cr := bytes.IndexByte(before, '\r'); cr >= 0 {
		return cr
	}
	return lf
}

// appendRetry appends a retry field: the reconnection time, in
// milliseconds, that the browser waits before it reconnects.
func appendRetry(dst []byte, d time.Duration) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, d.Milliseconds(), 10)
	return append(dst, '\n')
}

// validEventID reports whether id can be sent as an id field: it must not
// contain a line break, which would end the field, nor NUL, for which the
// browser ignores the field.
func validEventID(id string) bool {
	return !strings.ContainsAny(id, "\r\n\x00")
}
