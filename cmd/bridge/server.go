package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/demo"
	"github.com/grpcbridge/grpcbridge/web"
)

// run listens on cfg.Addr and serves until ctx ends.
func run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, lis)
}

// serve serves on lis until ctx ends, then drains, and closes lis.
func serve(ctx context.Context, cfg *Config, log *slog.Logger, lis net.Listener) error {
	defer lis.Close()
	opts := []bridge.Option{
		bridge.WithLogger(log),
		bridge.WithHeartbeatInterval(cfg.HeartbeatInterval),
		bridge.WithRetryInterval(cfg.RetryInterval),
		bridge.WithWriteTimeout(cfg.WriteTimeout),
		bridge.WithPingInterval(cfg.PingInterval),
		bridge.WithPongTimeout(cfg.PongTimeout),
		bridge.WithReadMaxBytes(cfg.ReadMaxBytes),
		bridge.WithExpose(cfg.Expose...),
		bridge.WithMaxStreams(int(cfg.MaxStreams)),
		bridge.WithMaxStreamsPerClient(int(cfg.MaxClientStreams)),
		bridge.WithMaxStreamDuration(cfg.MaxStreamDuration),
	}
	for _, p := range cfg.TrustedProxies {
		opts = append(opts, bridge.WithTrustedProxies(netip.MustParsePrefix(p))) // validated with the config
	}
	if cfg.NativeGRPCNets != nil { // an empty list turns native gRPC off
		nets := make([]netip.Prefix, 0, len(cfg.NativeGRPCNets))
		for _, p := range cfg.NativeGRPCNets {
			nets = append(nets, netip.MustParsePrefix(p))
		}
		opts = append(opts, bridge.WithNativeGRPCNetworks(nets...))
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts = append(opts, bridge.WithMetrics(newPromMetrics(registry, cfg.MetricsNamespace)))
	tr, err := setupTracing(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.close(flushCtx); err != nil {
			log.Warn("flush spans", slog.Any("error", err))
		}
	}()
	ready := &readiness{}
	if len(cfg.RequestHeaders) > 0 {
		opts = append(opts, bridge.WithRequestHeaders(cfg.RequestHeaders...))
	}
	if len(cfg.ResponseMetadata) > 0 {
		opts = append(opts, bridge.WithResponseMetadata(cfg.ResponseMetadata...))
	}

	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	if cfg.Demo {
		conn, stopDemo, err := startDemoBackend(log)
		if err != nil {
			return err
		}
		defer stopDemo()
		conns = append(conns, conn)
		ready.backends = append(ready.backends, namedConn{name: "demo", conn: conn})
		opts = append(opts, bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*"))
	}
	backendConns := make(map[int]*grpc.ClientConn) // by index in cfg.Backends, for loadSchema
	for i, b := range cfg.Backends {
		conn, err := dialBackend(b, append(tr.dialOptions(), grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(int(cfg.ResponseMaxBytes)),
			grpc.MaxCallSendMsgSize(int(cfg.ReadMaxBytes)),
		))...)
		if err != nil {
			return err
		}
		conns = append(conns, conn)
		backendConns[i] = conn
		name := b.Name
		if name == "" {
			name = b.Target
		}
		ready.backends = append(ready.backends, namedConn{name: name, conn: conn})
		if len(b.Services) == 0 {
			opts = append(opts, bridge.WithBackend(conn))
		}
		for _, pattern := range b.Services {
			opts = append(opts, bridge.WithServiceBackend(pattern, conn))
		}
	}
	files, err := loadSchema(ctx, cfg, backendConns)
	if err != nil {
		return err
	}
	opts = append(opts, bridge.WithFiles(files))
	for name, mc := range cfg.Methods {
		opts = append(opts, bridge.WithSSEOptions(name, bridge.SSEOptions{CursorField: mc.CursorField, ResumeField: mc.ResumeField, Shared: mc.Shared}))
	}
	if len(cfg.AllowOrigins) > 0 {
		opts = append(opts, bridge.WithAllowedOrigins(cfg.AllowOrigins...))
	}
	opts = append(opts, bridge.WithCORSCredentials(cfg.CORSCredentials))

	h, err := bridge.NewHandler(opts...)
	if err != nil {
		return explainSchemaError(cfg, err)
	}
	stopSchemaWatch := startSchemaWatch(ctx, cfg, h, backendConns, log)
	defer stopSchemaWatch()
	reclaimCtx, stopReclaim := context.WithCancel(ctx)
	reclaimDone := make(chan struct{})
	go func() {
		defer close(reclaimDone)
		reclaimMemory(reclaimCtx, h.ActiveStreams)
	}()
	defer func() {
		stopReclaim()
		<-reclaimDone
	}()
	srv := &http.Server{
		Addr:              cfg.Addr,
		Handler:           opsRoutes(tr.wrapHTTP(routes(h, cfg.Demo)), ready, registry),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(cfg.TLSCert != "")
	srv.Protocols.SetUnencryptedHTTP2(cfg.H2C)

	log.Info("bridge listening", slog.String("addr", lis.Addr().String()), slog.Bool("demo", cfg.Demo), slog.Bool("tls", cfg.TLSCert != ""))
	served := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			served <- srv.ServeTLS(lis, cfg.TLSCert, cfg.TLSKey)
			return
		}
		served <- srv.Serve(lis)
	}()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("draining", slog.Duration("timeout", cfg.DrainTimeout))
	ready.draining.Store(true)
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	// The handler first: SSE streams get their retry hint and end, and
	// WebSockets (which http.Server.Shutdown does not track) close with
	// 1001. Then the server closes its listener and idle connections.
	if err := h.Shutdown(drainCtx); err != nil {
		log.Warn("streams still open at the drain deadline", slog.Any("error", err))
	}
	if err := srv.Shutdown(drainCtx); err != nil {
		// Streams still open at the deadline are cut; browsers resume them
		// elsewhere with Last-Event-ID.
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// routes puts the bridge, the health endpoint and, in demo mode, the demo
// page on one mux.
func routes(h *bridge.Handler, demoPage bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	if demoPage {
		mux.Handle("GET /{$}", http.FileServerFS(web.Dist))
		mux.Handle("GET /static/", http.StripPrefix("/static", http.FileServerFS(web.Dist)))
	}
	mux.Handle("/", h)
	return mux
}

// opsRoutes serves the operational endpoints beside the bridge: readiness
// and Prometheus metrics, neither traced nor behind the bridge's routing.
func opsRoutes(bridgeRoutes http.Handler, ready *readiness, registry *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.Handle("/", bridgeRoutes)
	return mux
}

// startDemoBackend runs the demo services on a loopback port, as a real
// gRPC server in this process, and connects to it.
func startDemoBackend(log *slog.Logger) (*grpc.ClientConn, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("demo backend: %w", err)
	}
	srv := demo.NewServer()
	go func() { _ = srv.Serve(lis) }()
	log.Info("demo backend listening", slog.String("addr", lis.Addr().String()))
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		return nil, nil, fmt.Errorf("demo backend: %w", err)
	}
	return conn, srv.Stop, nil
}
