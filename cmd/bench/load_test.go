package main

import (
	"bytes"
	"testing"
)

// The Connect stream counter counts whole messages however the stream is
// cut into reads, and not the end-of-stream envelope.
func TestEnvelopeCounterAcrossChunks(t *testing.T) {
	t.Parallel()
	var stream []byte
	for _, m := range []string{`{"seq":"1"}`, ``, `{"payload":"` + string(bytes.Repeat([]byte("x"), 300)) + `"}`} {
		stream = append(stream, connectEnvelope([]byte(m))...)
	}
	end := connectEnvelope([]byte(`{}`))
	end[0] = 0x02 // end of stream
	stream = append(stream, end...)
	for size := 1; size <= len(stream); size++ {
		var c envelopeCounter
		var n int64
		for p := stream; len(p) > 0; {
			k := min(size, len(p))
			n += c.count(p[:k])
			p = p[k:]
		}
		if n != 3 {
			t.Fatalf("reads of %d bytes: %d messages, want 3", size, n)
		}
	}
}
