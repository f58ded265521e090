package sessionclient

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeCarrier is a bridge played by the test: read returns the batches
// sent on down; writes are kept.
type fakeCarrier struct {
	down      chan []byte
	closed    chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	up        [][]byte
}

func newFakeCarrier() *fakeCarrier {
	return &fakeCarrier{down: make(chan []byte, 16), closed: make(chan struct{})}
}

func (c *fakeCarrier) read() ([]byte, error) {
	select {
	case b := <-c.down:
		return b, nil
	case <-c.closed:
		return nil, errors.New("closed")
	}
}

func (c *fakeCarrier) write(b []byte, _ string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.up = append(c.up, append([]byte(nil), b...))
	return nil, nil
}

func (c *fakeCarrier) close() { c.closeOnce.Do(func() { close(c.closed) }) }

func TestABridgeSendingPastTheWindowEndsTheSession(t *testing.T) {
	fc := newFakeCarrier()
	s, err := newSession(fc, AppendFrame(nil, Frame{Type: TypeHello, Payload: AppendHello(nil, Hello{Token: "t", MaxCalls: 10, Window: 100, MaxMessage: 1000})}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Open("/demo.v1.EchoService/Stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A 100-byte window: one 80-byte message, one 80-byte one that takes
	// it below zero (allowed), then a third with no window left.
	var batch []byte
	for seq := uint64(1); seq <= 3; seq++ {
		batch = AppendFrame(batch, Frame{Type: TypeMessage, Seq: seq, Call: c.id, Payload: make([]byte, 80)})
	}
	fc.down <- batch
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not end")
	}
	if err := s.Err(); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "past the call's window of 100 bytes") {
		t.Errorf("session error %v, want INTERNAL naming the window", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := 0
	for {
		if _, err = c.Recv(ctx); err != nil {
			break
		}
		n++
	}
	if status.Code(err) != codes.Internal {
		t.Errorf("call ended with %v after %d messages, want INTERNAL", err, n)
	}
}
