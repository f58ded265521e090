package reliability

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// SIGTERM to a bridge process with 1,000 live streams (700 SSE, 300
// WebSocket): every SSE client gets a retry hint and resumes at a second
// bridge process (its "load balancer" fails over) with nothing lost and
// nothing twice; every WebSocket gets status UNAVAILABLE and close 1001;
// the process exits 0 within its drain timeout.
func TestDrainSIGTERMResumesElsewhere(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two bridge processes and 1,000 streams")
	}
	const (
		sseClients   = 700
		wsClients    = 300
		afterResume  = 10 // ticks each SSE client must get from the second bridge
		drainTimeout = 20 * time.Second
	)
	if need := uint64(4*(sseClients+wsClients) + 200); openFileLimit() < need {
		t.Skipf("open file limit %d; this test needs %d", openFileLimit(), need)
	}
	be := newBackend(t)
	be.start()
	bin := buildBinary(t, "./cmd/bridge")
	args := func(addr string) []string {
		return []string{"-addr", addr, "-backend", be.addr, "-descriptors", "builtin", "-expose", "demo.v1.*", "-retry", "100ms",
			"-drain-timeout", drainTimeout.String(), "-log-level", "warn"}
	}
	addrA, addrB := freeAddr(t), freeAddr(t)
	bridgeA := startProc(t, addrA, bin, args(addrA)...)
	startProc(t, addrB, bin, args(addrB)...)
	baseA, baseB := "http://"+addrA, "http://"+addrB

	tr := &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
	defer cancel()

	followers := make([]*follower, sseClients)
	var sse errgroup.Group
	for i := range followers {
		f := newFollower(fmt.Sprintf("%s?symbol=DRAIN%d&interval_ms=100", tickerPath, i), baseA, baseB)
		followers[i] = f
		var atSecond int // ticks when the second connection began
		sse.Go(func() error {
			return f.run(ctx, client, func(n int) bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.connects < 2 {
					return false
				}
				if atSecond == 0 {
					atSecond = n
				}
				return n >= atSecond+afterResume
			})
		})
	}

	type wsResult struct {
		fin    wsFinal
		echoed bool
	}
	wsResults := make([]wsResult, wsClients)
	wsEchoed := make(chan struct{}, wsClients)
	var ws errgroup.Group
	for i := range wsResults {
		ws.Go(func() error {
			conn, _, err := wsDial(ctx, baseA, echoPath, nil)
			if err != nil {
				return fmt.Errorf("WebSocket %d: %w", i, err)
			}
			defer conn.Close()
			msg, _ := proto.Marshal(&demov1.EchoRequest{Text: fmt.Sprint(i)})
			if err := conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				return fmt.Errorf("WebSocket %d: %w", i, err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(2 * testTimeout))
			for { // the headers frame, then the echo
				typ, _, err := conn.ReadMessage()
				if err != nil {
					return fmt.Errorf("WebSocket %d: before the echo: %w", i, err)
				}
				if typ == websocket.BinaryMessage {
					break
				}
			}
			wsResults[i].echoed = true
			wsEchoed <- struct{}{}
			wsResults[i].fin = wsReadToEnd(conn, time.Now().Add(2*testTimeout))
			return nil
		})
	}
	for range wsClients {
		select {
		case <-wsEchoed:
		case <-ctx.Done():
			t.Fatal("WebSockets did not all get their echo")
		}
	}
	waitFor(t, "every SSE client has ticks", func() bool {
		for _, f := range followers {
			if f.count() < 3 {
				return false
			}
		}
		return true
	})

	sigterm := time.Now()
	bridgeA.signal(syscall.SIGTERM)
	code, err := bridgeA.wait(drainTimeout + 5*time.Second)
	exitAfter := time.Since(sigterm)
	if err != nil || code != 0 {
		t.Errorf("bridge A after SIGTERM: exit %d, %v; want 0 within the drain timeout\n%s", code, err, bridgeA.out)
	}
	if err := ws.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := sse.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("bridge A exited %v after SIGTERM", exitAfter.Round(time.Millisecond))

	bad := 0
	for i, f := range followers {
		seqs := f.received()
		checkContiguous(t, fmt.Sprintf("SSE client %d", i), seqs, 1)
		if f.hints == 0 || f.connects != 2 {
			bad++
			if bad < 5 {
				t.Errorf("SSE client %d: %d retry hints, %d connections; want a hint and one resume", i, f.hints, f.connects)
			}
		}
	}
	codes := map[[2]int]int{}
	for _, r := range wsResults {
		st := -1
		if r.fin.st != nil {
			st = r.fin.st.Code
		}
		codes[[2]int{st, r.fin.closeCode}]++
	}
	if codes[[2]int{14, websocket.CloseGoingAway}] != wsClients {
		t.Errorf("WebSocket endings (status, close code): %v; want all %d UNAVAILABLE and 1001", codes, wsClients)
	}
	if bad > 0 {
		t.Errorf("%d of %d SSE clients did not resume once after a retry hint", bad, sseClients)
	}
}
