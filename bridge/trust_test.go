package bridge

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestNormalizeOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"https://app.example", "https://app.example"},
		{"HTTPS://App.Example", "https://app.example"},
		{"https://app.example.", "https://app.example"},
		{"https://app.example:443", "https://app.example"},
		{"http://app.example:80", "http://app.example"},
		{"https://app.example:80", "https://app.example:80"},
		{"http://app.example:443", "http://app.example:443"},
		{"https://app.example:0443", "https://app.example"},
		{"https://app.example/", "https://app.example"},
		{"http://[::1]:8080", "http://[::1]:8080"},
		{"http://[::1]", "http://[::1]"},
		{"http://[::1]:80", "http://[::1]"},
		{"http://[2001:DB8::1]:8080", "http://[2001:db8::1]:8080"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"chrome-extension://abcdef", "chrome-extension://abcdef"},
		{"null", ""},
		{"", ""},
		{"app.example", ""},
		{"https://", ""},
		{"https://app.example/path", ""},
		{"https://app.example?q", ""},
		{"https://app.example?", ""},
		{"https://app.example#f", ""},
		{"https://user@app.example", ""},
		{"https://app.example:99999", ""},
		{"https://app.example:0", ""},
		{"https://app.example:x", ""},
		{"https://app.example:", ""},
		{"%%%", ""},
		{"https://[::1", ""},
		{"https://app.example..", ""}, // found by FuzzNormalizeOrigin: not a fixed point
		{"https://app..example", ""},
		{"https://.app.example", ""},
	}
	for _, tt := range tests {
		got, err := normalizeOrigin(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("normalizeOrigin(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("normalizeOrigin(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestNewOriginListRefusesWhatIsNotAnOrigin(t *testing.T) {
	t.Parallel()
	for _, e := range []string{"null", "app.example", "https://app.example/path", "https://app.example:0"} {
		if _, err := newOriginList([]string{"https://ok.example", e}); err == nil {
			t.Errorf("newOriginList accepts %q", e)
		}
	}
	l, err := newOriginList([]string{" https://App.Example:443/ ", "*"})
	if err != nil || !l.named["https://app.example"] || !l.wildcard || l.empty() {
		t.Errorf("newOriginList = %+v, %v", l, err)
	}
}

// trustHandler is a Handler with just what the origin rules read.
func trustHandler(t *testing.T, allowed []string, trusted ...string) *Handler {
	t.Helper()
	l, err := newOriginList(allowed)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config{allowedOrigins: allowed}
	for _, p := range trusted {
		cfg.trustedProxies = append(cfg.trustedProxies, netip.MustParsePrefix(p))
	}
	return &Handler{cfg: cfg, origins: l, log: slog.New(slog.DiscardHandler)}
}

func TestCheckOrigin(t *testing.T) {
	t.Parallel()
	const own = "bridge.example:8080"
	tests := []struct {
		name    string
		allowed []string
		host    string
		tls     bool
		peer    string
		header  http.Header
		want    string // "refuse", "own", "named" or "wildcard"
	}{
		{"no headers", nil, own, false, "", nil, "own"},
		{"same origin", nil, own, false, "", http.Header{"Origin": {"http://bridge.example:8080"}}, "own"},
		{"same origin, other case and a dot", nil, own, false, "", http.Header{"Origin": {"http://Bridge.EXAMPLE.:8080"}}, "own"},
		{"host with a trailing dot", nil, "bridge.example.:8080", false, "", http.Header{"Origin": {"http://bridge.example:8080"}}, "own"},
		{"default port in the origin", nil, "bridge.example", false, "", http.Header{"Origin": {"http://bridge.example:80"}}, "own"},
		{"default port in the host", nil, "bridge.example:443", true, "", http.Header{"Origin": {"https://bridge.example"}}, "own"},
		{"other scheme", nil, "bridge.example", true, "", http.Header{"Origin": {"http://bridge.example"}}, "refuse"},
		{"https origin, plain request", nil, "bridge.example", false, "", http.Header{"Origin": {"https://bridge.example"}}, "refuse"},
		{"https behind a trusted proxy", nil, "bridge.example", false, "10.0.0.1:5555",
			http.Header{"Origin": {"https://bridge.example"}, "X-Forwarded-Proto": {"https"}}, "own"},
		{"X-Forwarded-Proto from anyone else", nil, "bridge.example", false, "203.0.113.9:5555",
			http.Header{"Origin": {"https://bridge.example"}, "X-Forwarded-Proto": {"https"}}, "refuse"},
		{"other port", nil, own, false, "", http.Header{"Origin": {"http://bridge.example:9090"}}, "refuse"},
		{"other host", nil, own, false, "", http.Header{"Origin": {"https://evil.example"}}, "refuse"},
		{"sibling subdomain", nil, "api.example.com", true, "", http.Header{"Origin": {"https://evil.example.com"}}, "refuse"},
		{"null", nil, own, false, "", http.Header{"Origin": {"null"}}, "refuse"},
		{"null under a wildcard", []string{"*"}, own, false, "", http.Header{"Origin": {"null"}}, "refuse"},
		{"garbage", []string{"*"}, own, false, "", http.Header{"Origin": {"%%%"}}, "refuse"},
		{"IPv6 literal, same", nil, "[::1]:8080", false, "", http.Header{"Origin": {"http://[::1]:8080"}}, "own"},
		{"IPv6 literal, other port", nil, "[::1]:8080", false, "", http.Header{"Origin": {"http://[::1]:8081"}}, "refuse"},
		{"named", []string{"https://app.example"}, own, false, "", http.Header{"Origin": {"https://app.example"}}, "named"},
		{"named, default port spelled", []string{"https://app.example"}, own, false, "", http.Header{"Origin": {"https://app.example:443"}}, "named"},
		{"named, other scheme", []string{"https://app.example"}, own, false, "", http.Header{"Origin": {"http://app.example"}}, "refuse"},
		{"list keeps the own origin", []string{"https://app.example"}, own, false, "", http.Header{"Origin": {"http://bridge.example:8080"}}, "own"},
		{"wildcard", []string{"*"}, own, false, "", http.Header{"Origin": {"https://evil.example"}}, "wildcard"},
		{"wildcard and named", []string{"*", "https://app.example"}, own, false, "", http.Header{"Origin": {"https://app.example"}}, "named"},
		{"cross-site without Origin", nil, own, false, "", http.Header{"Sec-Fetch-Site": {"cross-site"}}, "refuse"},
		{"same-site without Origin", nil, own, false, "", http.Header{"Sec-Fetch-Site": {"same-site"}}, "refuse"},
		{"same-origin without Origin", nil, own, false, "", http.Header{"Sec-Fetch-Site": {"same-origin"}}, "own"},
		{"navigation without Origin", nil, own, false, "", http.Header{"Sec-Fetch-Site": {"none"}}, "own"},
		{"cross-site without Origin under a wildcard", []string{"*"}, own, false, "", http.Header{"Sec-Fetch-Site": {"cross-site"}}, "refuse"},
		{"cross-site with an allowed Origin", []string{"https://app.example"}, own, false, "",
			http.Header{"Origin": {"https://app.example"}, "Sec-Fetch-Site": {"cross-site"}}, "named"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := trustHandler(t, tt.allowed, "10.0.0.0/8")
			r := httptest.NewRequest(http.MethodGet, "/demo.v1.TickerService/Watch", nil)
			r.Host = tt.host
			r.Header = tt.header
			if r.Header == nil {
				r.Header = http.Header{}
			}
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			} else {
				r.TLS = nil
			}
			if tt.peer != "" {
				r.RemoteAddr = tt.peer
			}
			c, st := h.checkOrigin(r)
			got := "own"
			switch {
			case st != nil:
				got = "refuse"
				if st.Code() != codes.PermissionDenied || st.Message() == "" {
					t.Errorf("refusal %v, want PERMISSION_DENIED with a reason", st)
				}
			case c.named:
				got = "named"
			case c.wildcard:
				got = "wildcard"
			}
			if got != tt.want {
				t.Errorf("checkOrigin = %s (%+v, %v), want %s", got, c, st, tt.want)
			}
		})
	}
}

func TestCheckOriginNamesTheOrigin(t *testing.T) {
	t.Parallel()
	h := trustHandler(t, nil)
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.Header.Set("Origin", "https://Evil.Example:443")
	_, st := h.checkOrigin(r)
	if st == nil || st.Message() != "origin https://evil.example is not allowed" {
		t.Errorf("refusal %v, want the message naming the origin", st)
	}
}

func TestBrowserMetadataDropsAmbientCredentialsForWildcards(t *testing.T) {
	t.Parallel()
	h := trustHandler(t, []string{"*", "https://app.example"})
	var err error
	if h.requestMD, err = newHeaderMatcher(append([]string{"cookie"}, defaultRequestHeaders...)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		origin string
		want   bool // cookie and authorization forwarded
	}{
		{"https://evil.example", false},
		{"https://app.example", true},
		{"", true},
	} {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Header.Set("Cookie", "session=1")
		r.Header.Set("Authorization", "Bearer t")
		r.Header.Set("X-Request-Id", "r1")
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		c, st := h.checkOrigin(r)
		if st != nil {
			t.Fatalf("%s: refused: %v", tt.origin, st)
		}
		md, _, err := h.browserMetadata(r, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"cookie", "authorization"} {
			if got := len(md.Get(k)) > 0; got != tt.want {
				t.Errorf("origin %q: %s forwarded = %v, want %v", tt.origin, k, got, tt.want)
			}
		}
		if len(md.Get("x-request-id")) != 1 {
			t.Errorf("origin %q: x-request-id dropped", tt.origin)
		}
	}
}

func TestFromBrowser(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		header http.Header
		want   bool
	}{
		{http.Header{}, false},
		{http.Header{"Te": {"trailers"}, "Authorization": {"x"}}, false},
		{http.Header{"Origin": {"https://app.example"}}, true},
		{http.Header{"Sec-Fetch-Mode": {"cors"}}, true},
		{http.Header{"Sec-Fetch-Site": {"same-origin"}}, true},
		{http.Header{"sec-fetch-dest": {"empty"}}, true}, // not canonical, as a raw HTTP/2 map may hold it
	} {
		r := &http.Request{Header: tt.header}
		if got := fromBrowser(r) != ""; got != tt.want {
			t.Errorf("fromBrowser(%v) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestClientIPFailsClosed(t *testing.T) {
	t.Parallel()
	h := trustHandler(t, nil, "10.0.0.0/8", "fd00::/8")
	many := strings.TrimSuffix(strings.Repeat("10.0.0.9, ", 1000), ", ")
	tests := []struct {
		name  string
		peer  string
		lines []string // X-Forwarded-For lines; nil: no header
		want  string
	}{
		{"untrusted peer", "203.0.113.1:1", []string{"10.0.0.5"}, "203.0.113.1"},
		{"untrusted IPv4-mapped peer", "[::ffff:203.0.113.1]:1", nil, "203.0.113.1"},
		{"trusted peer, no header", "10.0.0.1:1", nil, "10.0.0.1"},
		{"one hop", "10.0.0.1:1", []string{"203.0.113.7"}, "203.0.113.7"},
		{"right-most untrusted", "10.0.0.1:1", []string{"198.51.100.1, 203.0.113.7, 10.0.0.2"}, "203.0.113.7"},
		{"several lines", "10.0.0.1:1", []string{"198.51.100.1", "203.0.113.7, 10.0.0.2"}, "203.0.113.7"},
		{"garbage before the untrusted hop is not read", "10.0.0.1:1", []string{"garbage, 203.0.113.7"}, "203.0.113.7"},
		{"all trusted", "10.0.0.1:1", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"IPv6 hop", "10.0.0.1:1", []string{"2001:db8::1"}, "2001:db8::1"},
		{"port", "10.0.0.1:1", []string{"203.0.113.7:4711"}, unknownClient},
		{"garbage", "10.0.0.1:1", []string{"garbage"}, unknownClient},
		{"bracketed IPv6 with a port", "10.0.0.1:1", []string{"[2001:db8::1]:443"}, unknownClient},
		{"bracketed IPv6", "10.0.0.1:1", []string{"[2001:db8::1]"}, unknownClient},
		{"zone", "10.0.0.1:1", []string{"fe80::1%eth0"}, unknownClient},
		{"empty header", "10.0.0.1:1", []string{""}, unknownClient},
		{"empty entry", "10.0.0.1:1", []string{"203.0.113.7, "}, unknownClient},
		{"empty entry between trusted", "10.0.0.1:1", []string{"203.0.113.7,,10.0.0.2"}, unknownClient},
		{"empty second line", "10.0.0.1:1", []string{"203.0.113.7", ""}, unknownClient},
		{"inner space", "10.0.0.1:1", []string{"203.0.113 .7"}, unknownClient},
		{"padding spaces are fine", "10.0.0.1:1", []string{"  203.0.113.7  "}, "203.0.113.7"},
		{"unknown token", "10.0.0.1:1", []string{"unknown"}, unknownClient},
		{"1,000 trusted entries", "10.0.0.1:1", []string{many}, unknownClient},
		{"peer without a port", "10.0.0.1", nil, unknownClient},
		{"peer not an IP", "pipe:1", nil, unknownClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			if tt.lines != nil {
				r.Header["X-Forwarded-For"] = tt.lines
			}
			if got := h.clientIP(r); got != tt.want {
				t.Errorf("clientIP = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPublicStatusHidesClientMadeStatuses(t *testing.T) {
	t.Parallel()
	hidden := []*status.Status{
		status.New(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:9300: connect: connection refused"`),
		status.New(codes.Unavailable, `last connection error: connection error: desc = "transport: Error while dialing: dial tcp 10.2.3.4:443: i/o timeout"`),
		status.New(codes.Unavailable, `name resolver error: produced zero addresses`),
		status.New(codes.Unavailable, `xds: error received from xDS stream: node ID "sidecar~10.1.1.1~pod.ns~ns.svc.cluster.local"`),
		status.New(codes.Unavailable, `error reading from server: read tcp 127.0.0.1:5555->127.0.0.1:9300: read: connection reset by peer`),
		status.New(codes.Internal, `stream terminated by RST_STREAM with error code: PROTOCOL_ERROR`),
		status.New(codes.Unknown, `unexpected HTTP status code received from server: 502 (Bad Gateway); transport: received unexpected content-type "text/html"`),
		status.New(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`),
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx := metadata.NewOutgoingContext(context.Background(), metadata.Pairs("x-request-id", "req-42"))
	for _, st := range hidden {
		logs.Reset()
		got := publicStatus(ctx, log, "demo.v1.TickerService/Watch", st)
		if got.Code() != st.Code() {
			t.Errorf("%q: code %v, want %v", st.Message(), got.Code(), st.Code())
		}
		for _, leak := range []string{"127.0.0.1", "10.", "9300", "dial", "xds", "x509", "transport"} {
			if strings.Contains(got.Message(), leak) {
				t.Errorf("%q: public message %q contains %q", st.Message(), got.Message(), leak)
			}
		}
		var id string
		for _, d := range got.Details() {
			if ri, ok := d.(*errdetails.RequestInfo); ok {
				id = ri.GetRequestId()
			}
		}
		if id != "req-42" {
			t.Errorf("%q: request id detail %q, want req-42", st.Message(), id)
		}
		if !strings.Contains(logs.String(), "req-42") || !strings.Contains(logs.String(), "RST_STREAM") && !strings.Contains(logs.String(), st.Code().String()) {
			t.Errorf("%q: log %q lacks the id or the detail", st.Message(), logs.String())
		}
	}
	if got := publicStatus(ctx, log, "m", hidden[0]); got.Message() != "backend unavailable" {
		t.Errorf("UNAVAILABLE says %q, want backend unavailable", got.Message())
	}
	// The backend's own statuses pass unchanged, whatever they say.
	for _, st := range []*status.Status{
		status.New(codes.Unavailable, "the ledger is in maintenance"),
		status.New(codes.NotFound, "transport: no such route"),
		status.New(codes.PermissionDenied, "dial tcp refused by policy"),
		status.New(codes.InvalidArgument, "symbol is required"),
	} {
		if got := publicStatus(ctx, log, "m", st); got != st {
			t.Errorf("%v: changed to %v", st, got)
		}
	}
}

func TestRequestIDWithoutHeaderIsRandom(t *testing.T) {
	t.Parallel()
	a, b := requestID(context.Background()), requestID(context.Background())
	if a == b || len(a) != 24 {
		t.Errorf("requestID = %q, %q; want two different 24-hex ids", a, b)
	}
	long := metadata.NewOutgoingContext(context.Background(), metadata.Pairs("x-request-id", strings.Repeat("x", 200)))
	if id := requestID(long); len(id) != 24 {
		t.Errorf("requestID of an over-long header = %q, want a fresh id", id)
	}
}

// FuzzNormalizeOrigin checks that normalizing never panics, that the normal
// form is a fixed point, and that what it accepts has no path, query,
// fragment or user info.
func FuzzNormalizeOrigin(f *testing.F) {
	for _, s := range []string{"https://a.example", "HTTP://A.example.:80", "http://[::1]:8080", "null", "https://a/b", "https://u@a", "https://a:0443", "a://b:65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := normalizeOrigin(in)
		if err != nil {
			return
		}
		again, err := normalizeOrigin(out)
		if err != nil || again != out {
			t.Fatalf("normalizeOrigin(%q) = %q, which normalizes to %q, %v", in, out, again, err)
		}
		if _, rest, ok := strings.Cut(out, "://"); !ok || strings.ContainsAny(rest, "/?#@") {
			t.Fatalf("normalizeOrigin(%q) = %q", in, out)
		}
	})
}

// FuzzClientIP checks that the forwarded-for walk never panics and returns
// either unknownClient or a parsed address, which is never the trusted
// proxy's own unless the chain says so.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "203.0.113.7:4711", "garbage", "[2001:db8::1]:443", " , ", "10.0.0.2, 198.51.100.1", "fe80::1%eth0"} {
		f.Add(s, "10.0.0.2")
	}
	h := &Handler{cfg: &config{trustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	f.Fuzz(func(t *testing.T, line1, line2 string) {
		r := &http.Request{RemoteAddr: "10.0.0.1:1", Header: http.Header{"X-Forwarded-For": {line1, line2}}}
		got := h.clientIP(r)
		if got == unknownClient {
			return
		}
		a, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("clientIP = %q, neither unknown nor an address", got)
		}
		// Every address returned is an entry of the chain (in its normal
		// form, an IPv4-mapped one unmapped), never the peer's own.
		inChain := false
		for entry := range strings.SplitSeq(line1+","+line2, ",") {
			if e, err := netip.ParseAddr(strings.TrimSpace(entry)); err == nil && e.Unmap() == a {
				inChain = true
			}
		}
		if !inChain {
			t.Fatalf("clientIP = %q, not an entry of %q, %q", got, line1, line2)
		}
	})
}
