package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Defaults of the handler's settings. Each option documents what zero means.
const (
	defaultHeartbeatInterval = 15 * time.Second
	defaultRetryInterval     = 2 * time.Second
	defaultWriteTimeout      = 10 * time.Second
	defaultReadMaxBytes      = 4 << 20 // gRPC's default receive limit
	defaultSharedQueueLen    = 64      // events queued per subscriber of a shared call
	defaultPingInterval      = 30 * time.Second
	defaultPongTimeout       = 10 * time.Second
	maxLastEventIDBytes      = 1024
)

// defaultRequestHeaders are the HTTP request headers forwarded to the
// backend as gRPC metadata unless [WithRequestHeaders] replaces them:
// credentials, W3C trace context, request ids and the gRPC deadline.
var defaultRequestHeaders = []string{
	"authorization",
	"traceparent",
	"tracestate",
	"baggage",
	"x-request-id",
	"x-correlation-id",
	"accept-language",
	"grpc-timeout",
}

// DefaultRequestHeaders returns the request headers forwarded to backends
// unless [WithRequestHeaders] replaces them, in a new slice, so that a
// program can log or extend the list it replaces.
func DefaultRequestHeaders() []string {
	return append([]string(nil), defaultRequestHeaders...)
}

// An Option configures a [Handler]. Only this package defines options.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// SSEOptions are a method's Server-Sent Events settings. Proto files declare
// them with the (bridge.v1.method) option; [WithSSEOptions] overrides them.
type SSEOptions struct {
	// CursorField names a scalar (string or integer) field of the response
	// message whose value becomes each event's id. Empty: ids are a
	// per-stream sequence number starting at 1.
	CursorField string
	// ResumeField names a scalar field of the request message that is set
	// from the Last-Event-ID header when a browser resumes a stream. Empty:
	// Last-Event-ID only travels as the last-event-id metadata entry.
	ResumeField string
	// Shared lets SSE streams that ask for the same thing share one upstream
	// call: the same method, the same request (compared as its deterministic
	// protobuf encoding) and the same forwarded metadata. Each message is
	// encoded once and written to every subscriber; a subscriber that falls
	// behind is dropped with a RESOURCE_EXHAUSTED error event and a retry
	// hint, and never slows the others. A stream that resumes with a
	// Last-Event-ID among the call's last events ([WithSharedReplay])
	// rejoins it and gets what it missed. The call ends when its last
	// subscriber leaves. Only server-streaming methods can be shared
	// ([NewHandler] refuses others), and only methods whose responses are
	// the same for every caller that sends the same request and credentials
	// should be: see the protocol documentation, "Shared streams", for what
	// a shared call carries. Defaults to false: every stream has its own
	// call.
	Shared bool
}

type serviceBackend struct {
	pattern string
	conn    grpc.ClientConnInterface
}

// config is the handler's private configuration, built from defaults and
// options, then validated by [NewHandler].
type config struct {
	files             *protoregistry.Files
	defaultBackend    grpc.ClientConnInterface
	serviceBackends   []serviceBackend
	expose            []string
	sseOverrides      map[string]SSEOptions
	compressOverrides map[string]CompressionOptions // WithCompression
	requestHeaders    []string
	responseMetadata  []string
	heartbeatInterval time.Duration
	retryInterval     time.Duration
	writeTimeout      time.Duration
	readMaxBytes      int64
	allowedOrigins    []string
	corsCredentials   bool // Access-Control-Allow-Credentials for named origins
	pingInterval      time.Duration
	pongTimeout       time.Duration
	logger            *slog.Logger
	metrics           Metrics
	maxStreams        int
	maxClientStreams  int
	maxStreamDuration time.Duration
	trustedProxies    []netip.Prefix
	// nativeGRPCNetworks may use native gRPC; nativeGRPCNetworksSet tells
	// an explicit empty list (native gRPC off) from the default.
	nativeGRPCNetworks    []netip.Prefix
	nativeGRPCNetworksSet bool
	// nativeGRPCOnlyOnGRPCHandler: see [WithNativeGRPCOnlyOnGRPCHandler].
	nativeGRPCOnlyOnGRPCHandler bool
	// sseNoHijack keeps HTTP/1.1 event streams on net/http's
	// ResponseWriter, for tests of that path.
	sseNoHijack bool
	// sharedReplay is the number of events a shared call keeps for
	// resuming streams ([WithSharedReplay]); 0: the default.
	sharedReplay int
	// streamJitter draws the part of spread that a stream's maximum
	// duration is shortened by; nil: at random (streamLifetime).
	streamJitter func(spread time.Duration) time.Duration
	// sessions turns sessions on ([WithSessions]); nil: off.
	sessions *SessionOptions
}

// WithSessions serves sessions (grpc-session.v1, docs/protocol.md
// "Sessions") at /_bridge/session: many calls of any exposed methods on one
// WebSocket, or on an event stream and POSTs where WebSockets are blocked,
// surviving cuts of the downstream, and reachable from every replica. See
// [SessionOptions] for what it needs and its limits. Defaults to off: the
// path is 404.
func WithSessions(o SessionOptions) Option {
	return optionFunc(func(c *config) { c.sessions = &o })
}

// WithFiles sets the schema: the protobuf file descriptors in which the
// handler looks up exposed services. Defaults to
// [protoregistry.GlobalFiles], the descriptors compiled into the program.
func WithFiles(files *protoregistry.Files) Option {
	return optionFunc(func(c *config) { c.files = files })
}

// WithBackend sets the connection used for every exposed service that no
// [WithServiceBackend] pattern matches. A [*grpc.ClientConn] is the usual
// value; any [grpc.ClientConnInterface] works, which is how tests plug in.
func WithBackend(conn grpc.ClientConnInterface) Option {
	return optionFunc(func(c *config) { c.defaultBackend = conn })
}

// WithServiceBackend routes the services that pattern matches to conn.
// Patterns are those of [WithExpose] without a method ("demo.v1.*",
// "demo.v1.TickerService"); the first matching pattern wins.
func WithServiceBackend(pattern string, conn grpc.ClientConnInterface) Option {
	return optionFunc(func(c *config) {
		c.serviceBackends = append(c.serviceBackends, serviceBackend{pattern: pattern, conn: conn})
	})
}

// WithExpose makes the methods matching the patterns reachable. A pattern
// is "pkg.*" (every method of the services of package pkg, but not of its
// sub-packages such as pkg.internal), "pkg.Service" (every method of the
// service) or "pkg.Service/Method" (one method); other globs use
// [path.Match] syntax on the service's full name and the method's name. Nothing is
// exposed without this option, and a pattern that matches no method of the
// schema is an error, so a typo does not silently hide a service.
func WithExpose(patterns ...string) Option {
	return optionFunc(func(c *config) { c.expose = append(c.expose, patterns...) })
}

// WithSSEOptions overrides the SSE options of one method, named
// "pkg.Service/Method", over those its proto file declares.
func WithSSEOptions(method string, opts SSEOptions) Option {
	return optionFunc(func(c *config) {
		if c.sseOverrides == nil {
			c.sseOverrides = make(map[string]SSEOptions)
		}
		c.sseOverrides[method] = opts
	})
}

// WithRequestHeaders replaces the allow-list of HTTP request headers that
// are forwarded to the backend as gRPC metadata. Entries are header names,
// matched case-insensitively, or prefixes ending in "*" ("x-tenant-*").
// Defaults to authorization, traceparent, tracestate, baggage, x-request-id,
// x-correlation-id, accept-language and grpc-timeout. "grpc-timeout" is not
// forwarded as such but sets the call's deadline. Cookie is forwarded only
// when named exactly; hop-by-hop headers, pseudo-headers and other grpc-*
// keys are rejected by [NewHandler].
func WithRequestHeaders(names ...string) Option {
	return optionFunc(func(c *config) { c.requestHeaders = names })
}

// WithResponseMetadata sets the allow-list of backend response header and
// trailer keys passed to browsers (the SSE headers event and the trailers of
// the end event), with the same syntax as [WithRequestHeaders]. Defaults to
// none: backend metadata stays private unless named here.
func WithResponseMetadata(names ...string) Option {
	return optionFunc(func(c *config) { c.responseMetadata = names })
}

// WithHeartbeatInterval sets how often an idle SSE stream gets a comment
// line, so that proxies and load balancers do not cut it. Defaults to 15 s;
// zero means the default.
func WithHeartbeatInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.heartbeatInterval = d })
}

// WithRetryInterval sets the reconnection delay sent to browsers in SSE
// retry: fields. Defaults to 2 s; zero means the default.
func WithRetryInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.retryInterval = d })
}

// WithWriteTimeout bounds each write to a browser; a write blocked longer
// ends the stream and cancels the upstream call. Defaults to 10 s; zero
// means the default.
func WithWriteTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.writeTimeout = d })
}

// WithReadMaxBytes bounds the size of a request message from a browser (a
// JSON body, or a WebSocket message), and of native gRPC messages in both
// directions. Defaults to 4 MiB, as gRPC's receive limit; zero means the
// default.
func WithReadMaxBytes(n int64) Option {
	return optionFunc(func(c *config) { c.readMaxBytes = n })
}

// WithAllowedOrigins sets the origins ("https://app.example.com", scheme
// and host as browsers send them in the Origin header) whose pages may open
// WebSockets to the bridge, besides the bridge's own origin (the Origin's
// host equals the request's Host), which is always allowed. "*" allows every
// origin. Requests without an Origin header do not come from a browser and
// are not checked. Defaults to none: same-origin only.
func WithAllowedOrigins(origins ...string) Option {
	return optionFunc(func(c *config) { c.allowedOrigins = append(c.allowedOrigins, origins...) })
}

// WithPingInterval sets how often the bridge pings an idle WebSocket peer.
// Defaults to 30 s; zero means the default.
func WithPingInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.pingInterval = d })
}

// WithPongTimeout sets how long a WebSocket peer has to answer a ping
// before the bridge drops it and cancels its call. Defaults to 10 s; zero
// means the default.
func WithPongTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.pongTimeout = d })
}

// WithMaxStreams bounds the streams (SSE and WebSocket) open at once. A
// stream over the limit is refused as transient: a WebSocket handshake gets
// 503, an SSE request a retry hint and an UNAVAILABLE error event, so that
// browsers come back later or at another replica. Defaults to 0, no limit.
func WithMaxStreams(n int) Option {
	return optionFunc(func(c *config) { c.maxStreams = n })
}

// WithMaxStreamsPerClient bounds the streams open at once from one client
// IP address (see [WithTrustedProxies]). A stream over the limit gets 429
// with status RESOURCE_EXHAUSTED, before any upgrade. Defaults to 0, no
// limit.
func WithMaxStreamsPerClient(n int) Option {
	return optionFunc(func(c *config) { c.maxClientStreams = n })
}

// WithTrustedProxies names the proxies (load balancers, ingress) whose
// X-Forwarded-For the handler believes: a request from one of these
// addresses is counted against the address they forwarded it for, the
// right-most one that is not itself a trusted proxy. Defaults to none: the
// client is the peer address.
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return optionFunc(func(c *config) { c.trustedProxies = append(c.trustedProxies, prefixes...) })
}

// WithMaxStreamDuration ends streams that have been open this long, so
// that long-lived connections spread over new replicas: SSE streams get a
// retry hint and end, and the browser resumes with Last-Event-ID; WebSockets
// end with status UNAVAILABLE. Each stream's limit is d less a random amount
// of up to d/10, so that streams opened together do not all end together.
// Defaults to 0, no limit.
func WithMaxStreamDuration(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxStreamDuration = d })
}

// WithLogger sets the logger. Defaults to a logger that discards everything.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

func newConfig(opts []Option) (*config, error) {
	c := &config{
		files:             protoregistry.GlobalFiles,
		requestHeaders:    defaultRequestHeaders,
		heartbeatInterval: defaultHeartbeatInterval,
		retryInterval:     defaultRetryInterval,
		writeTimeout:      defaultWriteTimeout,
		readMaxBytes:      defaultReadMaxBytes,
	}
	for _, o := range opts {
		o.apply(c)
	}
	var errs []error
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.metrics == nil {
		c.metrics = noMetrics{}
	}
	if !c.nativeGRPCNetworksSet {
		c.nativeGRPCNetworks = defaultNativeGRPCNetworks
	}
	if c.files == nil {
		c.files = protoregistry.GlobalFiles
	}
	if c.maxStreams < 0 || c.maxClientStreams < 0 {
		errs = append(errs, errors.New("negative stream limit"))
	}
	if c.sharedReplay < 0 {
		errs = append(errs, fmt.Errorf("shared replay window of %d events: want 0 (the default) or more", c.sharedReplay))
	}
	for _, d := range []*time.Duration{&c.heartbeatInterval, &c.retryInterval, &c.writeTimeout, &c.pingInterval, &c.pongTimeout, &c.maxStreamDuration} {
		if *d < 0 {
			errs = append(errs, fmt.Errorf("negative duration %v", *d))
		}
	}
	if c.heartbeatInterval == 0 {
		c.heartbeatInterval = defaultHeartbeatInterval
	}
	if c.retryInterval == 0 {
		c.retryInterval = defaultRetryInterval
	}
	if c.writeTimeout == 0 {
		c.writeTimeout = defaultWriteTimeout
	}
	if c.pingInterval == 0 {
		c.pingInterval = defaultPingInterval
	}
	if c.pongTimeout == 0 {
		c.pongTimeout = defaultPongTimeout
	}
	if c.readMaxBytes <= 0 {
		c.readMaxBytes = defaultReadMaxBytes
	}
	if len(c.expose) == 0 {
		errs = append(errs, errors.New("no method exposed: use WithExpose"))
	}
	for _, p := range c.expose {
		if strings.Count(p, "/") > 1 || strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("expose pattern %q: want pkg.*, pkg.Service or pkg.Service/Method", p))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("bridge: %w", errors.Join(errs...))
	}
	return c, nil
}

// WithCORSCredentials lets the pages of the origins named in
// [WithAllowedOrigins] read SSE streams with credentials (cookies, HTTP
// authentication: EventSource's withCredentials, fetch's credentials
// "include"), by answering Access-Control-Allow-Credentials: true. Origins
// admitted only by "*" never get it. Defaults to false: cross-origin pages
// on the list read streams without credentials.
func WithCORSCredentials(allow bool) Option {
	return optionFunc(func(c *config) { c.corsCredentials = allow })
}

// defaultNativeGRPCNetworks are loopback only: native gRPC forwards every
// header, credentials included, so it is opened to other networks only by
// an operator who names them (docs/deploy.md, "Native gRPC").
var defaultNativeGRPCNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// DefaultNativeGRPCNetworks returns the networks whose callers may use
// native gRPC unless [WithNativeGRPCNetworks] replaces them (loopback
// only), in a new slice.
func DefaultNativeGRPCNetworks() []netip.Prefix {
	return append([]netip.Prefix(nil), defaultNativeGRPCNetworks...)
}

// WithNativeGRPCNetworks sets the networks whose callers may use native
// gRPC pass-through (POST application/grpc). Those calls carry every
// metadata key to the backend, with no allow-list and no per-client limit,
// as a direct connection would, so they are for internal services; callers
// elsewhere get PERMISSION_DENIED. The caller is the peer, or the address a
// trusted proxy forwarded for ([WithTrustedProxies]); a forwarded-for
// chain that does not parse makes the caller unknown, which is refused.
// Requests from browsers (with an Origin or a Sec-Fetch-* header) are
// refused whatever their address. Defaults to loopback only (127.0.0.0/8,
// ::1/128); no prefix at all turns native gRPC off for everyone.
func WithNativeGRPCNetworks(prefixes ...netip.Prefix) Option {
	return optionFunc(func(c *config) {
		c.nativeGRPCNetworks = prefixes
		c.nativeGRPCNetworksSet = true
	})
}
