package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Native gRPC pass-through: a POST with Content-Type application/grpc (or
// application/grpc+codec) is a gRPC call from an internal caller, and the
// bridge proxies it to the method's backend as it arrived. Messages travel
// as raw frames: received into a [rawFrame] and sent on without being
// decoded or re-encoded, so any message, valid for the schema or not, with
// unknown fields or in another codec (grpc+json), arrives byte for byte.
// Only compression is per hop: a compressed request (with a compressor the
// program registered) is decompressed on the way in and forwarded
// uncompressed.
//
// Every method kind is served the same way, as one full-duplex stream each
// way; the backend enforces the kind. Metadata, the deadline, response
// headers, trailers and the final status (code, message and details) pass
// through; see [forwardedMetadata] for the keys that do not.
//
// The grpc.Server behind it serves nothing but the pass-through (its
// unknown-service handler), the bridge's own grpc.health.v1.Health and its
// own server reflection (reflection_server.go), so health and reflection
// answer for the bridge, never for a backend. It never listens: requests
// reach it through [grpc.Server.ServeHTTP], which needs HTTP/2 (TLS, or
// cleartext h2c with prior knowledge). Browsers never reach it: serveGRPC
// refuses requests with an Origin or a Sec-Fetch-* header first.

// mdForwardedGRPCKeys are the grpc-* metadata keys that describe the call
// rather than one hop (trace context of OpenCensus-era tracers) and so pass
// through; every other grpc-* key is the transport's own.
var mdForwardedGRPCKeys = map[string]bool{
	"grpc-trace-bin": true,
	"grpc-tags-bin":  true,
}

// passthroughDesc opens every proxied call as a full-duplex stream, so that
// frames flow whatever the method's kind: a unary call is one request, a
// half-close and one response on the wire, which the stream carries as is.
var passthroughDesc = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// Causes of a proxied call's end that the bridge chose; the handler turns
// them into the status the caller gets.
var (
	errDraining         = errors.New("bridge: draining")
	errMaxDurationLimit = errors.New("bridge: maximum stream duration")
)

// callerError is the cause of a call that the caller's side ended: a
// request message over the size limit, a caller gone, a request the backend
// stream refused. err is the status the caller gets.
type callerError struct{ err error }

func (e *callerError) Error() string { return e.err.Error() }
func (e *callerError) Unwrap() error { return e.err }

// nativeGRPC is the handler's gRPC server for pass-through calls and the
// health service. It is built once in [NewHandler] and read-only after.
type nativeGRPC struct {
	server      *grpc.Server
	health      *health.Server
	maxMsgBytes int
	// drained is done once the handler drains. It is a context, not a
	// channel, so that a call can tie its cancellation to it with
	// context.AfterFunc instead of a goroutine per call.
	drained context.Context //nolint:containedctx // a signal, not a call's context
	drain   context.CancelFunc
}

func newNativeGRPC(h *Handler) *nativeGRPC {
	// One limit for both directions: the frame is held in memory whole
	// either way. A request over it fails with RESOURCE_EXHAUSTED at the
	// bridge; a response over it fails the upstream call with
	// RESOURCE_EXHAUSTED before the bridge reads it.
	limit := int(min(h.cfg.readMaxBytes, int64(math.MaxInt)))
	n := &nativeGRPC{health: health.NewServer(), maxMsgBytes: limit}
	n.drained, n.drain = context.WithCancel(context.Background())
	n.server = grpc.NewServer(
		grpc.UnknownServiceHandler(h.proxyStream),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(limit),
		grpc.MaxSendMsgSize(limit),
	)
	healthpb.RegisterHealthServer(n.server, &drainingHealth{Server: n.health, drained: n.drained})
	registerReflection(n.server, h, n.drained) // see reflection_server.go
	return n
}

// startDrain turns the health service NOT_SERVING, ends its watches and
// the calls that stream responses; [streams] refuses new calls.
func (n *nativeGRPC) startDrain() {
	n.health.Shutdown()
	n.drain()
}

// grpcClient is the client address under which native gRPC calls count
// in [streams]: none, so that the per-client limit, made for browsers,
// does not throttle internal services that share a few addresses (sidecars,
// NAT). The total limit and the drain apply.
const grpcClient = ""

// grpcExchangeKey is the request context key of the [grpcExchange].
type grpcExchangeKey struct{}

// grpcExchange is one native gRPC request, from [Handler.serveGRPC] to the
// stream handler that grpc-go runs for it. It lets serveGRPC wait for the
// stream handler and its request pump, which grpc-go's ServeHTTP does not:
// ServeHTTP returns as soon as the caller is gone, and the pump blocked in
// the server stream's RecvMsg ends only after the handler returned and
// grpc-go ended the stream.
type grpcExchange struct {
	path        string // the request's escaped path, as ServeHTTP matches it
	contentType string
	remoteAddr  string
	host        string
	client      string // the caller's address, after trusted proxies

	mu     sync.Mutex
	closed bool // serveGRPC waits: no handler may enter any more
	wg     sync.WaitGroup
	call   *grpcCall // set by the stream handler, read after wg.Wait
}

// enter registers the stream handler; false means the request is over and
// the handler must not start the call.
func (x *grpcExchange) enter() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return false
	}
	x.wg.Add(1)
	return true
}

// wait stops new handlers from entering and waits for those that did, and
// for their pumps.
func (x *grpcExchange) wait() {
	x.mu.Lock()
	x.closed = true
	x.mu.Unlock()
	x.wg.Wait()
}

// grpcCall is one proxied call, for the drain, metrics and logs.
type grpcCall struct {
	m        *method
	start    time.Time
	admitted bool // counted in h.streams; serveGRPC ends it
	obs      StreamObserver
	st       *status.Status
	messages int // response messages sent to the caller
}

// serveGRPC serves a native gRPC request: a POST with a gRPC Content-Type.
// Requests that grpc-go would refuse with a bare text body (HTTP/1.1, a
// Content-Type that is not gRPC, such as gRPC-Web) get a JSON status that
// says what to change. It returns only after every goroutine of the call
// has ended.
func (h *Handler) serveGRPC(w http.ResponseWriter, r *http.Request) {
	// A browser's fetch can send application/grpc too, with the user's
	// cookies; native gRPC forwards every header, so it is refused before
	// anything else, gRPC-Web and Connect content types included.
	if why := fromBrowser(r); why != "" {
		st := status.Newf(codes.PermissionDenied,
			"native gRPC is for internal callers, and this request carries %s as browsers send it; browsers use SSE or the %s WebSocket protocol", why, wsSubprotocol)
		h.log.LogAttrs(r.Context(), slog.LevelInfo, "request refused",
			slog.String(logKeyTransport, TransportGRPC),
			slog.String(logKeyPeer, r.RemoteAddr),
			slog.String(logKeyOrigin, r.Header.Get(headerOrigin)),
			slog.String(logKeyReason, st.Message()))
		writeGRPCRefusal(w, r, h, st)
		return
	}
	if h.refuseNativeGRPCHere(w, r) { // see grpcport.go
		return
	}
	ct := r.Header.Get(headerContentType)
	if _, ok := grpcContentSubtype(ct); !ok {
		h.writeError(w, http.StatusUnsupportedMediaType, status.Newf(codes.InvalidArgument,
			"Content-Type %q is not native gRPC: send application/grpc or application/grpc+<codec> over HTTP/2 (gRPC-Web is not served; browsers use SSE or the %s WebSocket protocol)",
			ct, wsSubprotocol))
		return
	}
	if r.ProtoMajor != 2 {
		h.writeError(w, http.StatusHTTPVersionNotSupported, status.Newf(codes.InvalidArgument,
			"native gRPC needs HTTP/2 and this request came over %s: use TLS with ALPN h2, or cleartext HTTP/2 with prior knowledge (h2c)",
			quoteName(r.Proto)))
		return
	}
	x := &grpcExchange{
		path:        r.URL.EscapedPath(),
		contentType: ct,
		remoteAddr:  r.RemoteAddr,
		host:        r.Host,
		client:      h.clientIP(r),
	}
	h.native.server.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), grpcExchangeKey{}, x)))
	x.wait()
	c := x.call
	if c == nil {
		return // the health service, or a call refused before it began
	}
	if c.admitted {
		c.obs.StreamEnded(c.st.Code(), 0, false)
		h.streams.end(grpcClient)
	}
	h.logStreamEnd(r.Context(), r.RemoteAddr, streamEnd{method: c.m.name, transport: TransportGRPC, st: c.st, start: c.start, messages: c.messages})
}

// proxyStream is the grpc.Server's handler for every method it does not
// serve itself: it proxies the call to the method's backend. It runs on
// grpc-go's stream goroutine, which is the only one that receives from the
// backend and sends to the caller; one pump goroutine receives from the
// caller and sends to the backend.
func (h *Handler) proxyStream(_ any, ss grpc.ServerStream) error {
	x, _ := ss.Context().Value(grpcExchangeKey{}).(*grpcExchange)
	if x == nil {
		// Unreachable: only serveGRPC calls the server.
		return status.Error(codes.Internal, "bridge: gRPC request without an exchange")
	}
	if !x.enter() {
		return status.Error(codes.Canceled, "the request has ended")
	}
	defer x.wg.Done()
	// The same policy as for browsers: only exposed methods are reachable,
	// and an unknown method and one that is not exposed look the same.
	m := h.routes.Load().byPath[x.path]
	if m == nil {
		return status.Errorf(codes.Unimplemented, "unknown method %s", x.path)
	}
	// Native gRPC forwards every metadata key, unlike the browser
	// transports: it is for internal callers only.
	if !h.nativeCallerAllowed(x.client) {
		if x.client == unknownClient {
			return status.Error(codes.PermissionDenied, "native gRPC is served to internal networks only, and the caller's address is unknown: the X-Forwarded-For chain does not parse")
		}
		return status.Errorf(codes.PermissionDenied, "native gRPC is served to internal networks only, and %s is not in one; browsers use SSE or WebSockets", x.client)
	}
	c := &grpcCall{m: m, start: time.Now()}
	x.call = c
	if a := h.streams.begin(grpcClient); a != admitted {
		_, c.st = h.streams.refusal(a)
		return c.st.Err()
	}
	c.admitted = true
	c.obs = h.cfg.metrics.StreamStarted(m.name, TransportGRPC, false)
	// grpc-go recovers no panic in a stream handler.
	err := func() (err error) {
		defer h.recoverStream(m.name, TransportGRPC, func(st *status.Status) { err = st.Err() })
		return h.relay(ss, x, c)
	}()
	c.st = statusFromError(err)
	return err
}

// relay runs one admitted call until the backend's final status, which it
// returns unchanged, or until the caller's side or the bridge ends it.
func (h *Handler) relay(ss grpc.ServerStream, x *grpcExchange, c *grpcCall) error {
	m := c.m
	// The caller's context carries the deadline (grpc-go sets it from
	// grpc-timeout) and ends when the caller leaves; every path out of
	// relay cancels the upstream call.
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	if m.streamDesc.ServerStreams {
		// Calls that stream responses can last forever: like SSE and
		// WebSocket streams they end at the drain and at the maximum
		// duration, with UNAVAILABLE, so that callers reconnect to another
		// replica. Unary and client-streaming calls get the drain's time
		// to finish: ending them could lose a response whose effects
		// already happened.
		stop := context.AfterFunc(h.native.drained, func() { cancel(errDraining) })
		defer stop()
		if d := h.cfg.maxStreamDuration; d > 0 {
			t := time.AfterFunc(h.cfg.streamLifetime(d), func() { cancel(errMaxDurationLimit) })
			defer t.Stop()
		}
	}
	in, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, forwardedMetadata(in, x.remoteAddr, x.host))

	opts := []grpc.CallOption{
		grpc.ForceCodecV2(rawCodec{}),
		grpc.MaxCallRecvMsgSize(h.native.maxMsgBytes),
		grpc.MaxCallSendMsgSize(h.native.maxMsgBytes),
	}
	// The backend gets the caller's codec name (grpc+json stays json); a
	// bare application/grpc stays bare.
	if sub, ok := grpcContentSubtype(x.contentType); ok && sub != "" && x.contentType[len(contentTypeGRPCPrefix)] == '+' {
		opts = append(opts, grpc.CallContentSubtype(sub))
	}
	up, err := m.conn.NewStream(ctx, &passthroughDesc, m.path, opts...)
	if err != nil {
		return h.endStatus(ctx, m, err)
	}

	// The pump may outlive relay: when the backend ends the call while the
	// caller is still sending, the pump waits in the server stream's
	// RecvMsg, which only grpc-go ending the stream unblocks, after relay
	// returned. serveGRPC waits for it.
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer h.recoverStream(m.name, TransportGRPC, func(st *status.Status) { cancel(&callerError{err: st.Err()}) })
		pumpRequests(ss, up, cancel, c.obs)
	}()

	if hdr, _ := up.Header(); len(hdr) > 0 {
		if md := forwardedMetadata(hdr, "", ""); len(md) > 0 {
			if err := ss.SendHeader(md); err != nil {
				return err // the caller is gone
			}
		}
	}
	var f rawFrame
	for {
		if err = up.RecvMsg(&f); err != nil {
			break
		}
		n := f.data.Len()
		sendErr := ss.SendMsg(&f)
		f.free()
		if sendErr != nil {
			return sendErr // the caller is gone, or the frame is over the limit
		}
		c.obs.MessageSent(n)
		c.messages++
	}
	if md := forwardedMetadata(up.Trailer(), "", ""); len(md) > 0 {
		ss.SetTrailer(md)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return h.endStatus(ctx, m, err)
}

// pumpRequests is the only goroutine that receives from the caller and
// sends to the backend. It ends at the caller's half-close (and half-closes
// the backend stream), or at the first error; a failure on the caller's
// side ends the call with that status through cancel.
func pumpRequests(ss grpc.ServerStream, up grpc.ClientStream, cancel context.CancelCauseFunc, obs StreamObserver) {
	var f rawFrame
	for {
		if err := ss.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				_ = up.CloseSend() // always nil for client streams
				return
			}
			cancel(&callerError{err: err})
			return
		}
		n := f.data.Len()
		err := up.SendMsg(&f)
		f.free()
		if err != nil {
			// io.EOF: the backend ended the call, and RecvMsg on the
			// handler's side reports its status.
			if !errors.Is(err, io.EOF) {
				cancel(&callerError{err: err})
			}
			return
		}
		obs.MessageReceived(n)
	}
}

// endStatus is the status a call ends with when the upstream call failed
// with err: the bridge's own reason when it ended the call (the drain, the
// maximum duration, a failure on the caller's side), else the backend's
// status unchanged, or the gRPC client's without its internal details.
func (h *Handler) endStatus(ctx context.Context, m *method, err error) error {
	cause := context.Cause(ctx)
	var ce *callerError
	switch {
	case errors.Is(cause, errDraining):
		return status.Error(codes.Unavailable, "the bridge is shutting down")
	case errors.Is(cause, errMaxDurationLimit):
		return status.Errorf(codes.Unavailable, "the stream reached its maximum duration of %v", h.cfg.maxStreamDuration)
	case errors.As(cause, &ce):
		return statusFromError(ce.err).Err()
	}
	return m.callStatus(ctx, err).Err()
}

// forwardedMetadata is md without the keys that belong to one hop: pseudo-
// headers, hop-by-hop and transport headers (content-type, user-agent, te)
// and grpc-* keys but trace context, which grpc-go sets from the call
// itself (grpc-timeout from the deadline). Everything else passes, with no
// allow-list: native gRPC callers are internal services, trusted as a
// direct connection to the backend would be, unlike browsers. When
// remoteAddr is set (requests), the caller's address is appended to
// x-forwarded-for, and x-forwarded-host is set from host unless a proxy
// before the bridge set it, as the browser transports do.
func forwardedMetadata(md metadata.MD, remoteAddr, host string) metadata.MD {
	out := make(metadata.MD, len(md)+2)
	for k, vs := range md {
		if strings.HasPrefix(k, ":") || forbiddenMetadataKeys[k] ||
			strings.HasPrefix(k, "grpc-") && !mdForwardedGRPCKeys[k] {
			continue
		}
		out[k] = vs
	}
	if ip, _, err := net.SplitHostPort(remoteAddr); err == nil {
		if prior := strings.Join(out[mdForwardedFor], ", "); prior != "" {
			ip = prior + ", " + ip
		}
		out[mdForwardedFor] = []string{ip}
	}
	if _, ok := out[mdForwardedHost]; !ok && host != "" && isPrintableASCII(host) {
		out[mdForwardedHost] = []string{host}
	}
	return out
}

// writeGRPCRefusal answers a gRPC request that is refused before grpc-go
// sees it: over HTTP/2 as a gRPC trailers-only response (200, grpc-status
// and grpc-message in the headers), which every gRPC client reads as the
// status; over HTTP/1.1, which gRPC cannot speak, as the JSON status with
// the mapped HTTP status.
func writeGRPCRefusal(w http.ResponseWriter, r *http.Request, h *Handler, st *status.Status) {
	if r.ProtoMajor != 2 {
		h.writeStatus(w, st)
		return
	}
	hdr := w.Header()
	hdr.Set(headerContentType, contentTypeGRPCPrefix)
	hdr.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
	hdr.Set("Grpc-Message", encodeGRPCMessage(st.Message()))
	w.WriteHeader(http.StatusOK)
}

// encodeGRPCMessage percent-encodes a status message for the grpc-message
// header: every byte outside printable ASCII, and '%' itself (gRPC over
// HTTP/2, "Responses").
func encodeGRPCMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// grpcContentSubtype returns the codec name of a gRPC Content-Type
// ("application/grpc+json": "json") and whether ct is one, by the rule of
// grpc-go's server (the gRPC over HTTP/2 spec, "Content-Type"), so that
// serveGRPC refuses exactly what ServeHTTP would.
func grpcContentSubtype(ct string) (string, bool) {
	if ct == contentTypeGRPCPrefix {
		return "", true
	}
	rest, ok := strings.CutPrefix(ct, contentTypeGRPCPrefix)
	if !ok || rest[0] != '+' && rest[0] != ';' {
		return "", false
	}
	return rest[1:], true
}

// drainingHealth is the standard health service, plus the drain: a watch
// open when the handler drains gets NOT_SERVING, then ends with
// UNAVAILABLE, so that it does not hold the HTTP server's shutdown.
type drainingHealth struct {
	*health.Server
	drained context.Context //nolint:containedctx // a signal, not a call's context
}

func (s *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.drained, cancel)
	defer stop()
	ws := &watchStream{Health_WatchServer: stream, ctx: ctx, last: -1}
	err := s.Server.Watch(req, ws)
	if s.drained.Err() == nil || stream.Context().Err() != nil {
		return err
	}
	// health.Server.Shutdown queued NOT_SERVING for the watch, but the
	// watch may have seen its context end first.
	if ws.last == healthpb.HealthCheckResponse_SERVING {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "the bridge is shutting down")
}

// watchStream is a watch's stream with a context that also ends at the
// drain. It records the last status sent. Used by one goroutine.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context //nolint:containedctx // per-stream, as grpc.ServerStream's own
	last healthpb.HealthCheckResponse_ServingStatus
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(resp *healthpb.HealthCheckResponse) error {
	if err := w.Health_WatchServer.Send(resp); err != nil {
		return err
	}
	w.last = resp.GetStatus()
	return nil
}

// nativeCallerAllowed reports whether a caller address may use native gRPC
// (see [WithNativeGRPCNetworks]).
func (h *Handler) nativeCallerAllowed(client string) bool {
	addr, err := netip.ParseAddr(client)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range h.cfg.nativeGRPCNetworks {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
