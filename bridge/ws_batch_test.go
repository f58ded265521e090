package bridge

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// writeCounter records the writes and write deadlines that reach the
// socket under a batchConn.
type writeCounter struct {
	net.Conn
	mu        sync.Mutex
	writes    []int // bytes per write
	deadlines []time.Time
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *writeCounter) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadlines = append(c.deadlines, t)
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *writeCounter) reset() {
	c.mu.Lock()
	c.writes, c.deadlines = nil, nil
	c.mu.Unlock()
}

func (c *writeCounter) counts() (writes []int, deadlines []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.writes...), append([]time.Time(nil), c.deadlines...)
}

// batchServer upgrades one connection through a batchHijacker, with a
// writeCounter between the batchConn and the socket, and runs serve on it
// on the handler goroutine. It returns the client's end.
func batchServer(t *testing.T, serve func(ws *websocket.Conn, bc *batchConn, wc *writeCounter)) *websocket.Conn {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		bw := &batchHijacker{ResponseWriter: w}
		ws, err := (&websocket.Upgrader{}).Upgrade(bw, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		defer ws.Close()
		wc := &writeCounter{Conn: bw.conn.Conn}
		bw.conn.Conn = wc // before any frame is written
		serve(ws, bw.conn, wc)
	}))
	t.Cleanup(func() {
		<-done
		srv.Close()
	})
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads n messages and checks each against want(i).
func readAll(t *testing.T, c *websocket.Conn, n int, want func(i int) []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		typ, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != websocket.BinaryMessage || !bytes.Equal(got, want(i)) {
			t.Fatalf("message %d: type %d, %d bytes %.20q; want binary %.20q", i, typ, len(got), got, want(i))
		}
	}
}

// The frames gorilla/websocket writes inside a batch reach the socket in
// one write, and a gorilla client reads each message whole, in order.
func TestBatchConnWritesABatchAtOnce(t *testing.T) {
	t.Parallel()
	const n = 50
	msg := func(i int) []byte { return fmt.Appendf(nil, "message %d", i) }
	deadline := time.Now().Add(time.Minute)
	type counted struct {
		writes    []int
		deadlines []time.Time
	}
	got := make(chan counted, 1)
	c := batchServer(t, func(ws *websocket.Conn, bc *batchConn, wc *writeCounter) {
		wc.reset() // the handshake's
		bc.hold()
		for i := range n {
			// gorilla sets the deadline before each frame: one timer
			// update at release instead.
			_ = ws.SetWriteDeadline(deadline)
			if err := ws.WriteMessage(websocket.BinaryMessage, msg(i)); err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		}
		if w, _ := wc.counts(); len(w) != 0 {
			t.Errorf("%d writes reached the socket before release; want none", len(w))
		}
		if err := bc.release(); err != nil {
			t.Errorf("release: %v", err)
		}
		var cn counted
		cn.writes, cn.deadlines = wc.counts()
		got <- cn
		// Outside a batch, a frame goes out as gorilla writes it.
		_ = ws.WriteMessage(websocket.BinaryMessage, msg(n))
	})
	readAll(t, c, n+1, msg)
	cn := <-got
	writes, deadlines := cn.writes, cn.deadlines
	if len(writes) != 1 {
		t.Errorf("a batch of %d messages took %d writes %v; want 1", n, len(writes), writes)
	}
	if len(deadlines) != 1 || !deadlines[0].Equal(deadline) {
		t.Errorf("deadlines set on the socket for the batch: %v; want the one asked for, %v, once", deadlines, deadline)
	}
}

// A batch that would outgrow batchFlushBytes is written in parts, and a
// frame larger than the bound goes out on its own; every message arrives
// whole.
func TestBatchConnFlushesAtTheBound(t *testing.T) {
	t.Parallel()
	sizes := []int{1000, batchFlushBytes / 2, batchFlushBytes / 2, 3 * batchFlushBytes, 10}
	msg := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, sizes[i]) }
	got := make(chan []int, 1)
	c := batchServer(t, func(ws *websocket.Conn, bc *batchConn, wc *writeCounter) {
		wc.reset()
		bc.hold()
		for i := range sizes {
			if err := ws.WriteMessage(websocket.BinaryMessage, msg(i)); err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		}
		if err := bc.release(); err != nil {
			t.Errorf("release: %v", err)
		}
		w, _ := wc.counts()
		got <- w
	})
	readAll(t, c, len(sizes), msg)
	writes := <-got
	total := 0
	for _, w := range writes {
		total += w
	}
	if len(writes) < 3 || len(writes) >= 2*len(sizes) {
		t.Errorf("writes %v for messages of %v bytes; want the batch cut at the bound, in fewer writes than frames", writes, sizes)
	}
	over := 0
	for _, w := range writes {
		if w > batchFlushBytes {
			over++ // only the large frame's own write may be
		}
	}
	if over != 1 {
		t.Errorf("writes %v: %d over the bound of %d; want only the large frame's", writes, over, batchFlushBytes)
	}
	if min := 1000 + batchFlushBytes + 3*batchFlushBytes + 10; total < min {
		t.Errorf("%d bytes written; want at least the %d of the payloads", total, min)
	}
}

// A control frame written from another goroutine while a batch is held
// goes out with the batch, whole; outside a batch it goes out at once.
func TestBatchConnControlFramesDuringABatch(t *testing.T) {
	t.Parallel()
	pings := make(chan string, 2)
	c := batchServer(t, func(ws *websocket.Conn, bc *batchConn, _ *writeCounter) {
		bc.hold()
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("before"))
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := ws.WriteControl(websocket.PingMessage, []byte("held"), time.Now().Add(time.Second)); err != nil {
				t.Errorf("ping: %v", err)
			}
		})
		wg.Wait()
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("after"))
		if err := bc.release(); err != nil {
			t.Errorf("release: %v", err)
		}
		if err := ws.WriteControl(websocket.PingMessage, []byte("alone"), time.Now().Add(time.Second)); err != nil {
			t.Errorf("ping: %v", err)
		}
		// Wait for the client to have read both pings.
		_, _, _ = ws.ReadMessage()
	})
	c.SetPingHandler(func(data string) error {
		pings <- data
		return nil
	})
	readAll(t, c, 2, func(i int) []byte { return []byte([]string{"before", "after"}[i]) })
	// The pings are processed by the reads: the second one arrives after
	// the batch.
	go func() { _, _, _ = c.ReadMessage() }()
	for _, want := range []string{"held", "alone"} {
		select {
		case got := <-pings:
			if got != want {
				t.Errorf("ping %q; want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ping %q did not arrive", want)
		}
	}
	_ = c.WriteMessage(websocket.BinaryMessage, []byte("done"))
}
