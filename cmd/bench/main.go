// Command bench is grpcbridge's benchmark harness (make bench). It builds
// the demo backend and the bridge, runs them, grpc-gateway's reverse proxy
// and the load generators as separate processes on loopback, and prints,
// for each scenario, the raw figures, their medians and their ratios:
//
//  1. one server stream of small messages as fast as the backend sends:
//     direct gRPC, the bridge's SSE, grpc-gateway's NDJSON;
//  2. WebSocket bidi echo through the bridge against direct gRPC bidi:
//     round-trip latency and throughput;
//  3. many idle SSE streams: the bridge's memory and goroutines per stream,
//     and how fast both return when the clients leave, then after a short
//     burst of streams (3gz: gzipped; 3h2: over h2c; 3h2tls: HTTP/2 with
//     TLS);
//  4. fan-out of one shared upstream stream to many SSE subscribers:
//     delivery latency and CPU per delivered message (4h2: over h2c
//     connections against HTTP/1.1 ones, interleaved);
//
// then session: 100 concurrent calls on one grpc-session.v1 session (its
// WebSocket, its HTTP fallback) against the same calls over separate
// connections (session.go); and, with -scenarios peers (make
// bench-peers), the same measurements against Centrifugo and a connectrpc
// vanguard-go proxy, side by side.
//
// The machines are shared and noisy, so it reports ratios between runs
// made side by side, never pass or fail. Usage:
//
//	bench [-quick] [-scenarios 1,2,3,3gz,3h2,3h2tls,4,4h2,session] [-profile dir]
//	bench -scenarios peers -centrifugo bin -vanguard bin
//
// The subcommands gateway, load-stream, load-ws, load-idle, load-fanout,
// load-session and rpc-echo are the child processes it starts; they are
// not meant to be run by hand.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		sub := map[string]func([]string) error{
			"gateway":      gatewayProxy,
			"load-stream":  loadStream,
			"load-ws":      loadWS,
			"load-idle":    loadIdle,
			"load-fanout":  loadFanout,
			"rpc-echo":     rpcEcho,
			"load-session": loadSession,
			"relay":        tcpRelay,
			"sse-floor":    sseFloor,
		}[os.Args[1]]
		if sub != nil {
			if err := sub(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	if err := harnessMain(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// config is the harness's settings.
type config struct {
	scenarios     []string
	rounds        int           // scenario 1 and 2: interleaved rounds per target
	streamDur     time.Duration // scenario 1: measured time of each run
	rtts          int           // scenario 2: sequential round trips per run
	pipeDur       time.Duration // scenario 2: pipelined run time
	idle          int           // scenario 3: idle streams
	subscribers   int           // scenario 4
	tick          time.Duration // scenario 4: ticker interval
	fanoutDur     time.Duration // scenario 4: measured time
	unshared      bool          // scenario 4: also measure without sharing
	h2Conns       int           // scenarios 3h2 and 4h2: HTTP/2 connections
	fanoutRounds  int           // scenario 4h2: interleaved rounds per transport
	burst         time.Duration // scenario 3: the burst's length; 0: none
	burstRounds   int           // scenario 3: burst rounds per bridge binary
	compareBridge string        // scenario 3's burst: another bridge binary to interleave with
	centrifugo    string        // scenario peers: the Centrifugo binary, or ""
	vanguard      string        // scenario peers: the vanguard proxy binary, or ""
	profileDir    string        // "": no profiles
	keep          bool          // keep the work directory
}

func harnessMain(args []string) error {
	c := config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "small counts and short runs: a smoke test of the harness (about a minute)")
	scen := fs.String("scenarios", "1,2,3,3gz,3h2,3h2tls,4,4h2,session", "scenarios to run, comma-separated (session: 100 calls on one grpc-session.v1 session vs separate connections; 3gz: scenario 3 with the streams gzipped; 3h2, 4h2: scenarios 3 and 4 over h2c; 3h2tls: 3 over HTTP/2 with TLS; peers: make bench-peers)")
	fs.IntVar(&c.rounds, "rounds", 5, "interleaved runs per target in scenarios 1 and 2")
	fs.DurationVar(&c.streamDur, "dur", 3*time.Second, "measured time of each scenario 1 run")
	fs.IntVar(&c.rtts, "rtts", 2000, "sequential round trips per scenario 2 run")
	fs.DurationVar(&c.pipeDur, "pipeline", 2*time.Second, "time of each pipelined scenario 2 run")
	fs.IntVar(&c.idle, "idle", 10000, "idle SSE streams in scenario 3")
	fs.IntVar(&c.subscribers, "subscribers", 10000, "SSE subscribers in scenario 4")
	fs.DurationVar(&c.tick, "tick", time.Second, "ticker interval in scenario 4 (200ms saturates 2 cores at 10,000 subscribers)")
	fs.DurationVar(&c.fanoutDur, "fanout-dur", 10*time.Second, "measured time of scenario 4")
	fs.BoolVar(&c.unshared, "unshared", true, "scenario 4: also measure the same load without sharing, for comparison")
	fs.IntVar(&c.h2Conns, "h2-conns", 100, "scenarios 3h2 and 4h2: h2c connections the streams are spread over")
	fs.IntVar(&c.fanoutRounds, "fanout-rounds", 2, "scenarios 4h2 and peers: interleaved fan-out rounds per transport or server")
	fs.DurationVar(&c.burst, "burst", 3*time.Second, "scenario 3: then a burst of -idle streams that all close this long after the first began to open; 0: none")
	fs.IntVar(&c.burstRounds, "burst-rounds", 1, "scenario 3: burst rounds per bridge binary")
	fs.StringVar(&c.centrifugo, "centrifugo", "", "scenario peers: the Centrifugo `binary` (make bench-peers builds v6.9.1)")
	fs.StringVar(&c.vanguard, "vanguard", "", "scenario peers: the vanguard proxy `binary` (make bench-peers builds cmd/bench/peers/vanguard)")
	fs.StringVar(&c.compareBridge, "compare-bridge", "", "scenario 3's burst: also run this bridge `binary` (an older build, say), interleaved with the one built")
	fs.StringVar(&c.profileDir, "profile", ".tmp/bench", "save CPU, heap and goroutine profiles of the bridge (scenarios 1 and 3) in this `dir`; empty: none")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory (binaries, process logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c.scenarios = strings.Split(*scen, ",")
	if c.h2Conns < 1 || c.burstRounds < 1 || c.fanoutRounds < 1 {
		return fmt.Errorf("-h2-conns, -burst-rounds and -fanout-rounds must be at least 1")
	}
	if *quick {
		c.rounds, c.streamDur, c.rtts, c.pipeDur = 2, time.Second, 500, 500*time.Millisecond
		c.idle, c.subscribers, c.fanoutDur, c.unshared = 1000, 1000, 3*time.Second, false
		c.h2Conns, c.fanoutRounds = 10, 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The harness, the bridge and the load generators hold thousands of
	// sockets each: every child gets the hard limit.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}

	work, err := os.MkdirTemp("", "grpcbridge-bench-")
	if err != nil {
		return err
	}
	if c.keep {
		fmt.Fprintf(os.Stderr, "work directory: %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	if c.profileDir != "" {
		if err := os.MkdirAll(c.profileDir, 0o755); err != nil {
			return err
		}
	}
	started := time.Now()
	fmt.Fprintln(os.Stderr, "building cmd/demo and cmd/bridge ...")
	bins, err := build(ctx, work)
	if err != nil {
		return err
	}
	h := &harness{cfg: c, bins: bins, work: work, out: os.Stdout, started: started}
	defer h.stopAll()
	h.header(started)

	for _, s := range []struct {
		id  string
		run func(context.Context) error
	}{
		{"1", h.scenarioStream},
		{"2", h.scenarioEcho},
		{"3", func(ctx context.Context) error { return h.scenarioIdle(ctx, "3") }},
		{"3gz", func(ctx context.Context) error { return h.scenarioIdle(ctx, "3gz") }},
		{"3h2", func(ctx context.Context) error { return h.scenarioIdle(ctx, "3h2") }},
		{"3h2tls", func(ctx context.Context) error { return h.scenarioIdle(ctx, "3h2tls") }},
		{"4", h.scenarioFanout},
		{"4h2", h.scenarioFanoutH2},
		{"session", h.scenarioSession},
		{"peers", h.scenarioPeers},
	} {
		if !slices.Contains(c.scenarios, s.id) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := s.run(ctx); err != nil {
			h.printf("\nscenario %s failed: %v\n", s.id, err)
			h.failed = true
		}
		h.stopAll()
		h.progress("scenario %s took %v", s.id, time.Since(t0).Round(time.Second))
		h.printf("\n(Load average after scenario %s: %s.)\n", s.id, loadAvg())
	}
	h.printf("\nTotal time: %v\n", time.Since(started).Round(time.Second))
	if h.failed {
		return fmt.Errorf("a scenario failed")
	}
	return nil
}

// harness runs the scenarios and prints the report.
type harness struct {
	cfg     config
	bins    *binaries
	work    string
	out     io.Writer
	procs   []*proc
	failed  bool
	started time.Time
}

func (h *harness) printf(format string, args ...any) { fmt.Fprintf(h.out, format, args...) }

// progress tells on stderr where the harness is, with the time since it
// started.
func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(h.started).Seconds(), fmt.Sprintf(format, args...))
}

func (h *harness) header(started time.Time) {
	host, _ := os.Hostname()
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			mem = strings.Join(strings.Fields(line)[1:], " ")
		}
	}
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	h.printf("# grpcbridge benchmarks\n\n")
	h.printf("- date: %s\n", started.UTC().Format(time.RFC3339))
	h.printf("- machine: %s, %d CPUs (%s), MemTotal %s, RLIMIT_NOFILE %d\n", host, runtime.NumCPU(), cpu, mem, lim.Cur)
	h.printf("- command: bench %s\n", strings.Join(os.Args[1:], " "))
	h.printf("- the bridge runs with %s, as deploy/Dockerfile sets it\n", bridgeGODEBUG)
	h.printf("- load average at the start (/proc/loadavg): %s\n", loadAvg())
}

// loadAvg is the first three fields of /proc/loadavg: how busy the shared
// machine was, for the report.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func (h *harness) track(p *proc) *proc {
	h.procs = append(h.procs, p)
	return p
}

// stopAll stops every server the current scenario started.
func (h *harness) stopAll() {
	if len(h.procs) > 0 {
		h.progress("stopping servers")
	}
	for _, p := range h.procs {
		p.stop(5 * time.Second)
	}
	h.procs = nil
}

// startDemo starts the demo backend and returns its address.
func (h *harness) startDemo() (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	p, err := startProc(h.work, "demo", h.bins.demo, []string{"-addr", addr}, nil)
	if err != nil {
		return "", err
	}
	h.track(p)
	return addr, p.waitReady(30*time.Second, tcpReady(addr))
}

// bridgeGODEBUG is the runtime setting that deploy/Dockerfile gives the
// bridge: new goroutines start with the minimum stack (see
// docs/deploy.md).
const bridgeGODEBUG = "GODEBUG=adaptivestackstart=0"

// bridgeProc is a running bridge (or peer).
type bridgeProc struct {
	*proc
	addr      string
	https     bool   // it serves HTTPS (-tls-cert)
	pprofAddr string // "" without profiling
}

// url is the server's scheme and host, for its operational endpoints.
func (b *bridgeProc) url() string {
	if b.https {
		return "https://" + b.addr
	}
	return "http://" + b.addr
}

// startBridge starts the bridge in front of backend, exposing demo.v1.*,
// with extra flags, and with pprof on a side port when profile is set.
func (h *harness) startBridge(name, backend string, profile bool, extra ...string) (*bridgeProc, error) {
	return h.startBridgeBin(name, h.bins.bridge, backend, profile, extra...)
}

// startBridgeBin is startBridge with another bridge binary.
func (h *harness) startBridgeBin(name, bin, backend string, profile bool, extra ...string) (*bridgeProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b := &bridgeProc{addr: addr, https: slices.Contains(extra, "-tls-cert")}
	env := []string{bridgeGODEBUG} // as deploy/Dockerfile runs it
	if profile {
		if b.pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		env = append(env, "GRPCBRIDGE_BENCH_PPROF="+b.pprofAddr)
	}
	args := append([]string{"-addr", addr, "-backend", backend, "-expose", "demo.v1.*", "-log-level", "warn"}, extra...)
	p, err := startProc(h.work, name, bin, args, env)
	if err != nil {
		return nil, err
	}
	b.proc = h.track(p)
	return b, p.waitReady(30*time.Second, httpReady(b.url()+"/healthz"))
}

// startGateway starts grpc-gateway's proxy in front of backend and
// returns its address and process.
func (h *harness) startGateway(backend string) (string, *proc, error) {
	addr, p, err := h.startSelf("gateway", nil, "-backend", backend)
	if err != nil {
		return "", nil, err
	}
	return addr, p, p.waitReady(30*time.Second, tcpReady(addr))
}

// startSelf starts this program's subcommand sub on a free loopback
// address (its -addr), with args after it and env added to its
// environment, and returns the address.
func (h *harness) startSelf(sub string, env []string, args ...string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	p, err := startProc(h.work, sub, h.bins.self, append([]string{sub, "-addr", addr}, args...), env)
	if err != nil {
		return "", nil, err
	}
	return addr, h.track(p), nil
}
