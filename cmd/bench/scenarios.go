package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const kib = 1 << 10

// scenarioStream is scenario 1: one server stream of ~100-byte messages
// (as JSON) as fast as the backend sends, over direct gRPC, the bridge's
// SSE and grpc-gateway's NDJSON, in interleaved runs.
func (h *harness) scenarioStream(ctx context.Context) error {
	c := h.cfg
	h.printf("\n## 1. One server stream, small messages, as fast as the backend sends\n\n")
	backend, err := h.startDemo()
	if err != nil {
		return err
	}
	br, err := h.startBridge("bridge-stream", backend, c.profileDir != "")
	if err != nil {
		return err
	}
	gw, gwProc, err := h.startGateway(backend)
	if err != nil {
		return err
	}
	relay, relayProc, err := h.startRelay(backend)
	if err != nil {
		return err
	}
	targets := []struct {
		name, load, addr string // load: load-stream's -target
		server           *proc  // whose CPU is charged to the messages; nil for direct
	}{
		{"direct", "direct", backend, nil},
		{"relay", "direct", relay, relayProc},
		{"sse", "sse", br.addr, br.proc},
		{"gateway", "gateway", gw, gwProc},
	}
	h.printf("EchoService/Stream {size: 60, interval_ms: 0}: JSON `{\"payload\":\"<80 base64>\",\"seq\":\"N\"}` is ~100 bytes; "+
		"%d interleaved runs of %v each (after a 300 ms warm-up) per target; one client process per run. "+
		"`relay` is direct gRPC through `bench relay`, a process that only forwards bytes: "+
		"what a third process on the path costs before it does any work.\n\n", c.rounds, c.streamDur)
	dur := c.streamDur.String()
	for _, t := range targets { // warm-up: connections, JIT-free but caches and pools
		var r streamResult
		if err := h.bins.runLoad(ctx, &r, "load-stream", "-target", t.load, "-addr", t.addr, "-dur", "500ms"); err != nil {
			return err
		}
	}
	rates := make(map[string][]float64)
	cpuPer := make(map[string][]float64) // server CPU µs per message
	for i := range c.rounds {
		h.progress("stream: round %d of %d", i+1, c.rounds)
		for _, t := range targets {
			var cpu0 time.Duration
			if t.server != nil {
				_, cpu0, _ = procStat(t.server.pid())
			}
			var r streamResult
			if err := h.bins.runLoad(ctx, &r, "load-stream", "-target", t.load, "-addr", t.addr, "-dur", dur); err != nil {
				return err
			}
			rates[t.name] = append(rates[t.name], r.PerSec)
			if t.server != nil {
				_, cpu1, _ := procStat(t.server.pid())
				// The server's CPU over the whole run, warm-up included.
				warmMsgs := r.PerSec * 0.3
				cpuPer[t.name] = append(cpuPer[t.name], float64((cpu1-cpu0).Microseconds())/(float64(r.Messages)+warmMsgs))
			}
		}
	}
	h.printf("| target | msgs/s per run | median msgs/s | server CPU µs/msg (median) |\n|---|---|---|---|\n")
	for _, t := range targets {
		cpu := "-"
		if t.server != nil {
			cpu = fmt.Sprintf("%.2f", median(cpuPer[t.name]))
		}
		h.printf("| %s | %s | %.0f | %s |\n", t.name, joinf(rates[t.name], "%.0f"), median(rates[t.name]), cpu)
	}
	d, rl, s, g := median(rates["direct"]), median(rates["relay"]), median(rates["sse"]), median(rates["gateway"])
	h.printf("\n- bridge SSE / direct gRPC: **%.2fx** (target >= 0.6x); relay / direct %.2fx; bridge SSE / relay %.2fx\n", ratio(s, d), ratio(rl, d), ratio(s, rl))
	h.printf("- bridge SSE / grpc-gateway NDJSON: **%.2fx** (target >= 6x)\n", ratio(s, g))

	if c.profileDir == "" {
		return nil
	}
	// Profiles from a separate, unmeasured run.
	cpuFile := filepath.Join(c.profileDir, "stream-cpu.pprof")
	allocFile := filepath.Join(c.profileDir, "stream-allocs.pprof")
	done := make(chan error, 1)
	go func() {
		var r streamResult
		done <- h.bins.runLoad(ctx, &r, "load-stream", "-target", "sse", "-addr", br.addr, "-dur", "4s")
	}()
	time.Sleep(500 * time.Millisecond)
	perr := fetch("http://"+br.pprofAddr+"/debug/pprof/profile?seconds=3", cpuFile, 30*time.Second)
	if err := <-done; err != nil {
		return err
	}
	if perr != nil {
		return perr
	}
	if err := fetch("http://"+br.pprofAddr+"/debug/pprof/allocs", allocFile, 30*time.Second); err != nil {
		return err
	}
	h.printf("\nBridge CPU profile of a 3 s SSE run (%s), top 25 by flat time:\n\n```\n%s```\n", cpuFile, pprofTop(ctx, cpuFile, 25))
	h.printf("\nTop 25 by cumulative time:\n\n```\n%s```\n", pprofTop(ctx, cpuFile, 25, "-cum"))
	h.printf("\nBridge allocations over the scenario (%s), top 15 by bytes:\n\n```\n%s```\n", allocFile,
		pprofTop(ctx, allocFile, 15, "-sample_index=alloc_space"))
	return nil
}

// scenarioEcho is scenario 2: sequential WebSocket echo round trips through
// the bridge against direct gRPC bidi on the same backend, then pipelined
// throughput.
func (h *harness) scenarioEcho(ctx context.Context) error {
	c := h.cfg
	h.printf("\n## 2. Bidi echo: WebSocket through the bridge vs direct gRPC\n\n")
	backend, err := h.startDemo()
	if err != nil {
		return err
	}
	br, err := h.startBridge("bridge-echo", backend, false)
	if err != nil {
		return err
	}
	relay, _, err := h.startRelay(backend)
	if err != nil {
		return err
	}
	h.printf("EchoService/Echo with a 60-byte payload: %d sequential round trips per run (after 200 unmeasured), "+
		"then %v pipelined with 64 in flight; %d interleaved runs per target. "+
		"`relay` is the direct gRPC client through `bench relay`, a process that only forwards bytes (io.Copy, which splices): "+
		"what a third process on the path costs here before it does any work.\n\n", c.rtts, c.pipeDur, c.rounds)
	targets := []struct{ name, target, addr string }{{"direct", "direct", backend}, {"relay", "direct", relay}, {"ws", "ws", br.addr}}
	res := make(map[string][]wsResult)
	for range c.rounds {
		for _, t := range targets {
			var r wsResult
			if err := h.bins.runLoad(ctx, &r, "load-ws", "-target", t.target, "-addr", t.addr,
				"-n", strconv.Itoa(c.rtts), "-pipeline", c.pipeDur.String()); err != nil {
				return err
			}
			res[t.name] = append(res[t.name], r)
		}
	}
	pick := func(name string, f func(wsResult) float64) []float64 {
		var xs []float64
		for _, r := range res[name] {
			xs = append(xs, f(r))
		}
		return xs
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	p50 := func(r wsResult) float64 { return us(r.RTT.P50) }
	p99 := func(r wsResult) float64 { return us(r.RTT.P99) }
	h.printf("| target | p50 µs per run | p99 µs per run | median p50 µs | median p99 µs | round trips/s (median) | pipelined msgs/s (median) |\n|---|---|---|---|---|---|---|\n")
	for _, t := range targets {
		h.printf("| %s | %s | %s | %.0f | %.0f | %.0f | %.0f |\n", t.name,
			joinf(pick(t.name, p50), "%.0f"), joinf(pick(t.name, p99), "%.0f"),
			median(pick(t.name, p50)), median(pick(t.name, p99)),
			median(pick(t.name, func(r wsResult) float64 { return r.RTTPerSec })),
			median(pick(t.name, func(r wsResult) float64 { return r.Pipelined })))
	}
	dp50, rp50, wp50 := median(pick("direct", p50)), median(pick("relay", p50)), median(pick("ws", p50))
	pipe := func(name string) float64 {
		return median(pick(name, func(r wsResult) float64 { return r.Pipelined }))
	}
	h.printf("\n- WebSocket p50 overhead over direct: **%.0f µs** (target <= 60 µs); p99 overhead %.0f µs\n",
		wp50-dp50, median(pick("ws", p99))-median(pick("direct", p99)))
	h.printf("- p50 / direct: WebSocket **%.2fx** (target <= 1.5x), relay %.2fx; WebSocket / relay %.2fx\n",
		ratio(wp50, dp50), ratio(rp50, dp50), ratio(wp50, rp50))
	h.printf("- pipelined throughput / direct: WebSocket **%.2fx** (target >= 0.6x), relay %.2fx; WebSocket / relay %.2fx\n",
		ratio(pipe("ws"), pipe("direct")), ratio(pipe("relay"), pipe("direct")), ratio(pipe("ws"), pipe("relay")))
	return nil
}

// idleVariant is one kind of scenario 3: how the streams are carried.
type idleVariant struct {
	name       string   // of the bridge's log and the profiles: idle, idle-gzip, idle-h2
	title      string   // appended to the section's title
	transport  string   // how each stream travels, for the report
	bridgeArgs []string // extra flags of the bridge
	genArgs    []string // extra flags of load-idle
}

// idleVariant returns scenario 3's variant id: 3 (HTTP/1.1), 3gz (HTTP/1.1,
// gzip), 3h2 (h2c: c.h2Conns connections) or 3h2tls (the same over TLS).
func (h *harness) idleVariant(id string) (idleVariant, error) {
	c := h.cfg
	h1 := "over HTTP/1.1 (its own TCP connection)"
	switch id {
	case "3gz":
		cfg := filepath.Join(h.work, "bridge-idle-gzip.yaml")
		if err := os.WriteFile(cfg, []byte("methods:\n  demo.v1.TickerService/Watch:\n    compression: {sse: true}\n"), 0o644); err != nil {
			return idleVariant{}, err
		}
		return idleVariant{name: "idle-gzip", title: ", gzip (3gz)", transport: h1 + ", gzipped", bridgeArgs: []string{"-config", cfg}, genArgs: []string{"-gzip"}}, nil
	case "3h2":
		return idleVariant{name: "idle-h2", title: fmt.Sprintf(" over HTTP/2 (3h2: h2c, %d connections)", c.h2Conns),
			transport: fmt.Sprintf("over cleartext HTTP/2 with prior knowledge (h2c), %d streams on each of %d connections", c.idle/c.h2Conns, c.h2Conns),
			genArgs:   []string{"-h2c", strconv.Itoa(c.h2Conns)},
		}, nil
	case "3h2tls":
		cert, key, err := loopbackCert(h.work)
		if err != nil {
			return idleVariant{}, err
		}
		return idleVariant{name: "idle-h2tls", title: fmt.Sprintf(" over HTTP/2 with TLS (3h2tls: %d connections)", c.h2Conns),
			transport:  fmt.Sprintf("over HTTP/2 with TLS (ALPN h2, a self-signed P-256 certificate), %d streams on each of %d connections", c.idle/c.h2Conns, c.h2Conns),
			bridgeArgs: []string{"-tls-cert", cert, "-tls-key", key},
			genArgs:    []string{"-h2c", strconv.Itoa(c.h2Conns), "-tls-ca", cert},
		}, nil
	}
	return idleVariant{name: "idle", transport: h1}, nil
}

// scenarioIdle is scenario 3: idle SSE streams held by a load generator in
// its own process; the bridge's RSS and goroutines per stream, and their
// return to the baseline after the clients leave. Variant 3gz turns the
// method's SSE compression on and every stream asks for gzip: what
// compression costs an idle stream; 3h2 carries the streams over h2c.
func (h *harness) scenarioIdle(ctx context.Context, id string) error {
	c := h.cfg
	v, err := h.idleVariant(id)
	if err != nil {
		return err
	}
	name, title, extra, genArgs := v.name, v.title, v.bridgeArgs, v.genArgs
	h.printf("\n## 3. %d concurrent idle SSE streams%s\n\n", c.idle, title)
	backend, err := h.startDemo()
	if err != nil {
		return err
	}
	br, err := h.startBridge("bridge-"+name, backend, c.profileDir != "", extra...)
	if err != nil {
		return err
	}
	// Warm up: the backend connection and the handler's pools, so the
	// baseline is a bridge that has served.
	if err := warmSSE(br.url()); err != nil {
		return err
	}
	time.Sleep(time.Second)
	g0, err := goroutines(br.url())
	if err != nil {
		return err
	}
	memAtBaseline, err := scrape(br.url(), "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return err
	}
	rss0, _, err := procStat(br.pid())
	if err != nil {
		return err
	}
	// No shared config here: every stream is its own upstream call.
	path := "/demo.v1.TickerService/Watch?symbol=IDLE&interval_ms=3600000"
	h.printf("Each stream: `GET %s` %s; the first tick comes at once, then nothing but the 15 s heartbeat. "+
		"The bridge's RSS is VmRSS from /proc, its goroutines go_goroutines from /metrics.\n\n", path, v.transport)
	h.progress("idle: opening %d streams", c.idle)
	gen, err := h.bins.startSession(append([]string{"load-idle", "-addr", br.addr, "-path", path, "-n", strconv.Itoa(c.idle)}, genArgs...)...)
	if err != nil {
		return err
	}
	defer gen.close(10 * time.Second)
	openSecs, err := gen.expect("open")
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let the last streams settle
	g1, err := goroutines(br.url())
	if err != nil {
		return err
	}
	rss1, _, err := procStat(br.pid())
	if err != nil {
		return err
	}
	genRSS, _, _ := procStat(gen.pid())
	// Where the memory is: goroutine stacks or heap objects.
	const stack, heap = "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes"
	mem0, mem1 := memAtBaseline, map[string]float64(nil)
	if mem1, err = scrape(br.url(), stack, heap); err != nil {
		return err
	}
	n := float64(c.idle)
	h.printf("| | goroutines | RSS |\n|---|---|---|\n")
	h.printf("| baseline (after one warm-up stream) | %d | %.1f MiB |\n", g0, mib(rss0))
	h.printf("| %d streams open (opened in %s s) | %d | %.1f MiB |\n", c.idle, openSecs, g1, mib(rss1))
	h.printf("| **per stream** | **%.2f** (target <= 2) | **%.1f KiB** (target <= 16 KiB) |\n\n",
		float64(g1-g0)/n, float64(rss1-rss0)/n/kib)
	h.printf("Of the RSS per stream: goroutine stacks %.1f KiB (go_memstats_stack_inuse_bytes), heap objects %.1f KiB (go_memstats_heap_inuse_bytes).\n",
		(mem1[stack]-mem0[stack])/n/kib, (mem1[heap]-mem0[heap])/n/kib)
	h.printf("(The load generator held %.1f MiB RSS for its %d connections.)\n", mib(genRSS), c.idle)

	var heapFile, goroutineFile string
	if c.profileDir != "" {
		heapFile = filepath.Join(c.profileDir, name+"-heap.pprof")
		goroutineFile = filepath.Join(c.profileDir, name+"-goroutines.txt")
		// gc=1: the profile of the live heap, after a collection. The
		// figures above include the garbage of opening the streams
		// (net/http's buffers of hijacked connections among it), which the
		// next GC cycle frees; an idle bridge allocates nothing, so that
		// cycle may be minutes away.
		if err := fetch("http://"+br.pprofAddr+"/debug/pprof/heap?gc=1", heapFile, 30*time.Second); err != nil {
			return err
		}
		if err := fetch("http://"+br.pprofAddr+"/debug/pprof/goroutine?debug=1", goroutineFile, 30*time.Second); err != nil {
			return err
		}
		mem2, err := scrape(br.url(), stack, heap)
		if err != nil {
			return err
		}
		h.printf("After one GC (run by the heap profile's gc=1): goroutine stacks %.1f KiB and heap objects %.1f KiB per stream, %.1f KiB together "+
			"(RSS does not drop at once: the runtime returns freed pages to the OS gradually).\n",
			(mem2[stack]-mem0[stack])/n/kib, (mem2[heap]-mem0[heap])/n/kib, (mem2[stack]+mem2[heap]-mem0[stack]-mem0[heap])/n/kib)
	}

	// The clients leave.
	if err := gen.send("close"); err != nil {
		return err
	}
	if _, err := gen.expect("closed"); err != nil {
		return err
	}
	left := time.Now()
	h.progress("idle: clients left; sampling")
	var gAt1s = -1
	var gBack time.Duration = -1
	var gSeries []string
	for t := time.Duration(0); t <= 5*time.Second; t += 100 * time.Millisecond {
		time.Sleep(time.Until(left.Add(t)))
		g, err := goroutines(br.url())
		if err != nil {
			return err
		}
		if t <= time.Second {
			gSeries = append(gSeries, strconv.Itoa(g))
			gAt1s = g
		}
		if g <= g0 && gBack < 0 {
			gBack = time.Since(left)
		}
		if t >= time.Second && gBack >= 0 {
			break
		}
	}
	var rssBack time.Duration = -1
	var rssSeries []string
	var rssLast int64
	for t := time.Second; t <= 30*time.Second; t += time.Second {
		time.Sleep(time.Until(left.Add(t)))
		rss, _, err := procStat(br.pid())
		if err != nil {
			return err
		}
		rssLast = rss
		rssSeries = append(rssSeries, fmt.Sprintf("%.0f", mib(rss)))
		if rss <= 2*rss0 {
			rssBack = time.Since(left)
			break
		}
	}
	h.printf("\nAfter the clients leave:\n\n")
	h.printf("- goroutines every 100 ms for 1 s: %s (baseline %d); at 1 s: %d; back at or below the baseline: %s (target: within 1 s)\n",
		strings.Join(gSeries, " "), g0, gAt1s, durOrNever(gBack, "not within 5 s"))
	h.printf("- RSS every 1 s (MiB): %s (baseline %.1f MiB, 2x = %.1f MiB); last %.1f MiB; within 2x baseline: %s (target: within 30 s)\n",
		strings.Join(rssSeries, " "), mib(rss0), 2*mib(rss0), mib(rssLast), durOrNever(rssBack, "not within 30 s"))

	if heapFile != "" {
		h.printf("\nBridge heap at %d streams (%s), top 20 by in-use bytes:\n\n```\n%s```\n", c.idle, heapFile,
			pprofTop(ctx, heapFile, 20, "-sample_index=inuse_space"))
		h.printf("\nBridge goroutines at %d streams, by where they wait (%s):\n\n```\n%s```\n", c.idle, goroutineFile, topGoroutines(goroutineFile, 10))
	}
	if id == "3" || id == "3h2" {
		h.stopAll()
		bf := &idleFigures{g0: g0, g1: g1, rss0: rss0, rss1: rss1, mem0: mem0, mem1: mem1, openSecs: openSecs}
		if err := h.idleFloor(v, path, bf); err != nil {
			return fmt.Errorf("the floor: %w", err)
		}
	}
	if id == "3" && c.burst > 0 {
		h.stopAll()
		return h.burst(ctx)
	}
	return nil
}

// burst is scenario 3's last part: c.idle streams open and all close
// c.burst after the first began to open, on a fresh bridge; then its RSS
// every 250 ms until it is back within 2x its baseline. With
// c.compareBridge, rounds alternate between that binary and the one built.
func (h *harness) burst(ctx context.Context) error {
	c := h.cfg
	h.printf("\n### 3b. A burst: %d streams that all close %v after the first began to open\n\n", c.idle, c.burst)
	bins := []struct{ name, bin string }{{"this bridge", h.bins.bridge}}
	if c.compareBridge != "" {
		bins = append(bins, struct{ name, bin string }{"-compare-bridge " + filepath.Base(c.compareBridge), c.compareBridge})
	}
	h.printf("Over HTTP/1.1, as scenario 3; a fresh bridge each round, warmed by one stream; %d round(s) per binary, interleaved. "+
		"RSS (VmRSS) every 250 ms after the last stream closed, for up to 20 s.\n\n", c.burstRounds)
	h.printf("| round | bridge | baseline RSS | peak RSS seen | streams opened in | RSS at 1 s, 2 s, 5 s, 10 s after (MiB) | within 2x baseline |\n|---|---|---|---|---|---|---|\n")
	back := make(map[string][]float64) // seconds; 20+ for never
	const never = 20 * time.Second
	for round := range c.burstRounds {
		for j := range bins {
			b := bins[(j+round)%len(bins)] // alternate which goes first
			h.progress("burst: round %d, %s", round+1, b.name)
			r, err := h.burstOnce(ctx, b.bin)
			h.stopAll()
			if err != nil {
				return err
			}
			at := func(d time.Duration) string {
				i := int(d/(250*time.Millisecond)) - 1
				if i < len(r.series) {
					return fmt.Sprintf("%.0f", mib(r.series[i]))
				}
				return "-"
			}
			when := durOrNever(r.back, fmt.Sprintf("not within %v", never))
			h.printf("| %d | %s | %.1f MiB | %.1f MiB | %s s | %s, %s, %s, %s | %s |\n", round+1, b.name, mib(r.rss0), mib(r.peak), r.openSecs,
				at(time.Second), at(2*time.Second), at(5*time.Second), at(10*time.Second), when)
			if r.back < 0 {
				r.back = never
			}
			back[b.name] = append(back[b.name], r.back.Seconds())
		}
	}
	h.printf("\n")
	for _, b := range bins {
		h.printf("- %s: back within 2x baseline after **%.2f s** (median of %d; target within 10 s)\n", b.name, median(back[b.name]), len(back[b.name]))
	}
	return nil
}

type burstResult struct {
	rss0, peak int64
	openSecs   string
	series     []int64       // RSS every 250 ms after the streams closed
	back       time.Duration // -1: not within 20 s
}

func (h *harness) burstOnce(ctx context.Context, bin string) (*burstResult, error) {
	c := h.cfg
	backend, err := h.startDemo()
	if err != nil {
		return nil, err
	}
	br, err := h.startBridgeBin("bridge-burst", bin, backend, false)
	if err != nil {
		return nil, err
	}
	if err := warmSSE(br.url()); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	r := &burstResult{back: -1}
	if r.rss0, _, err = procStat(br.pid()); err != nil {
		return nil, err
	}
	gen, err := h.bins.startSession("load-idle", "-addr", br.addr, "-path", "/demo.v1.TickerService/Watch?symbol=BURST&interval_ms=3600000", "-n", strconv.Itoa(c.idle))
	if err != nil {
		return nil, err
	}
	defer gen.close(10 * time.Second)
	if r.openSecs, err = gen.expect("open"); err != nil {
		return nil, err
	}
	if r.peak, _, err = procStat(br.pid()); err != nil {
		return nil, err
	}
	if err := gen.send("hold " + c.burst.String()); err != nil {
		return nil, err
	}
	if _, err := gen.expect("closed"); err != nil {
		return nil, err
	}
	left := time.Now()
	for t := 250 * time.Millisecond; t <= 20*time.Second; t += 250 * time.Millisecond {
		select {
		case <-time.After(time.Until(left.Add(t))):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		rss, _, err := procStat(br.pid())
		if err != nil {
			return nil, err
		}
		r.peak = max(r.peak, rss)
		r.series = append(r.series, rss)
		if rss <= 2*r.rss0 && r.back < 0 {
			r.back = time.Since(left)
		}
		if r.back >= 0 && t >= 10*time.Second {
			break
		}
	}
	return r, nil
}

// scenarioFanout is scenario 4: one upstream ticker shared by many SSE
// subscribers, through the bridge's shared-stream option.
func (h *harness) scenarioFanout(ctx context.Context) error {
	c := h.cfg
	h.printf("\n## 4. Fan-out: one upstream stream to %d SSE subscribers\n\n", c.subscribers)
	path := fmt.Sprintf("/demo.v1.TickerService/Watch?symbol=FAN&interval_ms=%d", c.tick.Milliseconds())
	h.printf("Every subscriber: `GET %s` (the same request), over its own HTTP/1.1 connection, from one load-generator process. "+
		"Latency: the subscriber's receive time minus the tick's `time` field (set by the backend; same machine, same clock). "+
		"CPU: the bridge's utime+stime over the measured %v divided by the ticks delivered in it.\n\n", path, c.fanoutDur)
	conf, err := h.sharedConfig()
	if err != nil {
		return err
	}
	shared, err := h.fanout(ctx, path, c.profileDir != "", "-config", conf)
	var skip *configRejected
	if errors.As(err, &skip) {
		h.printf("**skipped: shared streams not available** (the bridge rejected `methods: {\"demo.v1.TickerService/Watch\": {shared: true}}`: %s)\n", skip.msg)
	} else if err != nil {
		return err
	}
	var unshared *fanoutFigures
	if c.unshared {
		h.stopAll()
		if unshared, err = h.fanout(ctx, path, false); err != nil {
			return err
		}
	}
	if shared == nil && unshared == nil {
		return nil
	}
	h.printf("| | p50 | p99 | max | ticks delivered | delivered/s | bridge CPU µs per delivered tick | load generator CPU µs per tick | bridge goroutines | bridge RSS | streams dropped |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		f    *fanoutFigures
	}{{"shared: true", shared}, {"unshared (one upstream call each), for comparison", unshared}} {
		if row.f == nil {
			continue
		}
		f := row.f
		h.printf("| %s | %v | %v | %v | %d | %.0f | %.2f | %.2f | %d | %.0f MiB | %d |\n", row.name,
			f.res.Latency.P50.Round(10*time.Microsecond), f.res.Latency.P99.Round(10*time.Microsecond), f.res.Latency.Max.Round(10*time.Microsecond),
			f.res.Messages, float64(f.res.Messages)/f.secs, f.cpuPerMsg, f.genCPU, f.goroutines, mib(f.rss), f.res.Dropped)
	}
	if shared != nil {
		h.printf("\n- shared fan-out p99: **%v** (target <= 50 ms)\n", shared.res.Latency.P99.Round(10*time.Microsecond))
		if shared.profile != "" {
			h.printf("\nBridge CPU profile of the shared fan-out (%s), top 25 by flat time:\n\n```\n%s```\n", shared.profile, pprofTop(ctx, shared.profile, 25))
			h.printf("\nTop 25 by cumulative time:\n\n```\n%s```\n", pprofTop(ctx, shared.profile, 25, "-cum"))
		}
	}
	return nil
}

// sharedConfig writes the bridge config that shares the ticker.
func (h *harness) sharedConfig() (string, error) {
	conf := filepath.Join(h.work, "shared.yaml")
	return conf, os.WriteFile(conf, []byte("methods:\n  \"demo.v1.TickerService/Watch\": {shared: true}\n"), 0o644)
}

// scenarioFanoutH2 is scenario 4h2: the shared fan-out of scenario 4 with
// the subscribers over h2c, c.h2Conns connections, against the same over
// HTTP/1.1, a connection each; c.fanoutRounds interleaved rounds.
func (h *harness) scenarioFanoutH2(ctx context.Context) error {
	c := h.cfg
	h.printf("\n## 4h2. Fan-out over HTTP/2: %d SSE subscribers over %d h2c connections against %d HTTP/1.1 connections\n\n",
		c.subscribers, c.h2Conns, c.subscribers)
	path := fmt.Sprintf("/demo.v1.TickerService/Watch?symbol=FAN&interval_ms=%d", c.tick.Milliseconds())
	h.printf("As scenario 4 with `shared: true`: `GET %s`; over HTTP/2 the subscribers are spread evenly over the connections "+
		"(%d on each; one net/http client per connection, cleartext HTTP/2 with prior knowledge). %d interleaved round(s) of %v each; "+
		"a fresh bridge every run.\n\n", path, c.subscribers/c.h2Conns, c.fanoutRounds, c.fanoutDur)
	conf, err := h.sharedConfig()
	if err != nil {
		return err
	}
	targets := []struct {
		name    string
		genArgs []string
	}{{"HTTP/1.1", nil}, {"h2c", []string{"-h2c", strconv.Itoa(c.h2Conns)}}}
	res := make(map[string][]*fanoutFigures)
	h.printf("| round | transport | p50 | p99 | max | ticks delivered | bridge CPU µs per delivered tick | bridge write(2) per delivered tick | load generator CPU µs per tick | bridge goroutines | bridge RSS | dropped |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for round := range c.fanoutRounds {
		for j := range targets {
			t := targets[(j+round)%len(targets)]
			profile := c.profileDir != "" && round == 0 && t.genArgs != nil
			f, err := h.fanoutOver(ctx, path, profile, t.genArgs, "-config", conf)
			h.stopAll()
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			res[t.name] = append(res[t.name], f)
			h.printf("| %d | %s | %v | %v | %v | %d | %.2f | %.3f | %.2f | %d | %.0f MiB | %d |\n", round+1, t.name,
				f.res.Latency.P50.Round(10*time.Microsecond), f.res.Latency.P99.Round(10*time.Microsecond), f.res.Latency.Max.Round(10*time.Microsecond),
				f.res.Messages, f.cpuPerMsg, f.writes, f.genCPU, f.goroutines, mib(f.rss), f.res.Dropped)
			if f.profile != "" {
				defer h.printf("\nBridge CPU profile of the h2c fan-out (%s), top 25 by flat time:\n\n```\n%s```\n", f.profile, pprofTop(ctx, f.profile, 25))
			}
		}
	}
	med := func(name string, pick func(*fanoutFigures) float64) float64 {
		var xs []float64
		for _, f := range res[name] {
			xs = append(xs, pick(f))
		}
		return median(xs)
	}
	p50 := func(f *fanoutFigures) float64 { return float64(f.res.Latency.P50) / float64(time.Millisecond) }
	p99 := func(f *fanoutFigures) float64 { return float64(f.res.Latency.P99) / float64(time.Millisecond) }
	cpu := func(f *fanoutFigures) float64 { return f.cpuPerMsg }
	writes := func(f *fanoutFigures) float64 { return f.writes }
	h.printf("\n| median | p50 | p99 | bridge CPU µs per delivery | bridge write(2) per delivery |\n|---|---|---|---|---|\n")
	for _, t := range targets {
		h.printf("| %s | %.1f ms | %.1f ms | %.2f | %.3f |\n", t.name, med(t.name, p50), med(t.name, p99), med(t.name, cpu), med(t.name, writes))
	}
	h.printf("\n- h2c / HTTP/1.1: p50 **%.2fx**, p99 **%.2fx**, CPU per delivery **%.2fx**\n",
		ratio(med("h2c", p50), med("HTTP/1.1", p50)), ratio(med("h2c", p99), med("HTTP/1.1", p99)), ratio(med("h2c", cpu), med("HTTP/1.1", cpu)))
	return nil
}

// configRejected tells that the bridge refused the shared-stream config.
type configRejected struct{ msg string }

func (e *configRejected) Error() string { return "config rejected: " + e.msg }

type fanoutFigures struct {
	res        fanoutResult
	secs       float64
	cpuPerMsg  float64 // µs
	genCPU     float64 // the load generator's µs per delivered tick
	writes     float64 // the bridge's write system calls per delivered tick
	profile    string  // CPU profile of the bridge, or ""
	goroutines int
	rss        int64
}

func (h *harness) fanout(ctx context.Context, path string, profile bool, extra ...string) (*fanoutFigures, error) {
	return h.fanoutOver(ctx, path, profile, nil, extra...)
}

// fanoutOver is fanout with extra flags of the load generator (genArgs).
func (h *harness) fanoutOver(ctx context.Context, path string, profile bool, genArgs []string, extra ...string) (*fanoutFigures, error) {
	c := h.cfg
	backend, err := h.startDemo()
	if err != nil {
		return nil, err
	}
	br, err := h.startBridge("bridge-fanout", backend, profile, extra...)
	if errors.Is(err, errExited) && br != nil && br.proc != nil {
		log, _ := os.ReadFile(br.logf)
		if strings.Contains(string(log), "shared") {
			return nil, &configRejected{msg: strings.TrimSpace(lastLine(string(log)))}
		}
	}
	if err != nil {
		return nil, err
	}
	h.progress("fan-out %v: opening %d subscribers", extra, c.subscribers)
	return h.measureFanout(ctx, br, path, profile, genArgs)
}

// measureFanout opens c.subscribers streams of path on br (a bridge, or a
// peer: a bridgeProc without pprof), then measures the deliveries for
// c.fanoutDur, with a CPU profile of the bridge if profile is set.
func (h *harness) measureFanout(ctx context.Context, br *bridgeProc, path string, profile bool, genArgs []string) (*fanoutFigures, error) {
	c := h.cfg
	gen, err := h.bins.startSession(append([]string{"load-fanout", "-addr", br.addr, "-path", path, "-n", strconv.Itoa(c.subscribers)}, genArgs...)...)
	if err != nil {
		return nil, err
	}
	defer gen.close(10 * time.Second)
	if _, err := gen.expect("open"); err != nil {
		return nil, err
	}
	h.progress("fan-out: open; measuring")
	time.Sleep(time.Second)
	f := &fanoutFigures{}
	if f.goroutines, err = goroutines(br.url()); err != nil {
		return nil, err
	}
	_, cpu0, err := procStat(br.pid())
	if err != nil {
		return nil, err
	}
	_, gcpu0, _ := procStat(gen.pid())
	w0, err := writeCalls(br.pid())
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := gen.send("start"); err != nil {
		return nil, err
	}
	if _, err := gen.expect("started"); err != nil {
		return nil, err
	}
	profiled := make(chan error, 1)
	if profile {
		// Over most of the measured time; 100 Hz sampling costs little.
		f.profile = filepath.Join(c.profileDir, "fanout-cpu.pprof")
		if len(genArgs) > 0 {
			f.profile = filepath.Join(c.profileDir, "fanout-h2-cpu.pprof")
		}
		secs := max(1, int(c.fanoutDur.Seconds())-2)
		go func() {
			profiled <- fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", br.pprofAddr, secs), f.profile, c.fanoutDur+30*time.Second)
		}()
	} else {
		profiled <- nil
	}
	select {
	case <-time.After(c.fanoutDur):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := gen.send("stop"); err != nil {
		return nil, err
	}
	f.secs = time.Since(start).Seconds()
	var cpu1 time.Duration
	f.rss, cpu1, _ = procStat(br.pid())
	_, gcpu1, _ := procStat(gen.pid())
	w1, _ := writeCalls(br.pid())
	line, err := gen.expect("result")
	if err != nil {
		return nil, err
	}
	h.progress("fan-out: measured")
	if err := <-profiled; err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(line), &f.res); err != nil {
		return nil, err
	}
	if f.res.Messages > 0 {
		f.cpuPerMsg = float64((cpu1 - cpu0).Microseconds()) / float64(f.res.Messages)
		f.genCPU = float64((gcpu1 - gcpu0).Microseconds()) / float64(f.res.Messages)
		f.writes = float64(w1-w0) / float64(f.res.Messages)
	}
	return f, nil
}

// warmSSE runs one short stream through the bridge at base (scheme and
// host).
func warmSSE(base string) error {
	resp, err := opsClient.Get(base + "/demo.v1.TickerService/Watch?symbol=WARM&limit=2&interval_ms=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var cnt sseCounter
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		cnt.Write(append(sc.Bytes(), '\n'))
	}
	if resp.StatusCode != http.StatusOK || cnt.messages != 2 {
		return fmt.Errorf("warm-up stream: %s, %d messages", resp.Status, cnt.messages)
	}
	return nil
}

// topGoroutines summarizes a debug=1 goroutine profile: the largest groups
// with their count and the first frames outside the runtime.
func topGoroutines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for block := range strings.SplitSeq(string(b), "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if strings.HasPrefix(lines[0], "goroutine profile:") {
			lines = lines[1:]
		}
		if len(lines) == 0 {
			continue
		}
		count, _, ok := strings.Cut(lines[0], " @ ")
		if !ok {
			continue
		}
		var frames []string
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "#" {
				continue
			}
			fn, _, _ := strings.Cut(f[2], "+0x")
			if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/poll.") || strings.HasPrefix(fn, "sync.") {
				continue
			}
			frames = append(frames, fn)
			if len(frames) == 3 {
				break
			}
		}
		out = append(out, fmt.Sprintf("%6s  %s", count, strings.Join(frames, " <- ")))
		if len(out) == n {
			break
		}
	}
	return strings.Join(out, "\n") + "\n"
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func joinf(xs []float64, format string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, ", ")
}

func durOrNever(d time.Duration, never string) string {
	if d < 0 {
		return never
	}
	return "after " + d.Round(10*time.Millisecond).String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
