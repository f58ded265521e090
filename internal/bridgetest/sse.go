package bridgetest

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
)

// Event is one dispatched Server-Sent Event, or a block that set only the
// reconnection time.
type Event struct {
	ID       string // the last event id after this event, as the browser tracks it
	HasID    bool   // whether this event's block had an id field
	Type     string // "message" when the block had data and no event field; "" when it dispatched nothing
	Data     string
	Retry    time.Duration // the retry field of this block, or 0
	Comments []string      // comment lines of this block, without the colon
}

// SSEReader parses an event stream as a browser does (WHATWG HTML,
// "Interpreting an event stream"), block by block.
type SSEReader struct {
	r      *bufio.Reader
	lastID string
}

// NewSSEReader reads events from r.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{r: bufio.NewReader(r)}
}

// Next returns the next block that dispatches an event, sets a retry time or
// holds comments. It returns io.EOF at the end of the stream; an incomplete
// final block is discarded, as the specification says.
func (s *SSEReader) Next() (Event, error) {
	var ev Event
	var data []string
	var sawData, sawAny bool
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if line == "" {
			if !sawAny {
				continue
			}
			ev.ID = s.lastID
			// Only a block with data dispatches an event; others (a lone
			// retry field, a comment) keep an empty Type.
			if sawData {
				ev.Data = strings.Join(data, "\n")
				if ev.Type == "" {
					ev.Type = "message"
				}
			} else {
				ev.Type = ""
			}
			return ev, nil
		}
		sawAny = true
		if strings.HasPrefix(line, ":") {
			ev.Comments = append(ev.Comments, strings.TrimPrefix(line[1:], " "))
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Type = value
		case "data":
			data = append(data, value)
			sawData = true
		case "id":
			if !strings.Contains(value, "\x00") {
				s.lastID = value
				ev.HasID = true
			}
		case "retry":
			if n, err := strconv.ParseUint(value, 10, 63); err == nil {
				ev.Retry = time.Duration(n) * time.Millisecond
			}
		}
	}
}

// readLine reads one line ended by CRLF, LF or CR.
func (s *SSEReader) readLine() (string, error) {
	var b strings.Builder
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return "", err
		}
		switch c {
		case '\n':
			return b.String(), nil
		case '\r':
			if next, err := s.r.Peek(1); err == nil && next[0] == '\n' {
				_, _ = s.r.ReadByte()
			}
			return b.String(), nil
		}
		b.WriteByte(c)
	}
}
