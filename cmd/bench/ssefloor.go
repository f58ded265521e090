package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// sseFloor is `bench sse-floor`: the least an SSE gateway built on net/http
// and grpc-go can be. For each GET of /demo.v1.TickerService/Watch it calls
// the backend's Watch and writes every tick as an event, flushed, until
// either side ends; nothing else: no write deadline, no event ids, no
// metrics, no limits, no connection takeover. Net/http serves HTTP/1.1 and
// cleartext HTTP/2 (its HTTP/2 server is the same code as
// golang.org/x/net/http2's, which the bridge runs). Scenario 3 holds the
// same idle streams on it as on the bridge: what the two libraries alone
// keep per stream, the floor under the bridge's figure.
func sseFloor(args []string) error {
	fs := flag.NewFlagSet("sse-floor", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen on this loopback address")
	backend := fs.String("backend", "", "the demo backend's address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *backend == "" {
		return errors.New("-addr and -backend are required")
	}
	conn, err := grpc.NewClient(*backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	mux := sseFloorMux(demov1.NewTickerServiceClient(conn))
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return srv.ListenAndServe()
}

// sseFloorMux is sse-floor's handler: /metrics, /healthz and the event
// stream of ticker's Watch.
func sseFloorMux(ticker demov1.TickerServiceClient) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /demo.v1.TickerService/Watch", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		interval, _ := strconv.Atoi(q.Get("interval_ms"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stream, err := ticker.Watch(ctx, &demov1.WatchRequest{Symbol: q.Get("symbol"), IntervalMs: int32(interval), Limit: int32(limit)})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for {
			tick, err := stream.Recv()
			if err != nil {
				return
			}
			b, err := protojson.Marshal(tick)
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(w, "event: message\ndata: %s\n\n", b); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	})
	return mux
}

// startSSEFloor starts `bench sse-floor` in front of backend, with the
// bridge's runtime setting.
func (h *harness) startSSEFloor(backend string) (*bridgeProc, error) {
	addr, p, err := h.startSelf("sse-floor", []string{bridgeGODEBUG}, "-backend", backend)
	if err != nil {
		return nil, err
	}
	b := &bridgeProc{proc: p, addr: addr}
	return b, p.waitReady(30*time.Second, httpReady(b.url()+"/healthz"))
}

// idleFloor is the end of scenarios 3 and 3h2: the same idle streams held
// on `bench sse-floor`, beside the bridge's figures (bf) from the same
// run: what of the bridge's memory per stream net/http and grpc-go keep
// in any gateway built on them, and what is the bridge's own.
func (h *harness) idleFloor(v idleVariant, path string, bf *idleFigures) error {
	backend, err := h.startDemo()
	if err != nil {
		return err
	}
	floor, err := h.startSSEFloor(backend)
	if err != nil {
		return err
	}
	h.progress("idle: the floor")
	ff, err := h.measureIdle(floor, path, v.genArgs, func() error { return warmSSE(floor.url()) })
	if err != nil {
		return err
	}
	n := float64(h.cfg.idle)
	per := func(f *idleFigures) (g, rss, stack, heap float64) {
		return float64(f.g1-f.g0) / n, float64(f.rss1-f.rss0) / n / kib,
			(f.mem1[memStats[0]] - f.mem0[memStats[0]]) / n / kib, (f.mem1[memStats[1]] - f.mem0[memStats[1]]) / n / kib
	}
	h.printf("\nThe floor: the same %d streams on `bench sse-floor`, a gateway of net/http and grpc-go with nothing else "+
		"(a handler that calls Watch and writes each tick, flushed; no write deadline, event ids, metrics or connection takeover), "+
		"the bridge's runtime setting, one server at a time:\n\n", h.cfg.idle)
	h.printf("| server | goroutines per stream | RSS per stream | stacks | heap |\n|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		f    *idleFigures
	}{{"bridge (above)", bf}, {"floor: net/http + grpc-go", ff}} {
		g, rss, stack, heap := per(row.f)
		h.printf("| %s | %.2f | %.1f KiB | %.1f KiB | %.1f KiB |\n", row.name, g, rss, stack, heap)
	}
	_, brss, _, _ := per(bf)
	_, frss, _, _ := per(ff)
	h.printf("\n- bridge - floor: **%+.1f KiB** per stream\n", brss-frss)
	return nil
}
