package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// TestSoak runs a bridge process under many SSE and WebSocket clients with
// messages flowing, and checks: no unexpected error on any client, every
// stream gap-free, the bridge's heap flat over the run, and its goroutines
// back at their baseline once the clients have left.
//
// By default it is the short version for CI (500 SSE, 100 WebSocket, 5 s).
// -soak=60s runs the full size (5,000 SSE, 1,000 WebSocket) for that long:
// make soak.
func TestSoak(t *testing.T) {
	sseClients, wsClients, hold := 500, 100, 5*time.Second
	if *soakDuration > 0 {
		sseClients, wsClients, hold = 5000, 1000, *soakDuration
	} else if testing.Short() {
		t.Skip("the soak runs a bridge process")
	}
	if need := uint64(2*(sseClients+wsClients) + 500); openFileLimit() < need {
		t.Skipf("open file limit %d; the soak needs %d", openFileLimit(), need)
	}
	be := newBackend(t)
	be.start()
	addr := freeAddr(t)
	bridgeProc := startProc(t, addr, buildBinary(t, "./cmd/bridge"), "-addr", addr, "-backend", be.addr, "-descriptors", "builtin",
		"-expose", "demo.v1.*", "-log-level", "warn", "-drain-timeout", "5s")
	base := "http://" + addr
	metricsClient := newHTTPClient(t)
	baseline := scrape(t, metricsClient, base)
	t.Logf("baseline: %s", baseline)

	tr := &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var (
		errsMu   sync.Mutex
		errs     []error
		sseMsgs  atomic.Int64
		wsMsgs   atomic.Int64
		sseReady atomic.Int64
		wsReady  atomic.Int64
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errsMu.Lock()
		defer errsMu.Unlock()
		errs = append(errs, err)
	}
	start := time.Now()
	// Ramp up at about 1,000 connections a second, so that the accept
	// queue does not overflow.
	ramp := time.NewTicker(time.Millisecond)
	defer ramp.Stop()
	for i := range sseClients {
		<-ramp.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := soakSSE(ctx, client, base, i, &sseMsgs, &sseReady); err != nil {
				fail(err)
			}
		}()
	}
	for i := range wsClients {
		<-ramp.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := soakWS(ctx, base, i, &wsMsgs, &wsReady); err != nil {
				fail(err)
			}
		}()
	}
	waitFor(t, "every client streams", func() bool {
		return sseReady.Load() == int64(sseClients) && wsReady.Load() == int64(wsClients) || ctx.Err() != nil
	})
	rampTime := time.Since(start)
	// Steady state: sample the bridge every second.
	var samples []metrics
	steadyStart := time.Now()
	sse0, ws0 := sseMsgs.Load(), wsMsgs.Load()
	for time.Since(steadyStart) < hold {
		time.Sleep(time.Second)
		samples = append(samples, scrape(t, metricsClient, base))
	}
	steady := time.Since(steadyStart)
	sseRate := float64(sseMsgs.Load()-sse0) / steady.Seconds()
	wsRate := float64(wsMsgs.Load()-ws0) / steady.Seconds()
	cancel()
	wg.Wait()
	tr.CloseIdleConnections()

	// Goroutines back at the baseline once every stream has ended.
	var after metrics
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = scrape(t, metricsClient, base)
		if after.goroutines <= baseline.goroutines+5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	first, last, peak := samples[0], samples[len(samples)-1], samples[0]
	for _, s := range samples {
		if s.heapInuse > peak.heapInuse {
			peak.heapInuse = s.heapInuse
		}
		if s.rss > peak.rss {
			peak.rss = s.rss
		}
		if s.goroutines > peak.goroutines {
			peak.goroutines = s.goroutines
		}
	}
	report := fmt.Sprintf("soak: %d SSE + %d WebSocket clients, ramp %v, steady %v; "+
		"SSE %.0f msg/s, WebSocket %.0f round trips/s; bridge heap in use first %s, last %s, peak %s; RSS peak %s; "+
		"goroutines baseline %d, peak %d, after %d; errors %d",
		sseClients, wsClients, rampTime.Round(time.Millisecond), steady.Round(time.Millisecond), sseRate, wsRate,
		mib(first.heapInuse), mib(last.heapInuse), mib(peak.heapInuse), mib(peak.rss),
		baseline.goroutines, peak.goroutines, after.goroutines, len(errs))
	t.Log(report)
	var series []string
	for i, s := range samples {
		if i%5 == 0 || i == len(samples)-1 {
			series = append(series, fmt.Sprintf("%ds %s", i+1, mib(s.heapInuse)))
		}
	}
	t.Logf("heap in use over the steady state: %s", strings.Join(series, ", "))
	if path := os.Getenv("SOAK_REPORT"); path != "" {
		_ = os.WriteFile(path, []byte(report+"\n"), 0o644)
	}
	for i, err := range errs {
		if i == 10 {
			t.Errorf("... and %d more errors", len(errs)-10)
			break
		}
		t.Error(err)
	}
	// Flat: after the warm-up (the first quarter of the steady state, in
	// which per-stream buffers reach their working size), the heap of the
	// last quarter is within 15 % (plus 16 MiB of GC slack) of the second
	// quarter's.
	q := len(samples) / 4
	if q > 0 {
		second, fourth := avgHeap(samples[q:2*q]), avgHeap(samples[len(samples)-q:])
		t.Logf("heap in use, average of the second quarter %s, of the last %s", mib(second), mib(fourth))
		if fourth > 1.15*second+16<<20 {
			t.Errorf("bridge heap grew from %s to %s during the steady state", mib(second), mib(fourth))
		}
	}
	if after.goroutines > baseline.goroutines+5 {
		t.Errorf("bridge goroutines %d after the clients left; baseline %d", after.goroutines, baseline.goroutines)
	}
	if sseRate < 0.5*float64(sseClients) || wsRate < 0.5*float64(wsClients) {
		t.Errorf("messages did not flow: SSE %.0f/s for %d clients, WebSocket %.0f/s for %d clients", sseRate, sseClients, wsRate, wsClients)
	}
	if _, err := bridgeProc.wait(0); err == nil {
		t.Errorf("the bridge exited during the soak:\n%s", bridgeProc.out)
	}
}

// soakSSE follows a ticker at one tick a second until ctx ends, checking
// that ticks are contiguous.
func soakSSE(ctx context.Context, client *http.Client, base string, i int, msgs, ready *atomic.Int64) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s%s?symbol=SOAK%d&interval_ms=1000", base, tickerPath, i), nil)
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("SSE %d: %w", i, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("SSE %d: HTTP %d", i, resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	var want uint64 = 1
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("SSE %d: after %d ticks: %w", i, want-1, err)
		}
		switch {
		case strings.HasPrefix(line, "id: "):
			id, err := strconv.ParseUint(strings.TrimSpace(line[4:]), 10, 64)
			if err != nil || id != want {
				return fmt.Errorf("SSE %d: event id %q, want %d", i, line, want)
			}
			if want == 1 {
				ready.Add(1)
			}
			want++
			msgs.Add(1)
		case strings.HasPrefix(line, "event: error"), strings.HasPrefix(line, "event: end"):
			return fmt.Errorf("SSE %d: unexpected %q after %d ticks", i, strings.TrimSpace(line), want-1)
		}
	}
}

// soakWS echoes one message a second until ctx ends, checking the echo's
// sequence number.
func soakWS(ctx context.Context, base string, i int, msgs, ready *atomic.Int64) error {
	conn, _, err := wsDial(ctx, base, echoPath, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("WebSocket %d: %w", i, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	payload := make([]byte, 256)
	for seq := uint64(1); ; seq++ {
		msg, _ := proto.Marshal(&demov1.EchoRequest{Text: strconv.Itoa(i), Payload: payload})
		if err := conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("WebSocket %d: send %d: %w", i, seq, err)
		}
		for {
			typ, data, err := conn.ReadMessage()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("WebSocket %d: echo %d: %w", i, seq, err)
			}
			if typ != websocket.BinaryMessage {
				if strings.Contains(string(data), `"status"`) {
					return fmt.Errorf("WebSocket %d: call ended: %s", i, data)
				}
				continue
			}
			var resp demov1.EchoResponse
			if err := proto.Unmarshal(data, &resp); err != nil || resp.GetSeq() != seq || resp.GetText() != strconv.Itoa(i) {
				return fmt.Errorf("WebSocket %d: echo %v (%v), want seq %d", i, &resp, err, seq)
			}
			break
		}
		if seq == 1 {
			ready.Add(1)
		}
		msgs.Add(1)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// metrics are the bridge process's figures from its /metrics endpoint.
type metrics struct {
	goroutines int
	heapInuse  float64
	rss        float64
}

func (m metrics) String() string {
	return fmt.Sprintf("%d goroutines, heap in use %s, RSS %s", m.goroutines, mib(m.heapInuse), mib(m.rss))
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// scrape reads the Go runtime and process collectors' figures.
func scrape(t testing.TB, client *http.Client, base string) metrics {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	var m metrics
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_goroutines":
			m.goroutines = int(v)
		case "go_memstats_heap_inuse_bytes":
			m.heapInuse = v
		case "process_resident_memory_bytes":
			m.rss = v
		}
	}
	if m.goroutines == 0 {
		t.Fatal(errors.New("scrape: no go_goroutines in /metrics"))
	}
	return m
}

func avgHeap(ms []metrics) float64 {
	var sum float64
	for _, m := range ms {
		sum += m.heapInuse
	}
	return sum / float64(len(ms))
}
