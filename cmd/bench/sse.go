package main

import "bytes"

// sseCounter counts the message events of an event stream fed to it in
// arbitrary chunks: blocks that carry data and whose event type is
// "message" or unset. It looks only at the first bytes of each line, so it
// keeps up with a stream of hundreds of thousands of events a second; it
// expects LF line ends, as the bridge writes them.
type sseCounter struct {
	messages int64
	// State of the block being read.
	hasData  bool
	otherTyp bool // an event field other than "message"
	// The start of the current line, up to len(prefix) bytes, across chunks.
	prefix  [16]byte
	plen    int
	lineLen int // bytes of the current line seen so far
}

var (
	fieldData         = []byte("data:")
	fieldEvent        = []byte("event:")
	fieldEventMessage = []byte("event: message")
)

// Write feeds the next chunk of the stream. It never fails.
func (c *sseCounter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.take(p)
			break
		}
		c.take(p[:i])
		c.endLine()
		p = p[i+1:]
	}
	return n, nil
}

func (c *sseCounter) take(b []byte) {
	if c.plen < len(c.prefix) {
		c.plen += copy(c.prefix[c.plen:], b)
	}
	c.lineLen += len(b)
}

func (c *sseCounter) endLine() {
	line := c.prefix[:c.plen]
	switch {
	case c.lineLen == 0: // blank line: dispatch
		if c.hasData && !c.otherTyp {
			c.messages++
		}
		c.hasData, c.otherTyp = false, false
	case bytes.HasPrefix(line, fieldData):
		c.hasData = true
	case bytes.HasPrefix(line, fieldEvent):
		// "event: message" exactly (16 bytes of prefix hold it whole).
		c.otherTyp = !(c.lineLen == len(fieldEventMessage) && bytes.Equal(line, fieldEventMessage))
	}
	c.plen, c.lineLen = 0, 0
}
