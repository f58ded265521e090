package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/demo"
	"github.com/grpcbridge/grpcbridge/web"
)

// run listens on cfg's addresses and serves until ctx ends.
func run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	ls, err := listen(cfg)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, ls)
}

// listeners are the bridge's listeners: public (-addr) always, admin
// (-admin-addr) and grpc (-grpc-addr) when configured, nil otherwise.
type listeners struct {
	public, admin, grpc net.Listener
}

// listen opens every configured listener, or none.
func listen(cfg *Config) (listeners, error) {
	var ls listeners
	for _, l := range []struct {
		flag, addr string
		lis        *net.Listener
	}{{"-addr", cfg.Addr, &ls.public}, {"-admin-addr", cfg.AdminAddr, &ls.admin}, {"-grpc-addr", cfg.GRPCAddr, &ls.grpc}} {
		if l.addr == "" {
			continue
		}
		lis, err := net.Listen("tcp", l.addr)
		if err != nil {
			ls.close()
			return listeners{}, fmt.Errorf("%s: %w", l.flag, err)
		}
		*l.lis = lis
	}
	return ls, nil
}

func (ls listeners) close() {
	for _, l := range []net.Listener{ls.public, ls.admin, ls.grpc} {
		if l != nil {
			_ = l.Close()
		}
	}
}

// serve serves on ls until ctx ends, then drains (see [drain]), and closes
// ls.
func serve(ctx context.Context, cfg *Config, log *slog.Logger, ls listeners) error {
	defer ls.close()
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
		bridge.WithSharedReplay(cfg.SharedReplay),
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
	if ls.grpc != nil {
		opts = append(opts, bridge.WithNativeGRPCOnlyOnGRPCHandler())
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts = append(opts, bridge.WithMetrics(newPromMetrics(registry, cfg.MetricsNamespace)))
	sessions, err := sessionOptions(cfg) // sessions.go
	if err != nil {
		return err
	}
	if sessions != nil {
		opts = append(opts, bridge.WithSessions(*sessions))
	}
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
	ready := &readiness{log: log}
	registry.MustRegister(healthCollectors(cfg.MetricsNamespace, ready, cfg.MaxStreams)...)
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
		dialOpts := append(tr.dialOptions(), keepaliveOptions(cfg.BackendKeepalive, cfg.BackendKeepaliveTimeout)...)
		conn, err := dialBackend(b, append(dialOpts, grpc.WithDefaultCallOptions(
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
		if mc.hasSSE() {
			opts = append(opts, bridge.WithSSEOptions(name, bridge.SSEOptions{CursorField: mc.CursorField, ResumeField: mc.ResumeField, Shared: mc.Shared}))
		}
		if c := mc.Compression; c != nil {
			opts = append(opts, bridge.WithCompression(name, bridge.CompressionOptions{SSE: c.SSE, WebSocket: c.WebSocket, JSON: c.JSON}))
		}
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
	metrics := promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
	publicMetrics := metrics
	if ls.admin != nil {
		publicMetrics = nil // the public port answers /metrics with the bridge's 404
	}
	public := newServer(log, publicRoutes(tr.wrapHTTP(routes(h, cfg.Demo, cfg.OpenAPI)), ready, publicMetrics))
	setPublicProtocols(public, cfg)
	if err := configureHTTP2(public); err != nil {
		return err
	}
	servers := []listening{{srv: public, lis: ls.public}}
	if cfg.TLSCert != "" {
		// Clients that forget TLS get a reason, not a closed connection (tlssniff.go).
		servers[0] = listening{srv: public, lis: newTLSSniffListener(ls.public, public.ErrorLog), tls: true}
	}
	if ls.grpc != nil {
		// Cleartext HTTP/2 with prior knowledge, as gRPC clients speak it;
		// HTTP/1.1 too, so that anything else gets a JSON error, not a
		// closed connection.
		grpcSrv := newServer(log, tr.wrapHTTP(h.GRPCHandler()))
		grpcSrv.Protocols.SetUnencryptedHTTP2(true)
		if err := configureHTTP2(grpcSrv); err != nil {
			return err
		}
		servers = append(servers, listening{srv: grpcSrv, lis: ls.grpc})
	}
	if ls.admin != nil {
		// Last, so that it is shut down last: probes and scrapes see the
		// drain to its end.
		servers = append(servers, listening{srv: newServer(log, adminRoutes(ready, metrics)), lis: ls.admin})
	}

	attrs := []any{slog.String("addr", ls.public.Addr().String()), slog.Bool("demo", cfg.Demo), slog.Bool("tls", cfg.TLSCert != "")}
	if ls.admin != nil {
		attrs = append(attrs, slog.String("admin_addr", ls.admin.Addr().String()))
	}
	if ls.grpc != nil {
		attrs = append(attrs, slog.String("grpc_addr", ls.grpc.Addr().String()))
	}
	log.Info("bridge listening", attrs...)
	served := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			if s.tls {
				served <- s.srv.ServeTLS(s.lis, cfg.TLSCert, cfg.TLSKey)
				return
			}
			served <- s.srv.Serve(s.lis)
		}()
	}
	select {
	case err := <-served:
		// A listener failed (a bad certificate, say): stop the others.
		for _, s := range servers {
			_ = s.srv.Close()
		}
		for range len(servers) - 1 {
			<-served
		}
		return err
	case <-ctx.Done():
	}
	drain(cfg, log, h, ready, servers)
	var first error
	for range servers {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = err
		}
	}
	return first
}

// listening is an HTTP server and the listener it serves.
type listening struct {
	srv *http.Server
	lis net.Listener
	tls bool // serve HTTPS with the configured certificate
}

// newServer returns an HTTP server of h that speaks HTTP/1.1, plus whatever
// the caller turns on in Protocols.
func newServer(log *slog.Logger, h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	return srv
}

// msgH2COff is the refusal of cleartext HTTP/2 on a public port that runs
// with h2c off. It says what to change, and names no address.
const msgH2COff = "this port serves HTTP/1.1 only (the bridge runs with h2c off), and native gRPC needs HTTP/2: " +
	"turn h2c on, or connect with TLS"

// setPublicProtocols sets what the public server speaks: HTTP/1.1 always;
// with TLS, HTTP/2 by ALPN; in cleartext, HTTP/2 with prior knowledge (h2c,
// as native gRPC clients and curl --http2-prior-knowledge speak it; Go's
// server does not do the Upgrade: h2c dance, which gets HTTP/1.1).
//
// With h2c off, cleartext HTTP/2 is still recognised, only to refuse it
// with a reason: otherwise a gRPC client that meets an HTTP/1.1-only port
// reads the HTTP/1.1 error response as an HTTP/2 frame and fails with
// "http2: frame too large", or retries without end (grpcurl waits), and its
// user never learns why.
func setPublicProtocols(srv *http.Server, cfg *Config) {
	tlsOn := cfg.TLSCert != ""
	srv.Protocols.SetHTTP2(tlsOn)
	srv.Protocols.SetUnencryptedHTTP2(!tlsOn)
	if !tlsOn && !cfg.H2C {
		srv.Handler = refuseCleartextHTTP2(srv.Handler)
	}
}

// refuseCleartextHTTP2 serves HTTP/1.1 requests with next, and answers
// every HTTP/2 request with [msgH2COff]: a gRPC UNAVAILABLE for gRPC
// clients (a trailers-only response), a JSON 505 for the others.
func refuseCleartextHTTP2(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			next.ServeHTTP(w, r)
			return
		}
		writeUnavailable(w, r, msgH2COff, http.StatusHTTPVersionNotSupported)
	})
}

// writeUnavailable refuses r with a gRPC UNAVAILABLE of msg: for gRPC
// clients a trailers-only response, for the others httpStatus with the
// status in JSON. msg must be printable ASCII without '%', so that
// Grpc-Message needs no percent-encoding.
func writeUnavailable(w http.ResponseWriter, r *http.Request, msg string, httpStatus int) {
	st := status.New(codes.Unavailable, msg)
	hdr := w.Header()
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
		hdr.Set("Grpc-Message", st.Message())
		w.WriteHeader(http.StatusOK)
		return
	}
	body, _ := protojson.Marshal(st.Proto()) // a status of a code and a message always marshals
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// drain stops the bridge gracefully, as design.md's "Command line" says:
// /readyz turns 503 at once; for the shutdown delay every listener stays
// open and new requests are served as before, so that load balancers see
// the 503 and take the replica out of rotation before it refuses anything;
// then the handler drains (SSE streams get a retry hint and end, WebSockets
// UNAVAILABLE and 1001, native gRPC streams UNAVAILABLE), and the servers
// shut down, all within the drain timeout. Streams still open at its end
// are cut; browsers resume them elsewhere with Last-Event-ID.
func drain(cfg *Config, log *slog.Logger, h *bridge.Handler, ready *readiness, servers []listening) {
	ready.draining.Store(true)
	h.MarkNotReady() // the gRPC health service says so too
	log.Info("draining", slog.Duration("shutdown_delay", cfg.ShutdownDelay), slog.Duration("timeout", cfg.DrainTimeout))
	if cfg.ShutdownDelay > 0 {
		time.Sleep(cfg.ShutdownDelay)
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	// The handler first: http.Server.Shutdown does not track WebSockets
	// (hijacked) and would wait for SSE streams forever. Then each server
	// closes its listener and idle connections.
	if err := h.Shutdown(drainCtx); err != nil {
		log.Warn("streams still open at the drain deadline", slog.Any("error", err))
	}
	for _, s := range servers {
		if err := s.srv.Shutdown(drainCtx); err != nil {
			_ = s.srv.Close()
		}
	}
}

// routes puts the bridge, the health endpoint and, in demo mode, the demo
// page on one mux, and with apiDocs the API documents, which list only
// what is exposed (docs/api-docs.md).
func routes(h *bridge.Handler, demoPage, apiDocs bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", serveHealthz)
	if apiDocs {
		mux.Handle("GET /openapi.json", h.OpenAPIHandler())
		mux.Handle("GET /asyncapi.json", h.AsyncAPIHandler())
	}
	if demoPage {
		mux.Handle("GET /{$}", http.FileServerFS(web.Dist))
		mux.Handle("GET /static/", http.StripPrefix("/static", http.FileServerFS(web.Dist)))
	}
	mux.Handle("/", h)
	return mux
}

// publicRoutes serves the public operational endpoints beside the bridge,
// neither traced nor behind the bridge's routing: /readyz with its verdict
// only, and /metrics unless metrics is nil (with -admin-addr, where the
// bridge answers /metrics with its JSON 404).
func publicRoutes(bridgeRoutes http.Handler, ready *readiness, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", ready.handler(false))
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	mux.Handle("/", bridgeRoutes)
	return mux
}

// adminRoutes serves the admin listener: /healthz, /readyz with its
// reasons, /metrics, and nothing else.
func adminRoutes(ready *readiness, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", serveHealthz)
	mux.Handle("GET /readyz", ready.handler(true))
	mux.Handle("GET /metrics", metrics)
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
