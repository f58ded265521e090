package bridge

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gorilla/websocket"
)

func TestCloseReason(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 122) + "é" // é is 2 bytes: 124 in all
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "boom", "boom"},
		{"exactly 123 bytes", strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{"cut", strings.Repeat("a", 200), strings.Repeat("a", 123)},
		{"cut before a split rune", long, strings.Repeat("x", 122)},
		{"invalid UTF-8 replaced", "a\xffb", "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := closeReason(tt.in)
			if got != tt.want {
				t.Errorf("closeReason(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if len(got) > maxCloseReasonBytes {
				t.Errorf("closeReason(%q) is %d bytes long", tt.in, len(got))
			}
		})
	}
}

// A writer stalled on a socket that takes nothing holds up the receiver
// once wsOutBytes are queued, however small the frames: a backend that
// streams empty messages to a browser that does not read fills a bounded
// queue, not the bridge's memory.
func TestWSQueueIsBoundedForEmptyFrames(t *testing.T) {
	t.Parallel()
	s := &wsSession{}
	s.out.room.L = &s.out.mu
	s.out.writing = true // the writer is blocked on the socket
	var queued atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s.failed() == nil {
			s.queue(wsQueued{typ: websocket.BinaryMessage, response: true}, false)
			queued.Add(1)
		}
	}()
	const bound = wsOutBytes/wsFrameCost + 1
	for last, still := int64(-1), 0; still < 20 && queued.Load() <= bound; {
		time.Sleep(5 * time.Millisecond)
		if n := queued.Load(); n == last {
			still++ // the receiver waits for room
		} else {
			last, still = n, 0
		}
	}
	if n := queued.Load(); n > bound {
		t.Fatalf("%d empty frames queued behind a stalled writer, want at most %d", n, bound)
	}
	// The write fails: the receiver stops waiting and drops what it holds.
	s.failMu.Lock()
	s.writeErr = errors.New("stalled")
	s.failMu.Unlock()
	s.out.mu.Lock()
	s.out.room.Broadcast()
	s.out.mu.Unlock()
	<-done
}

// readMessage reads a message whole however the reader cuts it, stops one
// byte past the limit, reuses its buffer for the next message and does
// not keep a large one.
func TestReadMessage(t *testing.T) {
	t.Parallel()
	s := &wsSession{h: &Handler{cfg: &config{readMaxBytes: 1 << 20}}}
	small := bytes.Repeat([]byte("ab"), 300)
	got, err := s.readMessage(iotest.OneByteReader(bytes.NewReader(small)))
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("one byte at a time: %d bytes, %v; want %d bytes", len(got), err, len(small))
	}
	again, err := s.readMessage(iotest.HalfReader(bytes.NewReader([]byte("next"))))
	if err != nil || string(again) != "next" {
		t.Fatalf("second message: %q, %v", again, err)
	}
	if &again[0] != &got[0] {
		t.Error("the second message did not reuse the first one's buffer")
	}
	empty, err := s.readMessage(bytes.NewReader(nil))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty message: %q, %v", empty, err)
	}
	over, err := s.readMessage(bytes.NewReader(make([]byte, 3<<20)))
	if err != nil || len(over) != 1<<20+1 {
		t.Fatalf("a message over the limit: read %d bytes (%v), want the limit + 1 = %d", len(over), err, 1<<20+1)
	}
	if s.readBuf != nil {
		t.Errorf("kept a buffer of %d bytes after a large message", cap(s.readBuf))
	}
	if _, err := s.readMessage(iotest.ErrReader(io.ErrUnexpectedEOF)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a failing reader: %v, want its error", err)
	}
	// A library user's limit of MaxInt64 is no limit, not an overflow.
	unlimited := &wsSession{h: &Handler{cfg: &config{readMaxBytes: math.MaxInt64}}}
	if got, err := unlimited.readMessage(bytes.NewReader([]byte("abc"))); err != nil || string(got) != "abc" {
		t.Errorf("with a limit of MaxInt64: %q, %v; want \"abc\"", got, err)
	}
}
