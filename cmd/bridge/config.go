package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// Config is everything the bridge binary can be told, on its command line
// or in its YAML config file. Each setting's YAML key is its flag's name
// with dashes as underscores, except the repeatable flags, whose keys are
// plural (-backend: backends, -allow-origin: allow_origins, ...).
type Config struct {
	Addr              string                  `yaml:"addr"`
	AdminAddr         string                  `yaml:"admin_addr"`
	GRPCAddr          string                  `yaml:"grpc_addr"`
	Demo              bool                    `yaml:"demo"`
	OpenAPI           bool                    `yaml:"openapi"`
	Backends          []BackendConfig         `yaml:"backends"`
	Descriptors       string                  `yaml:"descriptors"`
	Reflection        bool                    `yaml:"reflection"`
	Expose            []string                `yaml:"expose"`
	AllowOrigins      []string                `yaml:"allow_origins"`
	CORSCredentials   bool                    `yaml:"cors_credentials"`
	RequestHeaders    []string                `yaml:"request_headers"`
	ResponseMetadata  []string                `yaml:"response_metadata"`
	Methods           map[string]MethodConfig `yaml:"methods"`
	TLSCert           string                  `yaml:"tls_cert"`
	TLSKey            string                  `yaml:"tls_key"`
	H2C               bool                    `yaml:"h2c"`
	HeartbeatInterval time.Duration           `yaml:"heartbeat"`
	RetryInterval     time.Duration           `yaml:"retry"`
	WriteTimeout      time.Duration           `yaml:"write_timeout"`
	PingInterval      time.Duration           `yaml:"ping_interval"`
	PongTimeout       time.Duration           `yaml:"pong_timeout"`
	ReadMaxBytes      int64                   `yaml:"read_max_bytes"`
	ResponseMaxBytes  int64                   `yaml:"response_max_bytes"`
	// BackendKeepalive is how long a backend connection may be quiet
	// before the bridge pings it; 0 sends no pings. BackendKeepaliveTimeout
	// is how long the ping may go unanswered before the connection counts
	// as dead.
	BackendKeepalive        time.Duration `yaml:"backend_keepalive"`
	BackendKeepaliveTimeout time.Duration `yaml:"backend_keepalive_timeout"`
	DrainTimeout            time.Duration `yaml:"drain_timeout"`
	ShutdownDelay           time.Duration `yaml:"shutdown_delay"`
	SchemaRefresh           time.Duration `yaml:"schema_refresh"`
	MaxStreams              int64         `yaml:"max_streams"`
	MaxClientStreams        int64         `yaml:"max_streams_per_client"`
	TrustedProxies          []string      `yaml:"trusted_proxies"`
	NativeGRPCNets          []string      `yaml:"native_grpc_networks"`
	MaxStreamDuration       time.Duration `yaml:"max_stream_duration"`
	SharedReplay            int           `yaml:"shared_replay"`
	MetricsNamespace        string        `yaml:"metrics_namespace"`
	OTLPEndpoint            string        `yaml:"otlp_endpoint"`
	OTLPInsecure            bool          `yaml:"otlp_insecure"`
	ServiceName             string        `yaml:"service_name"`
	LogFormat               string        `yaml:"log_format"`
	LogLevel                string        `yaml:"log_level"`
	// Sessions (sessions.go).
	SessionKeyFile    string        `yaml:"session_key_file"`
	AdvertiseAddr     string        `yaml:"advertise_addr"`
	SessionPeers      []string      `yaml:"session_peers"`
	SessionGrace      time.Duration `yaml:"session_grace"`
	SessionMaxCalls   int           `yaml:"session_max_calls"`
	SessionsPerClient int           `yaml:"sessions_per_client"`
}

// BackendConfig is one upstream gRPC target and the services it serves.
type BackendConfig struct {
	// Name identifies the backend in logs; defaults to the target.
	Name string `yaml:"name"`
	// Target is a gRPC target: host:port, dns:///name:port, xds:///name.
	Target string `yaml:"target"`
	// Services are patterns of the services this backend serves (pkg.*,
	// pkg.Service). Empty: every exposed service no other backend claims.
	Services []string `yaml:"services"`
	// Reflection says whether this backend's schema is loaded with gRPC
	// server reflection (v1, falling back to v1alpha), refreshed every
	// schema_refresh and on SIGHUP. Unset (nil): as the top-level
	// reflection says, which is yes unless descriptors is given.
	Reflection *bool `yaml:"reflection"`
	// TLS connects to the backend over TLS; without it, cleartext HTTP/2.
	TLS *BackendTLS `yaml:"tls"`
}

// BackendTLS is the TLS (or, with a client certificate, mTLS) setup of the
// connection to a backend.
type BackendTLS struct {
	// CA is a PEM file of the CAs that sign the backend's certificate;
	// default: the system's roots.
	CA string `yaml:"ca"`
	// Cert and Key are a PEM client certificate and key, for mTLS.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the backend's certificate.
	ServerName string `yaml:"server_name"`
}

// MethodConfig overrides the SSE options that a method's proto declares.
type MethodConfig struct {
	CursorField string `yaml:"cursor_field"`
	ResumeField string `yaml:"resume_field"`
	// Shared lets SSE streams with the same request and forwarded metadata
	// share one upstream call (bridge.SSEOptions.Shared). Server-streaming
	// methods only; false: every stream has its own call.
	Shared bool `yaml:"shared"`
	// Compression replaces the compression options of the method's proto
	// (bridge.CompressionOptions); nil keeps them. An entry that sets
	// only compression keeps the proto's SSE options too.
	Compression *CompressionConfig `yaml:"compression"`
}

// CompressionConfig turns on compression of a method's responses per
// transport (bridge.CompressionOptions).
type CompressionConfig struct {
	SSE       bool `yaml:"sse"`
	WebSocket bool `yaml:"websocket"`
	JSON      bool `yaml:"json"`
}

// hasSSE reports whether the entry says anything of the SSE options: an
// entry with only compression leaves them to the proto.
func (mc MethodConfig) hasSSE() bool {
	return mc.Compression == nil || mc.CursorField != "" || mc.ResumeField != "" || mc.Shared
}

// defaultConfig holds the defaults of every setting.
func defaultConfig() Config {
	return Config{
		Addr:                    ":8080",
		Reflection:              true,
		H2C:                     true,
		HeartbeatInterval:       15 * time.Second,
		RetryInterval:           2 * time.Second,
		WriteTimeout:            10 * time.Second,
		PingInterval:            30 * time.Second,
		PongTimeout:             10 * time.Second,
		ReadMaxBytes:            4 << 20,
		ResponseMaxBytes:        4 << 20,
		BackendKeepaliveTimeout: 20 * time.Second,
		DrainTimeout:            10 * time.Second,
		SchemaRefresh:           5 * time.Minute,
		MetricsNamespace:        "grpcbridge",
		ServiceName:             "grpcbridge",
		LogFormat:               "text",
		LogLevel:                "info",
	}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// backendFlag is the repeatable -backend flag: target or pattern=target.
type backendFlag []BackendConfig

func (b *backendFlag) String() string { return fmt.Sprint(*b) }

func (b *backendFlag) Set(v string) error {
	pattern, target, named := strings.Cut(v, "=")
	if !named {
		*b = append(*b, BackendConfig{Target: v})
		return nil
	}
	if pattern == "" || target == "" {
		return fmt.Errorf("%q: want target or pattern=target", v)
	}
	*b = append(*b, BackendConfig{Target: target, Services: []string{pattern}})
	return nil
}

// pluralKeys maps the repeatable flags to their config-file keys.
var pluralKeys = map[string]string{
	"backend":                "backends",
	"allow-origin":           "allow_origins",
	"request-header":         "request_headers",
	"trusted-proxy":          "trusted_proxies",
	"native-grpc-network":    "native_grpc_networks",
	"max-streams-per-client": "max_streams_per_client",
	"response-metadata":      "response_metadata",
}

// parseFlags reads the command line and, with -config, the config file
// (flags given on the command line override the file), and checks the
// result.
func parseFlags(args []string) (*Config, error) {
	c := defaultConfig()
	var configFile string
	var showVersion bool
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.BoolVar(&showVersion, "version", false, "print the version (module version, VCS revision, Go version) and exit")
	fs.StringVar(&configFile, "config", "", "YAML config `file`; flags given on the command line override it")
	fs.StringVar(&c.Addr, "addr", c.Addr, "public listener `host:port` (no host: every interface): browsers, /healthz and /readyz, and native gRPC and /metrics unless -grpc-addr and -admin-addr take them")
	fs.StringVar(&c.AdminAddr, "admin-addr", "", "serve /metrics and a detailed /readyz on this operational listener `host:port` only; default: /metrics on -addr")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "", "serve native gRPC on this cleartext HTTP/2 (h2c) listener `host:port` only, and refuse it on -addr; default: native gRPC on -addr")
	fs.BoolVar(&c.Demo, "demo", false, "run the demo services in-process, expose them and serve the demo page at /")
	fs.BoolVar(&c.OpenAPI, "openapi", false, "serve the OpenAPI document (/openapi.json: unary JSON and SSE) and the AsyncAPI document (/asyncapi.json: WebSockets) of the exposed methods on -addr")
	fs.Var((*backendFlag)(&c.Backends), "backend", "gRPC `target` (host:port, dns:///name:port, xds:///name) for every exposed service, or pattern=target for the services matching pattern (repeatable)")
	fs.StringVar(&c.Descriptors, "descriptors", "", "binary FileDescriptorSet `file` (buf build -o) holding the exposed services, polled for changes and re-read on SIGHUP; \"builtin\": the descriptors compiled into the bridge; default: each backend's server reflection")
	fs.BoolVar(&c.Reflection, "reflection", c.Reflection, "without -descriptors, load the schema from each backend's server reflection (a backend's reflection: false in the config file opts it out); -reflection=false: never, and start-up needs -descriptors")
	fs.Var((*listFlag)(&c.Expose), "expose", "expose the methods matching `pattern`: pkg.*, pkg.Service or pkg.Service/Method (repeatable; nothing is reachable without it, except with -demo)")
	fs.Var((*listFlag)(&c.AllowOrigins), "allow-origin", "let pages from this `origin` (https://app.example.com, or * without credentials) use the bridge: SSE, unary JSON, WebSockets and CORS (repeatable; default: same origin only)")
	fs.BoolVar(&c.CORSCredentials, "cors-credentials", false, "answer Access-Control-Allow-Credentials: true to the -allow-origin origins (never to those only * admits), so their pages may read SSE streams with cookies or HTTP authentication")
	fs.Var((*listFlag)(&c.RequestHeaders), "request-header", "forward this request `header` (or prefix*) to backends as metadata (repeatable). Replaces the whole default list, so repeat the ones to keep: "+strings.Join(bridge.DefaultRequestHeaders(), ", "))
	fs.Var((*listFlag)(&c.ResponseMetadata), "response-metadata", "pass this backend response header or trailer `key` (or prefix*) to browsers: SSE headers and end events, WebSocket headers and trailers (repeatable; default: none)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate `file`: serve HTTPS on -addr, HTTP/2 (ALPN h2) and HTTP/1.1; goes with -tls-key")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	fs.BoolVar(&c.H2C, "h2c", c.H2C, "serve cleartext HTTP/2 with prior knowledge (native gRPC, curl --http2-prior-knowledge, proxies) beside HTTP/1.1 on -addr; -h2c=false: HTTP/1.1 only, and HTTP/2 clients are told so (gRPC UNAVAILABLE, else 505); no effect with TLS")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat", c.HeartbeatInterval, "interval of the SSE heartbeat comment that keeps idle proxies from cutting a stream")
	fs.DurationVar(&c.RetryInterval, "retry", c.RetryInterval, "reconnection delay sent to browsers in SSE retry: fields")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "bound of each write to a browser (SSE, WebSocket): a client that takes no data this long is dropped and its call cancelled")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "how often the bridge pings a WebSocket peer")
	fs.DurationVar(&c.PongTimeout, "pong-timeout", c.PongTimeout, "time a WebSocket peer has to answer a ping before it is dropped")
	fs.Int64Var(&c.ReadMaxBytes, "read-max-bytes", c.ReadMaxBytes, "largest request message from a browser (JSON body, WebSocket message; larger closes with 1009) and native gRPC message either way, in bytes")
	fs.DurationVar(&c.BackendKeepalive, "backend-keepalive", 0, "ping a backend connection that has been quiet this long, and drop it (ending its streams UNAVAILABLE, so browsers resume) when the ping goes unanswered; the backend must allow pings this often (grpc-go: keepalive.EnforcementPolicy MinTime); 0: no pings; at least 10s")
	fs.DurationVar(&c.BackendKeepaliveTimeout, "backend-keepalive-timeout", c.BackendKeepaliveTimeout, "how long a backend keepalive ping may go unanswered")
	fs.Int64Var(&c.ResponseMaxBytes, "response-max-bytes", c.ResponseMaxBytes, "largest response message the bridge takes from a backend, in bytes; a larger one ends the call with RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "time to drain streams after SIGTERM and the shutdown delay")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "after SIGTERM, keep serving new requests this long with /readyz at 503, so load balancers stop sending them, before draining")
	fs.Int64Var(&c.MaxStreams, "max-streams", 0, "most SSE and WebSocket streams open at once on this replica; more are refused as transient (SSE retry, WebSocket 503); 0: no limit")
	fs.Int64Var(&c.MaxClientStreams, "max-streams-per-client", 0, "most streams open at once from one client IP (see -trusted-proxy); more get 429 RESOURCE_EXHAUSTED; 0: no limit")
	fs.Var((*listFlag)(&c.NativeGRPCNets), "native-grpc-network", "let callers in this `CIDR` use native gRPC pass-through, which forwards every header (repeatable; default: loopback only)")
	fs.Var((*listFlag)(&c.TrustedProxies), "trusted-proxy", "trust X-Forwarded-For (the client IP, for -native-grpc-network and per-client limits) and X-Forwarded-Proto (the bridge's own origin) from proxies in this `CIDR` (repeatable; default: the client is the TCP peer)")
	fs.DurationVar(&c.MaxStreamDuration, "max-stream-duration", 0, "end streams after this long, less up to a tenth at random (SSE resumes with Last-Event-ID, WebSockets end UNAVAILABLE); 0: no limit")
	fs.IntVar(&c.SharedReplay, "shared-replay", 0, "events each shared call (methods with shared: true) keeps for streams that resume with Last-Event-ID; 0: 128")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", "", "export OpenTelemetry spans over OTLP/gRPC to this `host:port`; default: no tracing")
	fs.BoolVar(&c.OTLPInsecure, "otlp-insecure", false, "connect to the OTLP endpoint without TLS")
	fs.StringVar(&c.ServiceName, "service-name", c.ServiceName, "service.name of the exported spans")
	fs.StringVar(&c.MetricsNamespace, "metrics-namespace", c.MetricsNamespace, "prefix of the Prometheus metric names")
	fs.DurationVar(&c.SchemaRefresh, "schema-refresh", c.SchemaRefresh, "how often to reload the schema from the backends' server reflection, when it comes from there")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.SessionKeyFile, "session-key-file", "", "serve sessions (/_bridge/session: many calls on one WebSocket, or SSE plus POST where WebSockets are blocked), with the token keys in this `file`: one per line, at least 32 bytes, the first signs (two while rotating); replicas share it. -demo without it makes up a key")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "this replica's internal `ip:port`, named in its session tokens, where the other replicas forward requests for its sessions; default: none (a single replica, or sticky load balancing)")
	fs.Var((*listFlag)(&c.SessionPeers), "session-peers", "forward session requests only to owners in this `CIDR or DNS name` (a headless Service, resolved every 10 s), and take forwarded ones only from it (repeatable; default: forward nothing)")
	fs.DurationVar(&c.SessionGrace, "session-grace", 0, "how long a session waits for its downstream to come back after a cut before its calls end; 0: 30s")
	fs.IntVar(&c.SessionMaxCalls, "session-max-calls", 0, "most calls open at once in one session; 0: 100")
	fs.IntVar(&c.SessionsPerClient, "sessions-per-client", 0, "most sessions open at once from one client IP; 0: 8")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if showVersion {
		return nil, errShowVersion
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if configFile != "" {
		file := defaultConfig()
		if err := loadConfigFile(configFile, &file); err != nil {
			return nil, err
		}
		// Flags given on the command line win over the file.
		fs.Visit(func(f *flag.Flag) {
			if key := configKey(f.Name); key != "" {
				copyField(&file, &c, key)
			}
		})
		c = file
	}
	return &c, c.validate()
}

// configKey returns the config-file key of a flag, or "" for -config.
func configKey(flagName string) string {
	if flagName == "config" {
		return ""
	}
	if k, ok := pluralKeys[flagName]; ok {
		return k
	}
	return strings.ReplaceAll(flagName, "-", "_")
}

// copyField copies the setting with the YAML key from src to dst.
func copyField(dst, src *Config, key string) {
	dv, sv := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	for i := range dv.NumField() {
		if name, _, _ := strings.Cut(dv.Type().Field(i).Tag.Get("yaml"), ","); name == key {
			dv.Field(i).Set(sv.Field(i))
			return
		}
	}
	panic("bridge: flag without a config key: " + key) // a programming error, caught by the tests
}

func (c *Config) validate() error {
	var errs []error
	if !c.Demo && len(c.Expose) == 0 {
		errs = append(errs, errors.New("nothing exposed: give -expose (or -demo)"))
	}
	if !c.Demo && len(c.Backends) == 0 {
		errs = append(errs, errors.New("no backend: give -backend (or -demo)"))
	}
	if c.Demo && len(c.Backends) > 0 {
		errs = append(errs, errors.New("-demo runs its own backend: drop -backend"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key go together"))
	}
	defaults := 0
	for i, b := range c.Backends {
		if b.Target == "" {
			errs = append(errs, fmt.Errorf("backends[%d]: no target", i))
		}
		if t := b.TLS; t != nil && (t.Cert == "") != (t.Key == "") {
			errs = append(errs, fmt.Errorf("backends[%d].tls: cert and key go together", i))
		}
		if len(b.Services) == 0 {
			defaults++
		}
	}
	if defaults > 1 {
		errs = append(errs, errors.New("more than one default backend: give the others the services they serve (pattern=target)"))
	}
	errs = append(errs, c.validateSchema()...)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat", c.HeartbeatInterval}, {"retry", c.RetryInterval}, {"write-timeout", c.WriteTimeout},
		{"ping-interval", c.PingInterval}, {"pong-timeout", c.PongTimeout}, {"drain-timeout", c.DrainTimeout},
		{"schema-refresh", c.SchemaRefresh},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive, got %v", d.name, d.v))
		}
	}
	if c.ShutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("-shutdown-delay cannot be negative, got %v", c.ShutdownDelay))
	}
	if c.SessionGrace < 0 || c.SessionMaxCalls < 0 || c.SessionsPerClient < 0 {
		errs = append(errs, errors.New("session limits cannot be negative"))
	}
	errs = append(errs, c.validateListeners()...)
	if c.MaxStreams < 0 || c.MaxClientStreams < 0 || c.MaxStreamDuration < 0 {
		errs = append(errs, errors.New("stream limits cannot be negative"))
	}
	for _, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			errs = append(errs, fmt.Errorf("-trusted-proxy %q: want a CIDR such as 10.0.0.0/8: %v", p, err))
		}
	}
	for _, p := range c.NativeGRPCNets {
		if _, err := netip.ParsePrefix(p); err != nil {
			errs = append(errs, fmt.Errorf("-native-grpc-network %q: want a CIDR such as 10.0.0.0/8: %v", p, err))
		}
	}
	if c.ReadMaxBytes <= 0 || c.ReadMaxBytes > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("-read-max-bytes must be between 1 and %d, got %d", math.MaxInt32, c.ReadMaxBytes))
	}
	if c.BackendKeepalive != 0 && c.BackendKeepalive < minBackendKeepalive {
		errs = append(errs, fmt.Errorf("-backend-keepalive must be 0 (off) or at least %v (gRPC's minimum), got %v", minBackendKeepalive, c.BackendKeepalive))
	}
	if c.BackendKeepaliveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("-backend-keepalive-timeout must be positive, got %v", c.BackendKeepaliveTimeout))
	}
	if c.ResponseMaxBytes <= 0 || c.ResponseMaxBytes > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("-response-max-bytes must be between 1 and %d, got %d", math.MaxInt32, c.ResponseMaxBytes))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("-log-format %q: want text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// validateListeners checks the listen addresses: each a host:port, and no
// two the same (port 0, an ephemeral port, excepted).
func (c *Config) validateListeners() []error {
	var errs []error
	seen := make(map[string]string) // address: flag
	for _, l := range []struct{ flag, addr string }{{"-addr", c.Addr}, {"-admin-addr", c.AdminAddr}, {"-grpc-addr", c.GRPCAddr}} {
		if l.addr == "" && l.flag != "-addr" {
			continue
		}
		_, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port, such as 127.0.0.1:9090 or :9090", l.flag, l.addr))
			continue
		}
		if other, ok := seen[l.addr]; ok && port != "0" {
			errs = append(errs, fmt.Errorf("%s and %s are both %s: give each listener its own port", other, l.flag, l.addr))
		}
		seen[l.addr] = l.flag
	}
	return errs
}
