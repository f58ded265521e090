package main

// Scenario "peers" (make bench-peers): the bridge side by side with what a
// user would pick instead, each built at a pinned version outside the
// bridge's go.mod: Centrifugo (a real-time server: SSE fan-out, idle
// subscribers, WebSocket) and connectrpc's vanguard-go (a Connect proxy in
// front of the same gRPC backend: server-stream throughput). The peers'
// configuration goes into the report, so the comparison can be checked.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// centrifugoConfig is the whole configuration Centrifugo runs with: its
// defaults but for loopback, no authentication (the bridge has none in
// the benchmark either), the unidirectional SSE transport on, RPCs sent to
// the harness's HTTP echo backend (its HTTP proxy), Prometheus metrics (for
// go_goroutines) and no usage statistics (no network).
const centrifugoConfig = `{
  "http_server": {"address": "127.0.0.1", "port": %d},
  "proxies": [{"name": "echo", "endpoint": "http://%s/rpc", "timeout": "5s"}],
  "rpc": {"without_namespace": {"proxy_enabled": true, "proxy_name": "echo"}},
  "log": {"level": "warn"},
  "client": {"insecure": true, "allowed_origins": ["*"]},
  "http_api": {"insecure": true},
  "uni_sse": {"enabled": true},
  "prometheus": {"enabled": true},
  "health": {"enabled": true},
  "usage_stats": {"disabled": true}
}
`

// centrifugoSubscribe is the uni_sse connect request of every subscriber:
// anonymous, subscribed to channel ch at once.
func centrifugoSubscribe(ch string) string {
	return "/connection/uni_sse?cf_connect=" + url.QueryEscape(fmt.Sprintf(`{"subs":{%q:{}}}`, ch))
}

// startCentrifugo starts Centrifugo with centrifugoConfig on a free port.
func (h *harness) startCentrifugo(name string) (*bridgeProc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	rpcAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	echo, err := startProc(h.work, name+"-rpc-echo", h.bins.self, []string{"rpc-echo", "-addr", rpcAddr}, nil)
	if err != nil {
		return nil, "", err
	}
	h.track(echo)
	if err := echo.waitReady(30*time.Second, tcpReady(rpcAddr)); err != nil {
		return nil, "", err
	}
	_, port, _ := strings.Cut(addr, ":")
	p, _ := strconv.Atoi(port)
	conf := fmt.Sprintf(centrifugoConfig, p, rpcAddr)
	file := filepath.Join(h.work, name+".json")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	pr, err := startProc(h.work, name, h.cfg.centrifugo, []string{"--config", file}, nil)
	if err != nil {
		return nil, "", err
	}
	h.track(pr)
	return &bridgeProc{proc: pr, addr: addr}, conf, pr.waitReady(30*time.Second, httpReady("http://"+addr+"/health"))
}

// startVanguard starts the vanguard proxy in front of backend.
func (h *harness) startVanguard(backend string) (*bridgeProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startProc(h.work, "vanguard", h.cfg.vanguard, []string{"-addr", addr, "-backend", backend}, nil)
	if err != nil {
		return nil, err
	}
	h.track(p)
	return &bridgeProc{proc: p, addr: addr}, p.waitReady(30*time.Second, tcpReady(addr))
}

// peerRatio is one line of the summary: the bridge's figure against the
// peer's, and which way is better.
type peerRatio struct {
	what           string
	bridge, peer   float64
	unit           string
	higherIsBetter bool
}

func (h *harness) scenarioPeers(ctx context.Context) error {
	c := h.cfg
	h.printf("\n## Peers: Centrifugo and connectrpc vanguard-go, side by side\n\n")
	if c.centrifugo == "" && c.vanguard == "" {
		h.printf("**skipped**: neither -centrifugo nor -vanguard names a binary (make bench-peers builds them).\n")
		return nil
	}
	h.printf("Peers built by `make bench-peers` outside the bridge's go.mod: Centrifugo v6.9.1 (`go install github.com/centrifugal/centrifugo/v6@v6.9.1`; "+
		"a `go install` build reports its version as 0.0.0), and `cmd/bench/peers/vanguard` (its own module: connectrpc.com/vanguard v0.4.0 in front of the demo backend, "+
		"transcoding to gRPC with the proto codec, reverse proxy over h2c, `FlushInterval: -1`). "+
		"Every server runs as its own process on loopback with the Go runtime's defaults and GOMAXPROCS 2, "+
		"except the bridge, which runs with `%s` as its image sets it. Clients are the same load generators as above.\n\n", bridgeGODEBUG)
	var ratios []peerRatio
	if c.vanguard != "" {
		r, err := h.peerStream(ctx)
		if err != nil {
			return fmt.Errorf("stream throughput: %w", err)
		}
		ratios = append(ratios, r...)
	}
	if c.centrifugo != "" {
		_, conf, err := h.startCentrifugo("centrifugo-config-check")
		h.stopAll()
		if err != nil {
			return err
		}
		h.printf("Centrifugo's configuration, the same for every part (the port changes):\n\n```json\n%s```\n", conf)
		for _, part := range []func(context.Context) ([]peerRatio, error){h.peerEcho, h.peerIdle, h.peerFanout} {
			r, err := part(ctx)
			h.stopAll()
			if err != nil {
				return err
			}
			ratios = append(ratios, r...)
		}
	}
	h.printf("\n### Peers at a glance\n\n| | bridge | peer | bridge / peer |\n|---|---|---|---|\n")
	for _, r := range ratios {
		better := "lower is better"
		if r.higherIsBetter {
			better = "higher is better"
		}
		h.printf("| %s (%s) | %s %s | %s %s | **%.2fx** |\n", r.what, better, figure(r.bridge), r.unit, figure(r.peer), r.unit, ratio(r.bridge, r.peer))
	}
	return nil
}

// peerStream: scenario 1's server stream, bridge SSE against vanguard's
// Connect JSON stream (and direct gRPC), interleaved.
func (h *harness) peerStream(ctx context.Context) ([]peerRatio, error) {
	c := h.cfg
	h.printf("\n### Server-stream throughput: bridge SSE vs vanguard Connect JSON\n\n")
	backend, err := h.startDemo()
	if err != nil {
		return nil, err
	}
	defer h.stopAll()
	br, err := h.startBridge("bridge-peer-stream", backend, false)
	if err != nil {
		return nil, err
	}
	vg, err := h.startVanguard(backend)
	if err != nil {
		return nil, err
	}
	h.printf("EchoService/Stream {size: 60} as in scenario 1: SSE `GET` against the Connect protocol's server stream "+
		"(`POST` with `Content-Type: application/connect+json`, one enveloped JSON request, enveloped JSON messages back; what connect-web sends), "+
		"the same demo backend behind both; %d interleaved runs of %v each per target.\n\n", c.rounds, c.streamDur)
	targets := []struct {
		name, target, addr string
		server             *proc
	}{{"direct gRPC", "direct", backend, nil}, {"bridge SSE", "sse", br.addr, br.proc}, {"vanguard Connect JSON", "connect", vg.addr, vg.proc}}
	rates := make(map[string][]float64)
	cpuPer := make(map[string][]float64)
	for _, t := range targets { // warm-up
		var r streamResult
		if err := h.bins.runLoad(ctx, &r, "load-stream", "-target", t.target, "-addr", t.addr, "-dur", "500ms"); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for i := range c.rounds {
		h.progress("peers stream: round %d of %d", i+1, c.rounds)
		for _, t := range targets {
			var cpu0 time.Duration
			if t.server != nil {
				_, cpu0, _ = procStat(t.server.pid())
			}
			var r streamResult
			if err := h.bins.runLoad(ctx, &r, "load-stream", "-target", t.target, "-addr", t.addr, "-dur", c.streamDur.String()); err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			rates[t.name] = append(rates[t.name], r.PerSec)
			if t.server != nil {
				_, cpu1, _ := procStat(t.server.pid())
				cpuPer[t.name] = append(cpuPer[t.name], float64((cpu1-cpu0).Microseconds())/(float64(r.Messages)+r.PerSec*0.3))
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
	s, v := median(rates["bridge SSE"]), median(rates["vanguard Connect JSON"])
	h.printf("\n- bridge SSE / vanguard Connect JSON: **%.2fx** msgs/s; CPU per message %.2fx\n", ratio(s, v),
		ratio(median(cpuPer["bridge SSE"]), median(cpuPer["vanguard Connect JSON"])))
	return []peerRatio{
		{what: "server-stream msgs/s vs vanguard", bridge: s, peer: v, unit: "msgs/s", higherIsBetter: true},
		{what: "server CPU per streamed message vs vanguard", bridge: median(cpuPer["bridge SSE"]), peer: median(cpuPer["vanguard Connect JSON"]), unit: "µs"},
	}, nil
}

// peerEcho: scenario 2's sequential round trips, the bridge's WebSocket
// echo against a Centrifugo client publishing to its own channel.
func (h *harness) peerEcho(ctx context.Context) ([]peerRatio, error) {
	c := h.cfg
	h.printf("\n### WebSocket echo: bridge vs Centrifugo\n\n")
	backend, err := h.startDemo()
	if err != nil {
		return nil, err
	}
	br, err := h.startBridge("bridge-peer-echo", backend, false)
	if err != nil {
		return nil, err
	}
	cf, _, err := h.startCentrifugo("centrifugo-echo")
	if err != nil {
		return nil, err
	}
	h.printf("Bridge: scenario 2's EchoService/Echo over `grpc-ws.v1` (binary frames; the bridge relays each message to the demo gRPC backend and its answer back). "+
		"Centrifugo RPC: its bidirectional WebSocket with the JSON protocol; the client sends an RPC with a 60-byte payload (base64), which Centrifugo's "+
		"HTTP proxy posts to an echo backend (`bench rpc-echo`, its own process, net/http keep-alive); the round trip ends at the RPC reply: the same shape as the bridge's. "+
		"Centrifugo publish, for reference: the client publishes to a channel it is subscribed to and the round trip ends at the push; no backend. "+
		"%d sequential round trips per run after 200 unmeasured, then %v pipelined with 64 in flight; %d interleaved runs per target.\n\n",
		c.rtts, c.pipeDur, c.rounds)
	targets := []struct{ name, target, addr string }{{"bridge WebSocket", "ws", br.addr}, {"Centrifugo RPC via proxy", "centrifugo-rpc", cf.addr}, {"Centrifugo publish", "centrifugo", cf.addr}}
	res := make(map[string][]wsResult)
	for range c.rounds {
		for _, t := range targets {
			var r wsResult
			if err := h.bins.runLoad(ctx, &r, "load-ws", "-target", t.target, "-addr", t.addr, "-n", strconv.Itoa(c.rtts), "-pipeline", c.pipeDur.String()); err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
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
	p50 := func(r wsResult) float64 { return float64(r.RTT.P50.Microseconds()) }
	p99 := func(r wsResult) float64 { return float64(r.RTT.P99.Microseconds()) }
	pipe := func(r wsResult) float64 { return r.Pipelined }
	h.printf("| target | p50 µs per run | p99 µs per run | median p50 | median p99 | pipelined msgs/s (median) |\n|---|---|---|---|---|---|\n")
	for _, t := range targets {
		h.printf("| %s | %s | %s | %.0f µs | %.0f µs | %.0f |\n", t.name, joinf(pick(t.name, p50), "%.0f"), joinf(pick(t.name, p99), "%.0f"),
			median(pick(t.name, p50)), median(pick(t.name, p99)), median(pick(t.name, pipe)))
	}
	b := median(pick("bridge WebSocket", p50))
	p, pp := median(pick("Centrifugo RPC via proxy", p50)), median(pick("Centrifugo publish", p50))
	h.printf("\n- bridge / Centrifugo WebSocket echo p50: **%.2fx** against its RPC through the proxy, %.2fx against a publication to itself\n", ratio(b, p), ratio(b, pp))
	return []peerRatio{
		{what: "WebSocket echo p50 vs Centrifugo RPC via proxy", bridge: b, peer: p, unit: "µs"},
		{what: "WebSocket pipelined msgs/s vs Centrifugo RPC via proxy", bridge: median(pick("bridge WebSocket", pipe)), peer: median(pick("Centrifugo RPC via proxy", pipe)), unit: "msgs/s", higherIsBetter: true},
		{what: "WebSocket echo p50 vs Centrifugo publish (no backend)", bridge: b, peer: pp, unit: "µs"},
	}, nil
}

// idleFigures is one server's idle-stream cost.
type idleFigures struct {
	g0, g1     int
	rss0, rss1 int64
	mem0, mem1 map[string]float64 // memStats before and with the streams
	openSecs   string
}

// memStats are the runtime's figures scenario 3 reads from /metrics.
var memStats = []string{"go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes"}

// measureIdle holds c.idle idle streams of path open on srv and reads its
// goroutines and RSS before and with them; warm opens one stream first.
func (h *harness) measureIdle(srv *bridgeProc, path string, genArgs []string, warm func() error) (*idleFigures, error) {
	c := h.cfg
	if err := warm(); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	f := &idleFigures{}
	var err error
	if f.g0, err = goroutines(srv.url()); err != nil {
		return nil, err
	}
	if f.rss0, _, err = procStat(srv.pid()); err != nil {
		return nil, err
	}
	if f.mem0, err = scrape(srv.url(), memStats...); err != nil {
		return nil, err
	}
	gen, err := h.bins.startSession(append([]string{"load-idle", "-addr", srv.addr, "-path", path, "-n", strconv.Itoa(c.idle)}, genArgs...)...)
	if err != nil {
		return nil, err
	}
	defer gen.close(10 * time.Second)
	if f.openSecs, err = gen.expect("open"); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	if f.g1, err = goroutines(srv.url()); err != nil {
		return nil, err
	}
	if f.rss1, _, err = procStat(srv.pid()); err != nil {
		return nil, err
	}
	if f.mem1, err = scrape(srv.url(), memStats...); err != nil {
		return nil, err
	}
	return f, nil
}

// peerIdle: scenario 3's idle streams, the bridge's against Centrifugo's
// uni_sse subscribers of one channel.
func (h *harness) peerIdle(ctx context.Context) ([]peerRatio, error) {
	c := h.cfg
	h.printf("\n### Idle SSE streams: bridge vs Centrifugo\n\n")
	h.printf("%d streams, each its own HTTP/1.1 connection, held open after the first message. Bridge: scenario 3's "+
		"`TickerService/Watch` (one upstream call each, as there). Centrifugo: `GET %s` (uni_sse: anonymous, subscribed "+
		"to one channel at connect; the first message is the connect reply). One server at a time, each warmed by one stream.\n\n", c.idle, centrifugoSubscribe("idle"))
	backend, err := h.startDemo()
	if err != nil {
		return nil, err
	}
	br, err := h.startBridge("bridge-peer-idle", backend, false)
	if err != nil {
		return nil, err
	}
	h.progress("peers idle: bridge")
	bf, err := h.measureIdle(br, "/demo.v1.TickerService/Watch?symbol=IDLE&interval_ms=3600000", nil, func() error { return warmSSE(br.url()) })
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	h.stopAll()
	cf, _, err := h.startCentrifugo("centrifugo-idle")
	if err != nil {
		return nil, err
	}
	h.progress("peers idle: Centrifugo")
	path := centrifugoSubscribe("idle")
	cff, err := h.measureIdle(cf, path, []string{"-plain"}, func() error { return warmPlainSSE(ctx, cf.addr+path) })
	if err != nil {
		return nil, fmt.Errorf("centrifugo: %w", err)
	}
	n := float64(c.idle)
	per := func(f *idleFigures) float64 { return float64(f.rss1-f.rss0) / n / kib }
	h.printf("| server | goroutines before, with | RSS before, with | goroutines per stream | RSS per stream | opened in |\n|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		f    *idleFigures
	}{{"bridge", bf}, {"Centrifugo", cff}} {
		f := row.f
		h.printf("| %s | %d, %d | %.1f, %.1f MiB | %.2f | %.1f KiB | %s s |\n", row.name, f.g0, f.g1, mib(f.rss0), mib(f.rss1),
			float64(f.g1-f.g0)/n, per(f), f.openSecs)
	}
	h.printf("\n- bridge / Centrifugo RSS per idle stream: **%.2fx**\n", ratio(per(bf), per(cff)))
	return []peerRatio{{what: "RSS per idle SSE stream vs Centrifugo", bridge: per(bf), peer: per(cff), unit: "KiB"}}, nil
}

// warmPlainSSE opens one stream of a server that names no event type and
// reads up to its first data line.
func warmPlainSSE(ctx context.Context, hostPath string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPath, nil)
	resp, err := opsClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("warm-up stream: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			return nil
		}
	}
	return fmt.Errorf("warm-up stream ended before a data line: %v", sc.Err())
}

// peerFanout: scenario 4's shared fan-out against Centrifugo's uni_sse
// subscribers of one channel, published to once a tick.
func (h *harness) peerFanout(ctx context.Context) ([]peerRatio, error) {
	c := h.cfg
	h.printf("\n### Fan-out: bridge vs Centrifugo\n\n")
	h.printf("%d SSE subscribers, each its own HTTP/1.1 connection, one message a %v to all. Bridge: scenario 4 with `shared: true` "+
		"(the demo ticker stamps each tick's `time`). Centrifugo: uni_sse subscribers of one channel; the harness publishes "+
		"`{\"time\": <now>}` to it with the HTTP API (`POST /api/publish`) every %v. Latency: receive time minus `time`. "+
		"CPU: the server's utime+stime over %v divided by the deliveries. One server at a time, a fresh one every run; %d interleaved rounds, the first server alternating.\n\n", c.subscribers, c.tick, c.tick, c.fanoutDur, c.fanoutRounds)
	conf, err := h.sharedConfig()
	if err != nil {
		return nil, err
	}
	bridgeRun := func() (*fanoutFigures, error) {
		path := fmt.Sprintf("/demo.v1.TickerService/Watch?symbol=FAN&interval_ms=%d", c.tick.Milliseconds())
		f, err := h.fanoutOver(ctx, path, false, nil, "-config", conf)
		h.stopAll()
		if err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
		return f, nil
	}
	centrifugoRun := func() (*fanoutFigures, error) {
		defer h.stopAll()
		cf, _, err := h.startCentrifugo("centrifugo-fanout")
		if err != nil {
			return nil, err
		}
		pubCtx, stopPub := context.WithCancel(ctx)
		pubDone := make(chan error, 1)
		go func() { pubDone <- publishTicks(pubCtx, cf.addr, "fan", c.tick) }()
		f, err := h.measureFanout(ctx, cf, centrifugoSubscribe("fan"), false, []string{"-plain"})
		stopPub()
		if perr := <-pubDone; err == nil && perr != nil {
			err = perr
		}
		if err != nil {
			return nil, fmt.Errorf("centrifugo: %w", err)
		}
		return f, nil
	}
	servers := []struct {
		name string
		run  func() (*fanoutFigures, error)
	}{{"bridge `shared: true`", bridgeRun}, {"Centrifugo uni_sse", centrifugoRun}}
	runs := make(map[string][]*fanoutFigures)
	h.printf("| round | server | p50 | p99 | max | deliveries | server CPU µs per delivery | load generator CPU µs per delivery | server goroutines | server RSS | dropped |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for round := range c.fanoutRounds {
		for i := range servers {
			s := servers[(i+round)%len(servers)] // bridge first in odd rounds, Centrifugo in even ones
			h.progress("peers fan-out: round %d, %s", round+1, s.name)
			f, err := s.run()
			if err != nil {
				return nil, err
			}
			runs[s.name] = append(runs[s.name], f)
			h.printf("| %d | %s | %v | %v | %v | %d | %.2f | %.2f | %d | %.0f MiB | %d |\n", round+1, s.name,
				f.res.Latency.P50.Round(10*time.Microsecond), f.res.Latency.P99.Round(10*time.Microsecond), f.res.Latency.Max.Round(10*time.Microsecond),
				f.res.Messages, f.cpuPerMsg, f.genCPU, f.goroutines, mib(f.rss), f.res.Dropped)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	med := func(name string, x func(*fanoutFigures) float64) float64 {
		var xs []float64
		for _, f := range runs[name] {
			xs = append(xs, x(f))
		}
		return median(xs)
	}
	p50 := func(f *fanoutFigures) float64 { return ms(f.res.Latency.P50) }
	p99 := func(f *fanoutFigures) float64 { return ms(f.res.Latency.P99) }
	cpu := func(f *fanoutFigures) float64 { return f.cpuPerMsg }
	b, p := servers[0].name, servers[1].name
	h.printf("\n| median of %d rounds | p50 ms | p99 ms | server CPU µs per delivery |\n|---|---|---|---|\n", c.fanoutRounds)
	for _, name := range []string{b, p} {
		h.printf("| %s | %.1f | %.1f | %.2f |\n", name, med(name, p50), med(name, p99), med(name, cpu))
	}
	h.printf("\n- bridge / Centrifugo, medians: p99 **%.2fx**, CPU per delivery **%.2fx**\n",
		ratio(med(b, p99), med(p, p99)), ratio(med(b, cpu), med(p, cpu)))
	return []peerRatio{
		{what: "fan-out p50 vs Centrifugo", bridge: med(b, p50), peer: med(p, p50), unit: "ms"},
		{what: "fan-out p99 vs Centrifugo", bridge: med(b, p99), peer: med(p, p99), unit: "ms"},
		{what: "fan-out CPU per delivery vs Centrifugo", bridge: med(b, cpu), peer: med(p, cpu), unit: "µs"},
	}, nil
}

// publishTicks publishes {"time": now} to Centrifugo's channel every tick
// until ctx ends, with its HTTP API.
func publishTicks(ctx context.Context, addr, channel string, tick time.Duration) error {
	t := time.NewTicker(tick)
	defer t.Stop()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		body, _ := json.Marshal(map[string]any{"channel": channel, "data": map[string]string{"time": time.Now().Format(time.RFC3339Nano)}})
		resp, err := client.Post("http://"+addr+"/api/publish", "application/json", strings.NewReader(string(body)))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("publish: %s", resp.Status)
		}
	}
}

// figure prints a figure with the digits that matter: whole numbers from
// 100 up, two decimals under.
func figure(x float64) string {
	if x >= 100 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.2f", x)
}
