package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// stallProxy forwards TCP connections to upstream until stall freezes
// every connection open at that moment: from then on it forwards nothing
// either way and closes nothing, as a black-holed network path does (a
// lost NAT or conntrack entry, a peer gone without a FIN). Connections
// made after the stall pass.
type stallProxy struct {
	lis      net.Listener
	upstream string

	quit chan struct{} // closed at the end of the test

	mu     sync.Mutex
	frozen chan struct{} // closed by stall, for the connections open then
	conns  []net.Conn
}

func newStallProxy(t *testing.T, upstream string) *stallProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{lis: lis, upstream: upstream, quit: make(chan struct{}), frozen: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(p.quit)
		_ = lis.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = down.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, down, up)
			frozen := p.frozen
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{up, down}, {down, up}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p.pipe(pair[0], pair[1], frozen)
				}()
			}
		}
	}()
	return p
}

// pipe copies from src to dst until either fails, or until frozen: then
// it stops reading and writing, and leaves both open.
func (p *stallProxy) pipe(dst, src net.Conn, frozen chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-frozen:
			<-p.quit // the data read is never forwarded
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				_ = dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

func (p *stallProxy) addr() string { return p.lis.Addr().String() }

// stall freezes the connections open now.
func (p *stallProxy) stall() {
	p.mu.Lock()
	close(p.frozen)
	p.frozen = make(chan struct{})
	p.mu.Unlock()
}

// A bridge whose connection to its backend is black-holed (nothing passes
// either way, nothing closes) must notice, end the streams on it as
// UNAVAILABLE and reconnect, so that SSE clients resume; found by the
// rehearsal (docs/reliability.md, "Rehearsal"): without keepalive pings to
// its backends (backend_keepalive), a bridge's streams wait with
// heartbeats and no events for as long as the path is dead, and the
// browser, which gets the heartbeats, never reconnects.
func TestBackendStallDetected(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a bridge process")
	}
	t.Parallel()
	const (
		before = 10               // ticks before the stall
		after  = 5                // ticks wanted after it, on a new backend connection
		detect = 40 * time.Second // what the test allows for noticing the dead path
	)
	be := newBackend(t)
	be.opts = append(be.opts, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second}))
	be.start()
	px := newStallProxy(t, be.addr)
	addr := freeAddr(t)
	startProc(t, addr, buildBinary(t, "./cmd/bridge"), "-addr", addr, "-backend", px.addr(), "-descriptors", "builtin",
		"-expose", "demo.v1.*", "-retry", "100ms", "-heartbeat", "1s", "-log-level", "warn",
		"-backend-keepalive", "10s", "-backend-keepalive-timeout", "3s")

	ctx, cancel := context.WithTimeout(t.Context(), detect)
	defer cancel()
	f := newFollower(fmt.Sprintf("%s?symbol=STALL&interval_ms=100", tickerPath), "http://"+addr)
	done := make(chan error, 1)
	stalled := make(chan struct{})
	go func() {
		done <- f.run(ctx, newHTTPClient(t), func(n int) bool {
			if n == before {
				close(stalled)
			}
			return n >= before+after
		})
	}()
	select {
	case <-stalled:
	case err := <-done:
		t.Fatalf("the stream ended before the stall: %v", err)
	case <-ctx.Done():
		t.Fatal("no ticks before the stall")
	}
	px.stall()
	if err := <-done; err != nil {
		t.Fatalf("%d ticks in all, %d connections: the stream did not resume within %v of its backend connection going dead: %v", f.count(), f.connects, detect, err)
	}
	checkContiguous(t, "ticks", f.received(), 1)
}
