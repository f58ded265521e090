package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/metadata"
)

func TestParseTimeout(t *testing.T) {
	t.Parallel()
	const maxDuration = time.Duration(math.MaxInt64)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"1H", time.Hour},
		{"2M", 2 * time.Minute},
		{"3S", 3 * time.Second},
		{"4m", 4 * time.Millisecond},
		{"5u", 5 * time.Microsecond},
		{"6n", 6 * time.Nanosecond},
		{"0S", 0},
		{"0n", 0},
		{"00000001S", time.Second}, // 8 digits, leading zeros
		{"12345678m", 12345678 * time.Millisecond},
		{"99999999n", 99999999 * time.Nanosecond},
		{"99999999S", 99999999 * time.Second},
		{"99999999M", 99999999 * time.Minute}, // about 190 years: still fits
		{"2562047H", 2562047 * time.Hour},     // the largest number of hours that fits
		{"2562048H", maxDuration},             // overflows: clamped
		{"99999999H", maxDuration},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseTimeout(tt.in)
			if err != nil {
				t.Fatalf("parseTimeout(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("parseTimeout(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseTimeoutErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string // in the error message
	}{
		{"empty", "", `timeout "": want 1 to 8 digits and a unit`},
		{"unit only", "S", `timeout "S": want 1 to 8 digits and a unit`},
		{"one digit, no unit", "5", `timeout "5": want 1 to 8 digits and a unit`},
		{"digits, no unit", "12345", `timeout "12345": unknown unit "5"`},
		{"9 digits", "123456789S", `timeout "123456789S": want 1 to 8 digits and a unit`},
		{"9 zeros", "000000000S", `want 1 to 8 digits`},
		{"lower-case hour", "5h", `unknown unit "h"`},
		{"lower-case second", "5s", `unknown unit "s"`},
		{"upper-case nano", "5N", `unknown unit "N"`},
		{"Go duration", "1ms", `unknown unit "s"`},
		{"minus", "-5S", `timeout "-5S": not a decimal number`},
		{"plus", "+5S", "not a decimal number"},
		{"leading space", " 5S", "not a decimal number"},
		{"inner space", "5 S", "not a decimal number"},
		{"hex", "0x5S", "not a decimal number"},
		{"fraction", "1.5S", "not a decimal number"},
		{"two units", "5SS", "not a decimal number"},
		{"non-ASCII digit", "٣S", "not a decimal number"},
		{"non-ASCII unit", "5µ", "unknown unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseTimeout(tt.in)
			if err == nil {
				t.Fatalf("parseTimeout(%q) = %v, want an error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseTimeout(%q) error %q, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

// timeoutGrammar is the TimeoutValue TimeoutUnit of the gRPC over HTTP/2
// spec.
var timeoutGrammar = regexp.MustCompile(`^[0-9]{1,8}[HMSmun]$`)

// FuzzParseTimeout checks parseTimeout against the spec's grammar: it
// never panics, accepts exactly the strings of the grammar, and returns
// their value, clamped to the largest Duration.
func FuzzParseTimeout(f *testing.F) {
	for _, s := range []string{"1H", "2M", "3S", "4m", "5u", "6n", "0S", "99999999H", "2562048H",
		"123456789S", "", "S", "5", "-5S", "5s", "٣S", "0x1S"} {
		f.Add(s)
	}
	units := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTimeout(s)
		valid := timeoutGrammar.MatchString(s)
		if err != nil {
			if valid {
				t.Fatalf("parseTimeout(%q): %v; want it accepted", s, err)
			}
			return
		}
		if !valid {
			t.Fatalf("parseTimeout(%q) = %v; want an error", s, got)
		}
		if got < 0 {
			t.Fatalf("parseTimeout(%q) = %v, negative", s, got)
		}
		n, _ := strconv.ParseInt(s[:len(s)-1], 10, 64)
		want := new(big.Int).Mul(big.NewInt(n), big.NewInt(int64(units[s[len(s)-1]])))
		if want.Cmp(big.NewInt(math.MaxInt64)) > 0 {
			want.SetInt64(math.MaxInt64)
		}
		if int64(got) != want.Int64() {
			t.Fatalf("parseTimeout(%q) = %d ns, want %s ns", s, int64(got), want)
		}
	})
}

func TestNewHeaderMatcherRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		names []string
		want  string // the whole error message
	}{
		{"pseudo-header", []string{":path"}, `header allow-list entry ":path": pseudo-headers cannot be forwarded`},
		{"pseudo-header prefix", []string{":*"}, `header allow-list entry ":*": pseudo-headers cannot be forwarded`},
		{"connection", []string{"connection"}, `header allow-list entry "connection": hop-by-hop and transport headers cannot be forwarded`},
		{"connection any case", []string{" Connection "}, `header allow-list entry " Connection ": hop-by-hop and transport headers cannot be forwarded`},
		{"te", []string{"te"}, `header allow-list entry "te": hop-by-hop and transport headers cannot be forwarded`},
		{"host", []string{"Host"}, `header allow-list entry "Host": hop-by-hop and transport headers cannot be forwarded`},
		{"content-type", []string{"content-type"}, `header allow-list entry "content-type": hop-by-hop and transport headers cannot be forwarded`},
		{"grpc-status", []string{"grpc-status"}, `header allow-list entry "grpc-status": grpc-* keys are reserved for the gRPC transport`},
		{"grpc prefix", []string{"grpc-*"}, `header allow-list entry "grpc-*": grpc-* keys are reserved for the gRPC transport`},
		{"grpc-timeout prefix", []string{"grpc-timeout*"}, `header allow-list entry "grpc-timeout*": grpc-* keys are reserved for the gRPC transport`},
		{"empty", []string{""}, `header allow-list entry "": empty name`},
		{"blank", []string{"  "}, `header allow-list entry "  ": empty name`},
		{"star", []string{"*"}, `header allow-list entry "*": empty name`},
		{"space", []string{"bad name"}, `header allow-list entry "bad name": not a valid gRPC metadata key (lower-case letters, digits, '-', '_', '.')`},
		{"slash", []string{"x-a/b"}, `header allow-list entry "x-a/b": not a valid gRPC metadata key (lower-case letters, digits, '-', '_', '.')`},
		{"colon inside", []string{"x-a:b"}, `header allow-list entry "x-a:b": not a valid gRPC metadata key (lower-case letters, digits, '-', '_', '.')`},
		{"non-ASCII", []string{"x-é"}, `header allow-list entry "x-é": not a valid gRPC metadata key (lower-case letters, digits, '-', '_', '.')`},
		{"bad prefix", []string{"x y-*"}, `header allow-list entry "x y-*": not a valid gRPC metadata key (lower-case letters, digits, '-', '_', '.')`},
		{"first bad entry of several", []string{"authorization", "x-ok-*", "te", "bad name"},
			`header allow-list entry "te": hop-by-hop and transport headers cannot be forwarded`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := newHeaderMatcher(tt.names)
			if err == nil {
				t.Fatalf("newHeaderMatcher(%q) = %+v, want an error", tt.names, m)
			}
			if err.Error() != tt.want {
				t.Fatalf("newHeaderMatcher(%q) error\n%s\nwant\n%s", tt.names, err, tt.want)
			}
		})
	}
}

func TestNewHeaderMatcherAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		names        []string
		wantExact    []string
		wantPrefixes []string
	}{
		{nil, nil, nil},
		{[]string{"x-tenant-*"}, nil, []string{"x-tenant-"}},
		{[]string{"cookie"}, []string{"cookie"}, nil},
		{[]string{"grpc-timeout"}, []string{"grpc-timeout"}, nil},
		{[]string{" Authorization ", "X-Request-ID"}, []string{"authorization", "x-request-id"}, nil},
		{[]string{"grpc*"}, nil, []string{"grpc"}}, // allowed, but never lets grpc-* keys through
		{defaultRequestHeaders, defaultRequestHeaders, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.names, ","), func(t *testing.T) {
			t.Parallel()
			m, err := newHeaderMatcher(tt.names)
			if err != nil {
				t.Fatalf("newHeaderMatcher(%q): %v", tt.names, err)
			}
			exact := make(map[string]bool)
			for _, k := range tt.wantExact {
				exact[k] = true
			}
			if diff := cmp.Diff(exact, m.exact); diff != "" {
				t.Errorf("exact names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPrefixes, m.prefixes); diff != "" {
				t.Errorf("prefixes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHeaderMatcherAllows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		names []string
		allow []string
		deny  []string
	}{
		{
			name:  "exact and prefix",
			names: []string{"authorization", "x-tenant-*", "grpc-timeout"},
			allow: []string{"authorization", "x-tenant-id", "x-tenant-", "x-tenant-region-eu", "grpc-timeout"},
			deny:  []string{"authorizations", "x-tenant", "x-other", "cookie", "grpc-status", ""},
		},
		{
			name:  "cookie only when named exactly",
			names: []string{"cookie"},
			allow: []string{"cookie"},
			deny:  []string{"cookie2", "set-cookie"},
		},
		{
			name:  "a prefix never lets cookie through",
			names: []string{"c*", "co*", "cookie*"},
			allow: []string{"custom", "cookie2", "correlation"},
			deny:  []string{"cookie", "connection", "content-length", "content-type"},
		},
		{
			name:  "a prefix never lets forbidden keys through",
			names: []string{"x-*", "t*", "h*", "u*", "k*", "p*"},
			allow: []string{"x-anything", "traceparent", "tracestate", "hello", "u", "kind", "p"},
			deny: []string{"te", "trailer", "transfer-encoding", "host", "upgrade", "user-agent",
				"keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "connection"},
		},
		{
			name:  "a prefix never lets grpc keys through",
			names: []string{"g*", "grpc*"},
			allow: []string{"gzip", "grpcx", "grpc"},
			deny:  []string{"grpc-timeout", "grpc-status", "grpc-message", "grpc-encoding"},
		},
		{
			name:  "empty list",
			names: nil,
			deny:  []string{"authorization", "x-a", ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := newHeaderMatcher(tt.names)
			if err != nil {
				t.Fatalf("newHeaderMatcher(%q): %v", tt.names, err)
			}
			for _, k := range tt.allow {
				if !m.allows(k) {
					t.Errorf("%q does not allow %q", tt.names, k)
				}
			}
			for _, k := range tt.deny {
				if m.allows(k) {
					t.Errorf("%q allows %q", tt.names, k)
				}
			}
		})
	}
}

func TestRequestMetadata(t *testing.T) {
	t.Parallel()
	// httptest.NewRequest's peer and host.
	const peer, host = "192.0.2.1", "example.com"
	defaultAllow := []string{"authorization", "x-tenant-*", "x-data-bin", "grpc-timeout"}
	tests := []struct {
		name        string
		allow       []string // nil: defaultAllow
		header      http.Header
		remoteAddr  string // "": httptest's
		host        *string
		want        metadata.MD
		wantTimeout time.Duration
	}{
		{
			name: "allow-listed copied, others dropped",
			header: http.Header{
				"Authorization": {"Bearer t"},
				"X-Tenant-Id":   {"a", "b"},
				"X-Secret":      {"s"},
				"Cookie":        {"c=1"},
				"Connection":    {"close"},
				"Grpc-Status":   {"0"},
				"X-Data":        {"not bin"},
			},
			want: metadata.MD{
				"authorization":    {"Bearer t"},
				"x-tenant-id":      {"a", "b"},
				"x-forwarded-for":  {peer},
				"x-forwarded-host": {host},
			},
		},
		{
			name:  "cookie named exactly",
			allow: []string{"cookie"},
			header: http.Header{
				"Cookie":        {"c=1"},
				"Authorization": {"Bearer t"},
			},
			want: metadata.MD{"cookie": {"c=1"}, "x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "nothing allow-listed",
			allow:  []string{},
			header: http.Header{"Authorization": {"Bearer t"}},
			want:   metadata.MD{"x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "binary with padding",
			header: http.Header{"X-Data-Bin": {"aGk=", "AP8="}},
			want:   metadata.MD{"x-data-bin": {"hi", "\x00\xff"}, "x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "binary without padding",
			header: http.Header{"X-Data-Bin": {"aGk", "aGVsbG8", "AP8"}},
			want:   metadata.MD{"x-data-bin": {"hi", "hello", "\x00\xff"}, "x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "binary empty",
			header: http.Header{"X-Data-Bin": {""}},
			want:   metadata.MD{"x-data-bin": {""}, "x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "binary through a prefix",
			header: http.Header{"X-Tenant-Key-Bin": {"AQID"}},
			want:   metadata.MD{"x-tenant-key-bin": {"\x01\x02\x03"}, "x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:        "grpc-timeout sets the deadline, not metadata",
			header:      http.Header{"Grpc-Timeout": {"250m"}},
			want:        metadata.MD{"x-forwarded-for": {peer}, "x-forwarded-host": {host}},
			wantTimeout: 250 * time.Millisecond,
		},
		{
			name:        "only the first grpc-timeout counts",
			header:      http.Header{"Grpc-Timeout": {"1S", "bad"}},
			want:        metadata.MD{"x-forwarded-for": {peer}, "x-forwarded-host": {host}},
			wantTimeout: time.Second,
		},
		{
			name:   "grpc-timeout ignored unless allow-listed",
			allow:  []string{"authorization"},
			header: http.Header{"Grpc-Timeout": {"1S"}},
			want:   metadata.MD{"x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "x-forwarded-for appended",
			header: http.Header{"X-Forwarded-For": {"203.0.113.7, 198.51.100.2"}},
			want:   metadata.MD{"x-forwarded-for": {"203.0.113.7, 198.51.100.2, " + peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "x-forwarded-for allow-listed is still appended to, not copied",
			allow:  []string{"x-forwarded-*"},
			header: http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Host": {"evil.example"}},
			want:   metadata.MD{"x-forwarded-for": {"203.0.113.7, " + peer}, "x-forwarded-host": {host}},
		},
		{
			name:   "non-printable x-forwarded-for dropped",
			header: http.Header{"X-Forwarded-For": {"203.0.113.7\x01"}},
			want:   metadata.MD{"x-forwarded-for": {peer}, "x-forwarded-host": {host}},
		},
		{
			name:       "IPv6 peer",
			remoteAddr: "[2001:db8::1]:443",
			want:       metadata.MD{"x-forwarded-for": {"2001:db8::1"}, "x-forwarded-host": {host}},
		},
		{
			name:       "peer without port",
			remoteAddr: "pipe",
			want:       metadata.MD{"x-forwarded-host": {host}},
		},
		{
			name: "no host",
			host: new(""),
			want: metadata.MD{"x-forwarded-for": {peer}},
		},
		{
			name: "non-printable host",
			host: new("example.com\x7f"),
			want: metadata.MD{"x-forwarded-for": {peer}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			allow := tt.allow
			if allow == nil {
				allow = defaultAllow
			}
			m, err := newHeaderMatcher(allow)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/demo.v1.TickerService/Watch", nil)
			r.Header = tt.header
			if r.Header == nil {
				r.Header = http.Header{}
			}
			if tt.remoteAddr != "" {
				r.RemoteAddr = tt.remoteAddr
			}
			if tt.host != nil {
				r.Host = *tt.host
			}
			md, timeout, err := m.requestMetadata(r, true)
			if err != nil {
				t.Fatalf("requestMetadata: %v", err)
			}
			if diff := cmp.Diff(tt.want, md); diff != "" {
				t.Errorf("metadata (-want +got):\n%s", diff)
			}
			want := tt.wantTimeout
			if want == 0 {
				want = noTimeout // the case has no grpc-timeout header
			}
			if timeout != want {
				t.Errorf("timeout %v, want %v", timeout, want)
			}
		})
	}
}

// X-Forwarded-For is a list that a proxy may extend with a field line of
// its own instead of appending to the existing one (HAProxy's option
// forwardfor does); RFC 9110 section 5.3 makes both forms equivalent. The
// backend must see every hop, and the one the proxy added is the one that
// can be believed.
func TestRequestMetadataForwardedForOnSeveralLines(t *testing.T) {
	t.Parallel()
	m, err := newHeaderMatcher(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
	r.Header["X-Forwarded-For"] = []string{"203.0.113.7", "198.51.100.2"}
	md, _, err := m.requestMetadata(r, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"203.0.113.7, 198.51.100.2, 192.0.2.1"}
	if diff := cmp.Diff(want, md[mdForwardedFor]); diff != "" {
		t.Errorf("x-forwarded-for from two field lines (-want +got):\n%s", diff)
	}
}

// A grpc-timeout of zero is a deadline that has already passed: gRPC
// servers (grpc-go among them) fail such a call at once with
// DEADLINE_EXCEEDED, and docs/protocol.md says a call that runs past the
// timeout ends with DEADLINE_EXCEEDED. The gRPC spec allows only positive
// values, so refusing the header is acceptable too. What must not happen is
// a call with no deadline at all.
func TestRequestMetadataZeroTimeoutIsNotUnbounded(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0S", "0n", "00000000H"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			m, err := newHeaderMatcher(defaultRequestHeaders)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
			r.Header.Set("Grpc-Timeout", v)
			_, timeout, err := m.requestMetadata(r, true)
			if err != nil {
				return // refused as not positive: fine
			}
			ctx, cancel := callContext(t.Context(), timeout)
			defer cancel()
			if _, ok := ctx.Deadline(); !ok {
				t.Fatalf("Grpc-Timeout: %s: call context has no deadline; want one that has passed (or the header refused)", v)
			}
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatalf("Grpc-Timeout: %s: call context error %v, want %v", v, ctx.Err(), context.DeadlineExceeded)
			}
		})
	}
}

func TestRequestMetadataErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header http.Header
		want   []string // in the error message
	}{
		{"invalid base64", http.Header{"X-Data-Bin": {"!!!!"}}, []string{"header X-Data-Bin: not base64"}},
		{"invalid unpadded base64", http.Header{"X-Data-Bin": {"a"}}, []string{"header X-Data-Bin: not base64"}},
		{"invalid second value", http.Header{"X-Data-Bin": {"aGk=", "a*b"}}, []string{"header X-Data-Bin: not base64"}},
		{"URL alphabet", http.Header{"X-Data-Bin": {"_-8"}}, []string{"header X-Data-Bin: not base64"}},
		{"control character", http.Header{"Authorization": {"Bearer\x01t"}},
			[]string{"header Authorization: gRPC metadata values must be printable ASCII"}},
		{"DEL", http.Header{"X-Tenant-Id": {"a\x7f"}}, []string{"header X-Tenant-Id: gRPC metadata values must be printable ASCII"}},
		{"tab", http.Header{"Authorization": {"a\tb"}}, []string{"header Authorization: gRPC metadata values must be printable ASCII"}},
		{"non-ASCII", http.Header{"Authorization": {"é"}}, []string{"header Authorization: gRPC metadata values must be printable ASCII"}},
		{"bad grpc-timeout", http.Header{"Grpc-Timeout": {"5s"}}, []string{"header Grpc-Timeout:", `unknown unit "s"`}},
		{"long grpc-timeout", http.Header{"Grpc-Timeout": {"123456789S"}}, []string{"header Grpc-Timeout:", "want 1 to 8 digits"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := newHeaderMatcher([]string{"authorization", "x-tenant-*", "x-data-bin", "grpc-timeout"})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
			r.Header = tt.header
			md, timeout, err := m.requestMetadata(r, true)
			if err == nil {
				t.Fatalf("requestMetadata = %v, %v; want an error", md, timeout)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to contain %q", err, w)
				}
			}
			if md != nil || timeout != 0 {
				t.Errorf("requestMetadata = %v, %v with the error; want nil, 0", md, timeout)
			}
		})
	}
}

func TestResponseMetadata(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		allow []string
		md    metadata.MD
		want  map[string][]string
	}{
		{
			name:  "filtered",
			allow: []string{"x-keep", "x-pre-*"},
			md: metadata.MD{
				"x-keep":       {"a"},
				"x-pre-one":    {"1", "2"},
				"x-drop":       {"z"},
				"content-type": {"application/grpc"},
				"grpc-status":  {"0"},
			},
			want: map[string][]string{"x-keep": {"a"}, "x-pre-one": {"1", "2"}},
		},
		{
			name:  "binary base64 with padding",
			allow: []string{"x-raw-bin", "x-pre-*"},
			md:    metadata.MD{"x-raw-bin": {"\x00\xffhi", "", "a"}, "x-pre-key-bin": {"\x01\x02\x03"}},
			want:  map[string][]string{"x-raw-bin": {"AP9oaQ==", "", "YQ=="}, "x-pre-key-bin": {"AQID"}},
		},
		{
			name:  "cookie needs its exact name",
			allow: []string{"c*"},
			md:    metadata.MD{"cookie": {"c=1"}, "custom": {"v"}},
			want:  map[string][]string{"custom": {"v"}},
		},
		{
			name:  "nothing passes",
			allow: []string{"x-keep"},
			md:    metadata.MD{"x-drop": {"z"}},
			want:  map[string][]string{},
		},
		{
			name:  "nil metadata",
			allow: []string{"x-keep"},
			md:    nil,
			want:  map[string][]string{},
		},
		{
			name:  "default: none",
			allow: nil,
			md:    metadata.MD{"x-keep": {"a"}, "authorization": {"b"}},
			want:  map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := newHeaderMatcher(tt.allow)
			if err != nil {
				t.Fatal(err)
			}
			before := tt.md.Copy()
			got := m.responseMetadata(tt.md)
			if got == nil {
				t.Fatal("responseMetadata returned nil; want a non-nil map")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("responseMetadata (-want +got):\n%s", diff)
			}
			if len(tt.want) == 0 {
				if b, _ := json.Marshal(got); string(b) != "{}" {
					t.Errorf("JSON %s, want {}", b)
				}
			}
			if diff := cmp.Diff(before, tt.md, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("responseMetadata changed its input (-before +after):\n%s", diff)
			}
		})
	}
}

func TestRequestMetadataIgnoresForwardedForFromUntrustedPeers(t *testing.T) {
	t.Parallel()
	m, err := newHeaderMatcher(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "198.51.100.9:4000"
	r.Header.Set("X-Forwarded-For", "10.0.0.1")
	md, _, err := m.requestMetadata(r, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := md.Get("x-forwarded-for"); len(got) != 1 || got[0] != "198.51.100.9" {
		t.Fatalf("x-forwarded-for %q, want only the peer 198.51.100.9", got)
	}
}
