// Package rehearsal is the production rehearsal (docs/reliability.md,
// "Rehearsal"): three bridge processes behind a real ingress (nginx or
// HAProxy, TLS and HTTP/2 towards the clients), two demo backends behind
// one DNS name each bridge balances over, and Toxiproxy on every link,
// under a load of SSE followers and WebSocket clients, while a script
// restarts, kills and degrades the parts one after another. Every tick and
// message is checked, and a Markdown report says what each phase did.
//
// It runs only from make rehearsal and make rehearsal-short, which build
// the binaries and run the test binary in network, mount and PID
// namespaces of its own (unshare): its fixed loopback ports collide with
// nothing, its hosts file is its own, and every process it started dies
// with it, whatever way it ends.
package rehearsal

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	flagMode    = flag.String("rehearsal", "", "short or full; empty: skip the rehearsal")
	flagIngress = flag.String("ingress", "nginx", "the ingress: nginx or haproxy")
	flagBin     = flag.String("bin", "", "directory holding the bridge, demo and toxiproxy-server binaries")
	flagOut     = flag.String("out", "", "directory of the report (report.md) and the run's logs")
	flagSSE     = flag.Int("sse", 0, "SSE followers, instead of the size's (a full script under a light load, while working on it)")
	flagWS      = flag.Int("ws", 0, "WebSocket clients (three quarters chat), instead of the size's")
)

// size is a run's load and pace.
type size struct {
	sse, chat, echo int
	settle          time.Duration // after each fault, within its phase
	scrape          time.Duration
	deadline        time.Duration // of the whole run, load and script
}

var sizes = map[string]size{
	"short": {sse: 300, chat: 35, echo: 15, settle: 10 * time.Second, scrape: 2 * time.Second, deadline: 4 * time.Minute},
	"full":  {sse: 3000, chat: 300, echo: 100, settle: 20 * time.Second, scrape: 5 * time.Second, deadline: 14 * time.Minute},
}

// run is one rehearsal in progress.
type run struct {
	t        *testing.T
	sz       size
	dir      string
	start    time.Time
	rec      *recorder
	bridges  []*bridge
	backends []*proc
	demoBin  string
	x        *toxi
	ing      *ingress

	mu       sync.Mutex
	timeline []string
	samples  []sample
}

func (r *run) logf(format string, args ...any) {
	line := fmt.Sprintf("%6.1f s  ", time.Since(r.start).Seconds()) + fmt.Sprintf(format, args...)
	r.t.Log(line)
	r.mu.Lock()
	r.timeline = append(r.timeline, line)
	r.mu.Unlock()
}

func TestRehearsal(t *testing.T) {
	sz, ok := sizes[*flagMode]
	if !ok {
		t.Skip("the production rehearsal runs with -rehearsal short or full: make rehearsal-short, make rehearsal")
	}
	if *flagSSE > 0 {
		sz.sse = *flagSSE
	}
	if *flagWS > 0 {
		sz.chat = *flagWS * 3 / 4
		sz.echo = *flagWS - sz.chat
	}
	if *flagBin == "" || *flagOut == "" {
		t.Fatal("-bin and -out are required")
	}
	dir := filepath.Join(*flagOut, "run-"+*flagIngress+"-"+*flagMode)
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	setupNamespace(t, dir)
	// The global deadline: past it, the test fails and its cleanups kill
	// every process (and the PID namespace kills whatever is left when
	// the test binary exits).
	ctx, cancel := context.WithTimeout(t.Context(), sz.deadline)
	defer cancel()

	r := &run{t: t, sz: sz, dir: dir, start: time.Now(), rec: &recorder{}, demoBin: filepath.Join(*flagBin, "demo")}
	roots := writeCert(t, dir)
	r.logf("topology: %s ingress, %d bridges, %d backends, toxiproxy on every link; load %d SSE, %d chat, %d echo", *flagIngress, nBridges, nBackends, sz.sse, sz.chat, sz.echo)
	for j := range nBackends {
		r.backends = append(r.backends, r.startBackend(j))
	}
	r.x = startToxiproxy(t, dir, filepath.Join(*flagBin, "toxiproxy-server"))
	deployYAML, err := os.ReadFile("../../deploy/bridge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i := range nBridges {
		b := &bridge{i: i, dir: dir, bin: filepath.Join(*flagBin, "bridge"), conf: filepath.Join(dir, fmt.Sprintf("bridge%d.yaml", i+1))}
		if err := os.WriteFile(b.conf, bridgeConfig(t, deployYAML, i), 0o644); err != nil {
			t.Fatal(err)
		}
		b.start(t)
		r.bridges = append(r.bridges, b)
	}
	r.ing = startIngress(t, *flagIngress, dir)
	r.logf("topology up")

	scrapeCtx, stopScrape := context.WithCancel(ctx)
	var scraping sync.WaitGroup
	scraping.Add(1)
	go func() { defer scraping.Done(); r.scrape(scrapeCtx) }()

	// The load, ramped up over a few seconds.
	r.rec.begin("ramp-up", 0)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	stopSending := make(chan struct{})
	var load, wsLoad sync.WaitGroup
	followers := make([]*follower, sz.sse)
	const perBrowser = 50 // EventSources per browser (one HTTP/2 connection)
	clients := make([]*http.Client, (sz.sse+perBrowser-1)/perBrowser)
	for n := range clients {
		clients[n] = browser(n, roots)
	}
	written := false
	defer func() {
		if !written { // a t.Fatal in the script: report what it saw
			stopLoad()
			waited := make(chan struct{})
			go func() { load.Wait(); wsLoad.Wait(); close(waited) }()
			select {
			case <-waited:
			case <-time.After(10 * time.Second):
			}
			r.rec.finish()
			r.writeReport(followers, "the script stopped early (see the test's log)")
		}
	}()
	for i := range followers {
		f := &follower{id: i, client: clients[i/perBrowser], rec: r.rec}
		followers[i] = f
		load.Add(1)
		go func() { defer load.Done(); f.run(loadCtx) }()
		if i%100 == 99 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	for i := range sz.chat + sz.echo {
		c := &wsClient{id: i, kind: "chat", roots: roots, rec: r.rec}
		if i >= sz.chat {
			c.kind = "echo"
		}
		wsLoad.Add(1)
		go func() { defer wsLoad.Done(); c.run(loadCtx, stopSending) }()
		if i%50 == 49 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !waitUntil(60*time.Second, func() bool {
		for _, f := range followers {
			if f.lastSeq() < 2 && !f.dead.Load() {
				return false
			}
		}
		return true
	}) {
		t.Error("not every SSE follower had two ticks within 60 s of the ramp-up")
	}
	r.logf("load up")
	r.phase("baseline", 0, func() {})

	r.phase("rolling restart of the three bridges", drain|refused, func() {
		for _, b := range r.bridges {
			r.restartBridge(b)
		}
	})
	if *flagMode == "full" {
		r.phase("kill -9 of bridge 1", abrupt|refused, func() {
			b := r.bridges[0]
			b.current().kill()
			r.logf("%s killed (SIGKILL)", b.name())
			time.Sleep(5 * time.Second) // the kubelet's restart
			b.start(t)
			r.logf("%s ready again", b.name())
		})
	}
	r.phase("restart of backend 1", backendX, func() {
		p := r.backends[0]
		p.signal(syscall.SIGTERM)
		if err := p.wait(15 * time.Second); err != nil {
			t.Error(err)
			p.kill()
		}
		r.logf("backend 1 exited after SIGTERM")
		r.backends[0] = r.startBackend(0)
		r.logf("backend 1 up again")
	})
	latency := "200 ms latency on every link"
	explain := 0
	var toxics []toxic
	for i := range nBridges {
		toxics = append(toxics, toxic{Proxy: ingressProxy(i), Name: "latency", Type: "latency", Stream: "downstream", Toxicity: 1, Attributes: map[string]any{"latency": 200}})
	}
	if *flagMode == "full" {
		latency += ", 1% of connections reset"
		explain = abrupt | backendX
		// reset_peer acts on the next data in its direction: downstream
		// (towards the clients), where ticks and replies flow; upstream, it
		// would reach only the links that carry WebSocket messages.
		for i := range nBridges {
			toxics = append(toxics, toxic{Proxy: ingressProxy(i), Name: "reset", Type: "reset_peer", Stream: "downstream", Toxicity: 0.01, Attributes: map[string]any{"timeout": 0}})
			for j := range nBackends {
				toxics = append(toxics, toxic{Proxy: backendProxy(i, j), Name: "reset", Type: "reset_peer", Stream: "downstream", Toxicity: 0.01, Attributes: map[string]any{"timeout": 0}})
			}
		}
	}
	r.phase(latency+", 30 s", explain, func() {
		r.toxics(toxics, 30*time.Second)
	})
	if *flagMode == "full" {
		r.phase("20 s stall of bridge 2's backend link", backendX|abrupt, func() {
			var stall []toxic
			for j := range nBackends {
				for _, dir := range []string{"upstream", "downstream"} {
					stall = append(stall, toxic{Proxy: backendProxy(1, j), Name: "stall-" + dir, Type: "timeout", Stream: dir, Toxicity: 1, Attributes: map[string]any{"timeout": 20000}})
				}
			}
			r.toxics(stall, 20*time.Second)
		})
		r.phase(*flagIngress+" reload", abrupt, func() {
			if err := r.ing.reload(); err != nil {
				t.Error(err)
			}
			r.logf("%s reloaded", *flagIngress)
		})
	}

	// Wind down: the WebSocket clients finish their calls (echo: the
	// half-close; chat: the last replies, then close 1000), then the
	// followers stop. Every follower must still be streaming.
	r.rec.begin("wind-down", 0)
	close(stopSending)
	wsDone := make(chan struct{})
	go func() { wsLoad.Wait(); close(wsDone) }()
	select {
	case <-wsDone:
	case <-time.After(30 * time.Second):
		r.rec.now().fail("WebSocket clients did not finish", "30 s after the wind-down began")
	}
	stuck := 0
	for _, f := range followers {
		if !f.dead.Load() && time.Since(f.lastTick()) > 10*time.Second {
			stuck++
			if stuck <= 5 {
				r.rec.now().fail("SSE stream stuck", fmt.Sprintf("SSE %d: no tick for %v (last seq %d)", f.id, time.Since(f.lastTick()).Round(time.Second), f.lastSeq()))
			}
		}
	}
	if stuck > 5 {
		r.rec.now().fail("SSE stream stuck", fmt.Sprintf("and %d more", stuck-5))
	}
	stopLoad()
	load.Wait()
	r.rec.finish()
	stopScrape()
	scraping.Wait()
	r.logf("load stopped")

	written = true
	r.writeReport(followers, "")
	if ctx.Err() != nil {
		t.Errorf("the rehearsal ran out of its %v deadline", sz.deadline)
	}
}

// writeReport writes the report, into the run's directory and as
// report.md beside it, and fails the test if the run failed. stopped says
// why the script ended early, if it did.
func (r *run) writeReport(followers []*follower, stopped string) {
	report, failed := r.report(followers, stopped)
	for _, file := range []string{filepath.Join(*flagOut, "report.md"), filepath.Join(r.dir, "report.md")} {
		if err := os.WriteFile(file, []byte(report), 0o644); err != nil {
			r.t.Error(err)
		}
	}
	r.t.Logf("report: %s", filepath.Join(*flagOut, "report.md"))
	if failed != "" {
		r.t.Errorf("the rehearsal failed: %s (see the report)", failed)
	}
}

// phase runs one step of the script, then lets it settle.
func (r *run) phase(name string, explain int, do func()) {
	r.rec.begin(name, explain)
	r.logf("phase: %s", name)
	do()
	time.Sleep(r.sz.settle)
}

func (r *run) startBackend(j int) *proc {
	p := startProc(r.t, r.dir, fmt.Sprintf("backend%d", j+1), r.demoBin, "-addr", backendAddr(j))
	if !waitUntil(20*time.Second, func() bool { return p.exited() || listening(backendAddr(j)) }) || p.exited() {
		r.t.Fatalf("backend %d does not listen on %s", j+1, backendAddr(j))
	}
	return p
}

// restartBridge does what a Deployment's rollout does to one pod: SIGTERM,
// wait for the exit (within the grace period, 30 s), start it again and
// wait until it is ready.
func (r *run) restartBridge(b *bridge) {
	p := b.current()
	sent := time.Now()
	p.signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		r.rec.now().fail("bridge outlived its grace period", err.Error())
		p.kill()
	}
	code := p.cmd.ProcessState.ExitCode()
	r.logf("%s exited %d, %.1f s after SIGTERM", b.name(), code, time.Since(sent).Seconds())
	if code != 0 {
		r.rec.now().fail("bridge exit status", fmt.Sprintf("%s exited %d after SIGTERM", b.name(), code))
	}
	b.start(r.t)
	r.logf("%s ready again", b.name())
}

// toxics adds the toxics, waits d and removes them.
func (r *run) toxics(txs []toxic, d time.Duration) {
	for _, tx := range txs {
		if err := r.x.add(tx); err != nil {
			r.t.Error(err)
		}
	}
	r.logf("%d toxics added", len(txs))
	time.Sleep(d)
	for _, tx := range txs {
		if err := r.x.remove(tx); err != nil {
			r.t.Error(err)
		}
	}
	r.logf("toxics removed")
}

// --- the bridges' metrics ------------------------------------------------------

// sample is one scrape of every bridge's admin /metrics.
type sample struct {
	at         time.Duration
	goroutines [nBridges]float64 // -1: down
	rssMiB     [nBridges]float64
	streams    [nBridges]float64
}

func (r *run) scrape(ctx context.Context) {
	client := http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(r.sz.scrape)
	defer tick.Stop()
	for {
		s := sample{at: time.Since(r.start)}
		for i := range nBridges {
			s.goroutines[i], s.rssMiB[i], s.streams[i] = -1, -1, -1
			resp, err := client.Get("http://" + bridgeAdminAddr(i) + "/metrics")
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			s.streams[i] = 0
			for sc.Scan() {
				line := sc.Text()
				name, val, ok := strings.Cut(line, " ")
				if !ok || strings.HasPrefix(line, "#") {
					continue
				}
				v, err := strconv.ParseFloat(val, 64)
				if err != nil {
					continue
				}
				switch {
				case name == "go_goroutines":
					s.goroutines[i] = v
				case name == "process_resident_memory_bytes":
					s.rssMiB[i] = v / (1 << 20)
				case strings.HasPrefix(name, "grpcbridge_streams_active{"):
					s.streams[i] += v
				}
			}
			resp.Body.Close()
		}
		r.mu.Lock()
		r.samples = append(r.samples, s)
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
