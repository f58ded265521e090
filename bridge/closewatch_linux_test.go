package bridge

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return server, client
}

func TestWatchClose(t *testing.T) {
	for name, watch := range map[string]func(net.Conn, func()) func(){
		"shared poller": watchClose,
		"reading":       watchCloseByReading,
	} {
		t.Run(name, func(t *testing.T) {
			// Two watched connections: closing one peer reports that one
			// only.
			s1, c1 := tcpPair(t)
			s2, _ := tcpPair(t)
			gone1, gone2 := make(chan struct{}), make(chan struct{})
			stop1 := watch(s1, func() { close(gone1) })
			stop2 := watch(s2, func() { close(gone2) })
			_ = c1.Close()
			select {
			case <-gone1:
			case <-time.After(10 * time.Second):
				t.Fatal("the peer's close was not reported")
			}
			select {
			case <-gone2:
				t.Fatal("a close was reported for a connection whose peer is still there")
			case <-time.After(50 * time.Millisecond):
			}
			stop1() // after it fired: no effect
			stop2()
			// A stopped watch reports nothing, even when the peer leaves.
			_ = s2.Close()
			select {
			case <-gone2:
				t.Fatal("a stopped watch reported a close")
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
	// With nothing watched, the poller's goroutine has exited.
	waitPollerIdle(t)
}

// TestWatchCloseDiscardsPeerBytes checks that bytes from the peer (a
// stray CRLF, a pipelined request) are not a close, and are read and
// discarded: a close with unread bytes would be a reset, which makes the
// peer drop what it has not read yet.
func TestWatchCloseDiscardsPeerBytes(t *testing.T) {
	for name, watch := range map[string]func(net.Conn, func()) func(){
		"shared poller": watchClose,
		"reading":       watchCloseByReading,
	} {
		t.Run(name, func(t *testing.T) {
			s, c := tcpPair(t)
			gone := make(chan struct{})
			stop := watch(s, func() { close(gone) })
			if _, err := c.Write([]byte("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-gone:
				t.Fatal("bytes from the peer were reported as its close")
			case <-time.After(100 * time.Millisecond):
			}
			stop()
			_ = s.Close()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("the peer read %v after the close, want EOF: its bytes were left unread", err)
			}
		})
	}
	waitPollerIdle(t)
}

// waitPollerIdle waits for the poller's goroutine to exit, as it does when
// nothing is watched.
func waitPollerIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		poller.mu.Lock()
		running := poller.running
		poller.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the poller still runs with nothing to watch")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
