package main

// The session scenario: 100 concurrent calls on one grpc-session.v1
// session, over its WebSocket and over its HTTP fallback (an event stream
// down, POSTs up), against the same 100 calls over separate connections
// (100 grpc-ws.v1 WebSockets, or 100 SSE streams).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/sessionclient"
)

// sessionWorkloads are the scenario's two kinds of calls and, for each,
// the targets measured side by side: the two session carriers and the
// per-call transport that carries the same calls one connection each.
var sessionWorkloads = []struct {
	name, title string
	targets     []string
}{
	{"echo", "EchoService/Echo, bidi: each call does sequential round trips of a 60-byte payload; latency is the round trip",
		[]string{"session-ws", "session-http", "separate-ws"}},
	{"stream", "EchoService/Stream {count: 100, size: 60}, server-streaming: each call slot opens one call after the other; latency is from the call's start to its first message",
		[]string{"session-ws", "session-http", "separate-sse"}},
}

// Scenario settings: 100 calls at once; each run measures the scenario 2
// run time (-pipeline) after sessionWarm unmeasured.
const (
	sessionCalls       = 100
	sessionWarm        = 300 * time.Millisecond
	sessionStreamCount = 100
)

// scenarioSession is the session scenario: interleaved rounds of every
// workload and target, one load generator process per run.
func (h *harness) scenarioSession(ctx context.Context) error {
	c := h.cfg
	h.printf("\n## Sessions: %d calls on one session vs %d separate connections\n\n", sessionCalls, sessionCalls)
	backend, err := h.startDemo()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(h.work, "session.key")
	if err := os.WriteFile(keyFile, []byte("bench-session-key-0123456789abcdef0123456789\n"), 0o600); err != nil {
		return err
	}
	// Headroom over the 100 calls: a call's slot frees as its STATUS goes
	// out, and the stream workload opens the next call at once.
	br, err := h.startBridge("bridge-session", backend, false, "-session-key-file", keyFile, "-session-max-calls", "200")
	if err != nil {
		return err
	}
	dur := c.pipeDur
	h.printf("%d calls at once per run, %v measured after %v unmeasured; %d interleaved rounds; one load generator process per run. "+
		"session-ws: one grpc-session.v1 WebSocket; session-http: one session on the HTTP carrier (event stream down, one POST at a time up); "+
		"separate-ws: one grpc-ws.v1 WebSocket per call; separate-sse: one SSE request per call (100 keep-alive connections).\n",
		sessionCalls, dur, sessionWarm, c.rounds)
	type key struct{ workload, target string }
	res := map[key][]sessionResult{}
	for i := range c.rounds {
		h.progress("session: round %d of %d", i+1, c.rounds)
		for _, w := range sessionWorkloads {
			for _, t := range w.targets {
				var r sessionResult
				if err := h.bins.runLoad(ctx, &r, "load-session", "-workload", w.name, "-target", t, "-addr", br.addr,
					"-calls", strconv.Itoa(sessionCalls), "-dur", dur.String(), "-warm", sessionWarm.String()); err != nil {
					return err
				}
				res[key{w.name, t}] = append(res[key{w.name, t}], r)
			}
		}
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	for _, w := range sessionWorkloads {
		h.printf("\n### %s\n\n%s.\n\n", w.name, w.title)
		h.printf("| target | msgs/s per run | median msgs/s | median p50 µs | median p99 µs |\n|---|---|---|---|---|\n")
		pick := func(t string, f func(sessionResult) float64) []float64 {
			var xs []float64
			for _, r := range res[key{w.name, t}] {
				xs = append(xs, f(r))
			}
			return xs
		}
		rate := func(r sessionResult) float64 { return r.PerSec }
		for _, t := range w.targets {
			h.printf("| %s | %s | %.0f | %.0f | %.0f |\n", t, joinf(pick(t, rate), "%.0f"), median(pick(t, rate)),
				median(pick(t, func(r sessionResult) float64 { return us(r.Latency.P50) })),
				median(pick(t, func(r sessionResult) float64 { return us(r.Latency.P99) })))
		}
		base := w.targets[len(w.targets)-1]
		for _, t := range w.targets[:len(w.targets)-1] {
			h.printf("\n- %s / %s msgs/s: **%.2fx**", t, base, ratio(median(pick(t, rate)), median(pick(base, rate))))
		}
		h.printf("\n")
	}
	h.printf("\n(msgs/s: echo round trips, or stream messages received, per second over all %d calls.)\n", sessionCalls)
	return nil
}

// sessionResult is what load-session reports.
type sessionResult struct {
	Msgs    int64          `json:"msgs"`    // round trips (echo) or messages received (stream) in the measured time
	PerSec  float64        `json:"per_sec"` // Msgs per second
	Latency latencySummary `json:"latency"` // echo: round trip; stream: start of the call to its first message
}

// loadSession runs calls calls at once of one workload over one target
// and reports msgs/s and latency over dur, after warm.
func loadSession(args []string) error {
	fs := flag.NewFlagSet("load-session", flag.ContinueOnError)
	target := fs.String("target", "session-ws", "session-ws, session-http, separate-ws (echo) or separate-sse (stream)")
	workload := fs.String("workload", "echo", "echo (bidi round trips) or stream (server-streaming calls, one after the other per slot)")
	addr := fs.String("addr", "", "bridge address")
	calls := fs.Int("calls", sessionCalls, "calls at once")
	dur := fs.Duration("dur", 2*time.Second, "measured time")
	warm := fs.Duration("warm", sessionWarm, "unmeasured time first")
	size := fs.Int("size", 60, "payload bytes per message")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *warm+*dur+30*time.Second)
	defer cancel()
	if *calls < 1 {
		return fmt.Errorf("-calls must be at least 1, not %d", *calls)
	}
	switch *target {
	case "session-ws", "session-http", "separate-ws", "separate-sse":
	default:
		return fmt.Errorf("unknown target %q", *target)
	}
	var sess *sessionclient.Session // the session targets' one session, dialed below
	w := &sessionWindow{}

	var run func(ctx context.Context, m *sessionMeter) error
	switch {
	case *workload == "echo" && *target != "separate-sse":
		payload := make([]byte, *size)
		run = func(ctx context.Context, m *sessionMeter) error {
			var c echoConn
			var err error
			if sess != nil {
				c, err = openSessionEcho(ctx, sess)
			} else {
				c, err = dialWSEcho(ctx, *addr)
			}
			if err != nil {
				return err
			}
			defer c.close()
			return echoLoop(c, payload, w, m)
		}
	case *workload == "stream" && *target != "separate-ws":
		req := &demov1.StreamRequest{Count: sessionStreamCount, Size: int32(*size)}
		sse := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: *calls, ReadBufferSize: 64 << 10}}
		defer sse.CloseIdleConnections()
		url := fmt.Sprintf("http://%s/demo.v1.EchoService/Stream?count=%d&size=%d", *addr, req.Count, req.Size)
		run = func(ctx context.Context, m *sessionMeter) error {
			for time.Now().Before(w.until) {
				var err error
				if sess != nil {
					err = sessionStreamCall(ctx, sess, req, w, m)
				} else {
					err = sseStreamCall(ctx, sse, url, w, m)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}
	default:
		return fmt.Errorf("target %s does not carry the %s workload", *target, *workload)
	}

	var err error
	switch *target {
	case "session-ws":
		sess, err = sessionclient.DialWebSocket(ctx, "http://"+*addr, sessionclient.Options{})
	case "session-http":
		sess, err = sessionclient.DialHTTP(ctx, "http://"+*addr, sessionclient.Options{})
	}
	if err != nil {
		return err
	}
	if sess != nil {
		defer sess.Close()
	}
	w.from = time.Now().Add(*warm)
	w.until = w.from.Add(*dur)
	meters := make([]sessionMeter, *calls)
	var wg sync.WaitGroup
	errs := make(chan error, *calls)
	for i := range meters {
		wg.Go(func() {
			if err := run(ctx, &meters[i]); err != nil {
				errs <- fmt.Errorf("call slot %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	var all []time.Duration
	var res sessionResult
	for _, m := range meters {
		res.Msgs += m.msgs
		all = append(all, m.lat...)
	}
	res.PerSec = float64(res.Msgs) / dur.Seconds()
	res.Latency = summarize(all)
	return printJSON(res)
}

// sessionWindow is the measured time of a run.
type sessionWindow struct{ from, until time.Time }

func (w *sessionWindow) in(t time.Time) bool { return !t.Before(w.from) && !t.After(w.until) }

// sessionMeter is one call slot's count and latencies; one goroutine
// each, merged at the end.
type sessionMeter struct {
	msgs int64
	lat  []time.Duration
}

// echoLoop does round trips on c until the window ends, counting those
// that started and ended inside it.
func echoLoop(c echoConn, payload []byte, w *sessionWindow, m *sessionMeter) error {
	for {
		t0 := time.Now()
		if t0.After(w.until) {
			return nil
		}
		if err := c.send(payload); err != nil {
			return err
		}
		if err := c.recv(); err != nil {
			return err
		}
		if t1 := time.Now(); w.in(t0) && w.in(t1) {
			m.msgs++
			m.lat = append(m.lat, t1.Sub(t0))
		}
	}
}

// sessionEcho is an Echo call on a session, as an echoConn.
type sessionEcho struct {
	ctx  context.Context
	call *sessionclient.Call
}

func openSessionEcho(ctx context.Context, s *sessionclient.Session) (*sessionEcho, error) {
	c, err := s.Open("/demo.v1.EchoService/Echo", nil)
	if err != nil {
		return nil, err
	}
	return &sessionEcho{ctx: ctx, call: c}, nil
}

func (e *sessionEcho) send(payload []byte) error {
	b, _ := proto.Marshal(&demov1.EchoRequest{Text: "x", Payload: payload})
	return e.call.Send(e.ctx, b)
}

// sendN sends n messages; the session client puts the frames it has
// queued in one message itself.
func (e *sessionEcho) sendN(payload []byte, n int) error { return sendEach(e.send, payload, n) }

func (e *sessionEcho) recv() error {
	b, err := e.call.Recv(e.ctx)
	if err != nil {
		return err
	}
	var resp demov1.EchoResponse
	return proto.Unmarshal(b, &resp)
}

// close half-closes the call and waits for its OK status.
func (e *sessionEcho) close() {
	e.call.CloseSend()
	for {
		if _, err := e.call.Recv(e.ctx); err != nil {
			return
		}
	}
}

// sessionStreamCall makes one Stream call on a session and reads it to
// its end.
func sessionStreamCall(ctx context.Context, s *sessionclient.Session, req *demov1.StreamRequest, w *sessionWindow, m *sessionMeter) error {
	t0 := time.Now()
	c, err := s.Open("/demo.v1.EchoService/Stream", nil)
	if err != nil {
		return err
	}
	b, _ := proto.Marshal(req)
	if err := c.Send(ctx, b); err != nil {
		return err
	}
	got := 0
	for {
		_, err := c.Recv(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		now := time.Now()
		if got == 0 && w.in(t0) && w.in(now) {
			m.lat = append(m.lat, now.Sub(t0))
		}
		if w.in(now) {
			m.msgs++
		}
		got++
	}
	if got != int(req.Count) {
		return fmt.Errorf("stream call: %d messages, want %d", got, req.Count)
	}
	return nil
}

// sseStreamCall makes one Stream call as an SSE request and reads it to
// its end, counting message events as they arrive.
func sseStreamCall(ctx context.Context, client *http.Client, url string, w *sessionWindow, m *sessionMeter) error {
	t0 := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	var c sseCounter
	buf := make([]byte, 16<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			before := c.messages
			c.Write(buf[:n])
			now := time.Now()
			if before == 0 && c.messages > 0 && w.in(t0) && w.in(now) {
				m.lat = append(m.lat, now.Sub(t0))
			}
			if w.in(now) {
				m.msgs += c.messages - before
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if c.messages != sessionStreamCount {
		return fmt.Errorf("SSE stream: %d messages, want %d", c.messages, sessionStreamCount)
	}
	return nil
}
