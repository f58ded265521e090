package reliability

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"

	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// The backend process is killed (SIGKILL) in the middle of resumable
// streams and restarted on the same port a moment later. Every SSE client
// resumes through Last-Event-ID, across reconnects that meet the backend
// down (answered 200 with a retry hint and a transient error), and
// receives every tick exactly once.
func TestBackendKilledMidStreamSSEResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a backend process")
	}
	addr := freeAddr(t)
	demoProc := startDemoProc(t, addr)
	srv, _ := newBridge(t, dialFast(t, addr))
	client := newHTTPClient(t)

	const clients, before, total = 20, 10, 60
	followers := make([]*follower, clients)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var g errgroup.Group
	for i := range followers {
		followers[i] = newFollower(fmt.Sprintf("%s?symbol=KILL%d&interval_ms=20", tickerPath, i), srv.URL)
		g.Go(func() error { return followers[i].run(ctx, client, func(n int) bool { return n >= total }) })
	}
	waitFor(t, "every client has its first ticks", func() bool {
		for _, f := range followers {
			if f.count() < before {
				return false
			}
		}
		return true
	})
	demoProc.kill()
	time.Sleep(300 * time.Millisecond) // reconnects meet the backend down
	startDemoProc(t, addr)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, f := range followers {
		seqs := f.received()
		checkContiguous(t, fmt.Sprintf("client %d", i), seqs, 1)
		if len(seqs) != total {
			t.Errorf("client %d: %d ticks, want %d", i, len(seqs), total)
		}
		if f.connects < 2 || len(f.transient) == 0 || f.hints == 0 {
			t.Errorf("client %d: %d connections, transient errors %v, %d retry hints; want a resume after UNAVAILABLE with a retry hint",
				i, f.connects, f.transient, f.hints)
		}
	}
}

// The same with the backend in this process, stopped and served again on
// the same port: quick enough for every run of make test.
func TestBackendRestartSSEResumes(t *testing.T) {
	be := newBackend(t)
	be.start()
	srv, _ := newBridge(t, dialFast(t, be.addr))
	client := newHTTPClient(t)
	const clients, before, total = 10, 5, 30
	followers := make([]*follower, clients)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	var g errgroup.Group
	for i := range followers {
		followers[i] = newFollower(fmt.Sprintf("%s?symbol=RESTART%d&interval_ms=20", tickerPath, i), srv.URL)
		g.Go(func() error { return followers[i].run(ctx, client, func(n int) bool { return n >= total }) })
	}
	waitFor(t, "every client has its first ticks", func() bool {
		for _, f := range followers {
			if f.count() < before {
				return false
			}
		}
		return true
	})
	be.stop()
	time.Sleep(200 * time.Millisecond)
	be.start()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, f := range followers {
		checkContiguous(t, fmt.Sprintf("client %d", i), f.received(), 1)
		if f.count() != total || len(f.transient) == 0 {
			t.Errorf("client %d: %d ticks, transient errors %v; want %d ticks and a resume after UNAVAILABLE", i, f.count(), f.transient, total)
		}
	}
}

// With the backend down, a new SSE stream is answered 200 with a retry
// hint and an UNAVAILABLE error event (so EventSource keeps retrying), and a
// WebSocket call ends with UNAVAILABLE and close 4014; once the backend is
// back, the same requests succeed.
func TestBackendDownAtConnect(t *testing.T) {
	be := newBackend(t) // not started
	srv, _ := newBridge(t, dialFast(t, be.addr))
	client := newHTTPClient(t)

	resp, err := client.Get(srv.URL + tickerPath + "?symbol=DOWN&limit=3&interval_ms=10")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("backend down: HTTP %d %q; want 200 event stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs := readAllEvents(t, string(body))
	last := evs[len(evs)-1]
	if evs[0].Retry == 0 || last.Type != "error" || last.Retry == 0 || !strings.Contains(last.Data, `"code":14`) {
		t.Errorf("backend down: events %+v; want retry, then a retry hint with an UNAVAILABLE error event", evs)
	}

	conn, _, err := wsDial(t.Context(), srv.URL, echoPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := proto.Marshal(&demov1.EchoRequest{Text: "hello"})
	_ = conn.WriteMessage(websocket.BinaryMessage, msg)
	fin := wsReadToEnd(conn, time.Now().Add(testTimeout))
	conn.Close()
	if fin.st == nil || fin.st.Code != 14 || fin.closeCode != 4014 {
		t.Errorf("WebSocket with the backend down: status %+v, close %d, err %v; want UNAVAILABLE and 4014", fin.st, fin.closeCode, fin.err)
	}

	be.start()
	f := newFollower(tickerPath+"?symbol=DOWN&limit=3&interval_ms=10", srv.URL)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := f.run(ctx, client, nil); err != nil {
		t.Fatal(err)
	}
	checkContiguous(t, "after the backend is back", f.received(), 1)
	if f.count() != 3 {
		t.Errorf("after the backend is back: %v, want 3 ticks and the end", f.received())
	}
}

// A backend that dies during a WebSocket call ends it with the status
// frame UNAVAILABLE and close code 4014.
func TestBackendDiesDuringWebSocket(t *testing.T) {
	be := newBackend(t)
	be.start()
	srv, _ := newBridge(t, dialFast(t, be.addr))
	conn, _, err := wsDial(t.Context(), srv.URL, echoPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, _ := proto.Marshal(&demov1.EchoRequest{Text: "hello"})
	if err := conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	for { // the headers frame, then the echo
		typ, _, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ == websocket.BinaryMessage {
			break
		}
	}
	be.stop()
	fin := wsReadToEnd(conn, time.Now().Add(testTimeout))
	if fin.st == nil || fin.st.Code != 14 || fin.closeCode != 4014 {
		t.Errorf("status %+v, close %d, err %v; want UNAVAILABLE and 4014", fin.st, fin.closeCode, fin.err)
	}
}

// countingBackend serves the demo services on a loopback port and counts
// the messages its handlers send, and records how each call ended.
type countingBackend struct {
	addr  string
	sent  atomic.Int64
	ended chan error
}

type countingStream struct {
	grpc.ServerStream
	n *atomic.Int64
}

func (s countingStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.n.Add(1)
	}
	return err
}

func newCountingBackend(t testing.TB) (*countingBackend, *grpc.ClientConn) {
	t.Helper()
	b := &countingBackend{ended: make(chan error, 16)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	srv := grpc.NewServer(grpc.StreamInterceptor(func(srvImpl any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srvImpl, countingStream{ss, &b.sent})
		select {
		case b.ended <- ss.Context().Err():
		default:
		}
		return err
	}))
	demo.Register(srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return b, conn
}

// smallBufferDialer dials with a 4 KiB receive buffer, so that a client
// that stops reading stops the bridge's writes soon.
var smallBufferDialer = &net.Dialer{
	Timeout: 10 * time.Second,
	Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	},
}

// A client that stops reading: the backend is slowed by flow control (it
// gets far fewer messages out than it would send), the bridge's memory
// stays bounded, and the client is dropped after the write timeout, which
// cancels the upstream call.
func TestSlowReaderIsDropped(t *testing.T) {
	const (
		size         = 64 << 10
		count        = 100_000 // 6.5 GB if nothing pushed back
		writeTimeout = time.Second
		boundBytes   = 64 << 20
	)
	for _, transport := range []string{"sse", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			be, conn := newCountingBackend(t)
			srv, _ := newBridge(t, conn, bridge.WithWriteTimeout(writeTimeout))
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			var stalled net.Conn
			switch transport {
			case "sse":
				c, err := smallBufferDialer.Dial("tcp", srv.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(c, "GET %s?count=%d&size=%d HTTP/1.1\r\nHost: %s\r\n\r\n", streamPath, count, size, srv.Listener.Addr())
				stalled = c
			case "websocket":
				d := websocket.Dialer{Subprotocols: []string{subproto}, NetDial: smallBufferDialer.Dial, ReadBufferSize: 4096}
				c, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+streamPath, nil)
				if err != nil {
					t.Fatal(err)
				}
				msg, _ := proto.Marshal(&demov1.StreamRequest{Count: count, Size: size})
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					t.Fatal(err)
				}
				stalled = c.NetConn()
			}
			defer stalled.Close()

			// The backend's sends stop growing: flow control reached it.
			var plateau int64
			waitFor(t, "the backend's sends stop growing", func() bool {
				n := be.sent.Load()
				time.Sleep(300 * time.Millisecond)
				plateau = be.sent.Load()
				return n > 0 && plateau == n
			})
			var during runtime.MemStats
			runtime.ReadMemStats(&during)
			growth := int64(during.HeapInuse) - int64(before.HeapInuse)
			t.Logf("%s: backend sent %d of %d messages (%d MiB) before flow control stopped it; heap grew %d MiB",
				transport, plateau, count, plateau*size>>20, growth>>20)
			if plateau*size > boundBytes || growth > boundBytes {
				t.Errorf("backend sent %d messages (%d MiB), heap grew %d MiB; want both under %d MiB", plateau, plateau*size>>20, growth>>20, boundBytes>>20)
			}
			// Dropped after the write timeout: the upstream call is cancelled.
			select {
			case err := <-be.ended:
				if err == nil {
					t.Errorf("the backend call ended without cancellation")
				}
			case <-time.After(writeTimeout + 10*time.Second):
				t.Fatalf("the backend call is still running %v after the client stopped reading", writeTimeout+10*time.Second)
			}
			// And the bridge closed the connection: reading what was
			// buffered ends, rather than blocking.
			_ = stalled.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := io.Copy(io.Discard, bufio.NewReader(stalled)); err != nil && !isConnReset(err) {
				t.Errorf("the slow client's connection: %v; want it closed by the bridge", err)
			}
		})
	}
}

func isConnReset(err error) bool {
	return strings.Contains(err.Error(), "reset by peer")
}

// waitFor polls cond until it holds, for at most testTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAllEvents parses a whole event stream.
func readAllEvents(t testing.TB, body string) []bridgetest.Event {
	t.Helper()
	rd := bridgetest.NewSSEReader(strings.NewReader(body))
	var evs []bridgetest.Event
	for {
		ev, err := rd.Next()
		if err != nil {
			break
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		t.Fatalf("no events in %q", body)
	}
	return evs
}
