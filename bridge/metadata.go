package bridge

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
)

// Header names and metadata keys the bridge reads or writes itself.
const (
	headerLastEventID    = "Last-Event-Id"
	headerContentType    = "Content-Type"
	headerCacheControl   = "Cache-Control"
	headerAccelBuffering = "X-Accel-Buffering"
	headerAllow          = "Allow"
	headerForwardedFor   = "X-Forwarded-For"

	mdLastEventID    = "last-event-id"
	mdRequestID      = "x-request-id"
	mdTimeout        = "grpc-timeout"
	mdForwardedFor   = "x-forwarded-for"
	mdForwardedHost  = "x-forwarded-host"
	binaryKeySuffix  = "-bin"
	headerKeyCookie  = "cookie"
	maxTimeoutDigits = 8 // gRPC's TimeoutValue is at most 8 digits
)

// forbiddenMetadataKeys can never be forwarded: hop-by-hop headers (RFC 9110
// section 7.6.1) describe one HTTP connection, not the call, and the rest are
// set by the gRPC transport itself.
var forbiddenMetadataKeys = map[string]bool{
	"connection":          true,
	"keep-alive":          true,
	"proxy-connection":    true,
	"proxy-authenticate":  true,
	"proxy-authorization": true,
	"te":                  true,
	"trailer":             true,
	"transfer-encoding":   true,
	"upgrade":             true,
	"host":                true,
	"content-length":      true,
	"content-type":        true,
	"user-agent":          true,
}

// headerMatcher is an allow-list of metadata keys: exact names and
// prefixes. It is built once and read-only after.
type headerMatcher struct {
	exact    map[string]bool
	prefixes []string
}

// newHeaderMatcher validates names (see [WithRequestHeaders]) and builds
// the matcher.
func newHeaderMatcher(names []string) (*headerMatcher, error) {
	m := &headerMatcher{exact: make(map[string]bool)}
	for _, n := range names {
		key := strings.ToLower(strings.TrimSpace(n))
		prefix, isPrefix := strings.CutSuffix(key, "*")
		switch {
		case key == "" || prefix == "" && isPrefix:
			return nil, fmt.Errorf("header allow-list entry %q: empty name", n)
		case strings.HasPrefix(key, ":"):
			return nil, fmt.Errorf("header allow-list entry %q: pseudo-headers cannot be forwarded", n)
		case forbiddenMetadataKeys[key]:
			return nil, fmt.Errorf("header allow-list entry %q: hop-by-hop and transport headers cannot be forwarded", n)
		case strings.HasPrefix(key, "grpc-") && key != mdTimeout:
			return nil, fmt.Errorf("header allow-list entry %q: grpc-* keys are reserved for the gRPC transport", n)
		case !validKey(prefix):
			return nil, fmt.Errorf("header allow-list entry %q: not a valid gRPC metadata key (lower-case letters, digits, '-', '_', '.')", n)
		}
		if isPrefix {
			m.prefixes = append(m.prefixes, prefix)
		} else {
			m.exact[key] = true
		}
	}
	return m, nil
}

// allows reports whether the lower-case key passes the allow-list. Keys that
// can never be forwarded fail even when a prefix would match them, and the
// cookie header passes only when named exactly.
func (m *headerMatcher) allows(key string) bool {
	if m.exact[key] {
		return true
	}
	if forbiddenMetadataKeys[key] || key == headerKeyCookie || strings.HasPrefix(key, "grpc-") {
		return false
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// isKeyChar reports whether r may appear in a gRPC metadata key: lower-case
// letters, digits, '-', '_' and '.' (gRPC over HTTP/2, "Custom-Metadata").
// That is narrower than an HTTP field name, so some headers can never be
// forwarded.
func isKeyChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}

// validKey reports whether key is a non-empty gRPC metadata key.
func validKey(key string) bool {
	return key != "" && !strings.ContainsFunc(key, func(r rune) bool { return !isKeyChar(r) })
}

// requestMetadata turns the allow-listed headers of r into outgoing gRPC
// metadata and returns the timeout set by a grpc-timeout header
// ([noTimeout] when there is none). Binary (-bin) headers are
// base64-decoded, as gRPC's HTTP/2 mapping encodes them. The request's own
// X-Forwarded-For is kept only when trustForwarded says that the peer is a
// trusted proxy: anyone else could write anything there.
func (m *headerMatcher) requestMetadata(r *http.Request, trustForwarded bool) (metadata.MD, time.Duration, error) {
	md := make(metadata.MD, len(r.Header)+2)
	timeout := noTimeout
	for name, values := range r.Header {
		key := strings.ToLower(name)
		// A header name that cannot be a metadata key (x-a!b under an
		// "x-*" entry) is dropped like any header off the list.
		if !m.allows(key) || !validKey(key) {
			continue
		}
		if key == mdTimeout {
			d, err := parseTimeout(values[0])
			if err != nil {
				return nil, 0, fmt.Errorf("header Grpc-Timeout: %w", err)
			}
			timeout = d
			continue
		}
		for _, v := range values {
			if strings.HasSuffix(key, binaryKeySuffix) {
				b, err := decodeBinaryHeader(v)
				if err != nil {
					return nil, 0, fmt.Errorf("header %s: not base64: %w", name, err)
				}
				md[key] = append(md[key], string(b))
				continue
			}
			if !isPrintableASCII(v) {
				return nil, 0, fmt.Errorf("header %s: gRPC metadata values must be printable ASCII", name)
			}
			md[key] = append(md[key], v)
		}
	}
	// As grpc-gateway does: tell the backend who is calling through us.
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		// Every X-Forwarded-For line, in order: proxies may add their own
		// line rather than extend the last (RFC 9110 section 5.3).
		if prior := strings.Join(r.Header.Values(headerForwardedFor), ", "); trustForwarded && prior != "" && isPrintableASCII(prior) {
			ip = prior + ", " + ip
		}
		md[mdForwardedFor] = []string{ip}
	}
	if r.Host != "" && isPrintableASCII(r.Host) {
		md[mdForwardedHost] = []string{r.Host}
	}
	return md, timeout, nil
}

// responseMetadata returns the allow-listed entries of md as a JSON-ready
// map, with binary values base64-encoded. It returns an empty, non-nil map
// when nothing passes, so the JSON is always an object.
func (m *headerMatcher) responseMetadata(md metadata.MD) map[string][]string {
	out := make(map[string][]string)
	for key, values := range md {
		if !m.allows(key) {
			continue
		}
		if strings.HasSuffix(key, binaryKeySuffix) {
			enc := make([]string, len(values))
			for i, v := range values {
				enc[i] = base64.StdEncoding.EncodeToString([]byte(v))
			}
			values = enc
		}
		out[key] = values
	}
	return out
}

func decodeBinaryHeader(v string) ([]byte, error) {
	// gRPC senders may omit padding (gRPC over HTTP/2 spec, "Custom-Metadata").
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// parseTimeout parses a gRPC timeout ("TimeoutValue TimeoutUnit" in the gRPC
// over HTTP/2 spec: at most 8 digits and one of H M S m u n).
func parseTimeout(s string) (time.Duration, error) {
	if len(s) < 2 || len(s) > maxTimeoutDigits+1 {
		return 0, fmt.Errorf("timeout %q: want 1 to 8 digits and a unit (H, M, S, m, u, n)", s)
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, fmt.Errorf("timeout %q: unknown unit %q", s, s[len(s)-1:])
	}
	digits := s[:len(s)-1]
	if strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("timeout %q: not a decimal number", s)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("timeout %q: %w", s, err)
	}
	if n > math.MaxInt64/int64(unit) {
		return time.Duration(math.MaxInt64), nil
	}
	return time.Duration(n) * unit, nil
}

// unknownClient is the client of a request whose forwarded-for chain does
// not parse: such callers share one per-client limit, and native gRPC
// refuses them (trust fails closed).
const unknownClient = "unknown"

// maxForwardedHops bounds the X-Forwarded-For entries the bridge walks: a
// real chain has a few proxies, and a longer one is a forgery.
const maxForwardedHops = 32

// clientIP returns the address a request counts against for the
// per-client stream limit and the native gRPC networks: the peer, or,
// when the peer is a trusted proxy, the right-most X-Forwarded-For entry
// that is not a trusted proxy. Every entry walked must be a bare IP
// address (RFC 7239's X-Forwarded-For has no ports, brackets or names); an
// empty, malformed or missing entry before an untrusted one makes the
// client [unknownClient], never the proxy's own address, so a broken or
// forged chain cannot make a caller look internal.
func (h *Handler) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return unknownClient
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return unknownClient
	}
	if !h.trusted(addr) {
		return addr.Unmap().String()
	}
	lines := r.Header.Values(headerForwardedFor)
	if len(lines) == 0 {
		return addr.Unmap().String() // the proxy itself is the caller
	}
	hops := 0
	var first netip.Addr // the left-most entry seen so far
	for i := len(lines) - 1; i >= 0; i-- {
		entries := strings.Split(lines[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			if hops++; hops > maxForwardedHops {
				return unknownClient
			}
			hop, err := netip.ParseAddr(strings.TrimSpace(entries[j]))
			if err != nil || hop.Zone() != "" {
				return unknownClient
			}
			if !h.trusted(hop) {
				return hop.Unmap().String()
			}
			first = hop
		}
	}
	// Every entry is a trusted proxy: the left-most one sent the request.
	return first.Unmap().String()
}

// peerTrusted reports whether the request's peer is a trusted proxy.
func (h *Handler) peerTrusted(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && h.trusted(addr)
}

func (h *Handler) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range h.cfg.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addControlMetadata adds the entries of a control object's metadata (a
// WebSocket metadata frame, a session OPEN) to md with the rules of HTTP
// request headers: keys are case-insensitive, keys not on the allow-list
// are dropped, and so are ambient credentials with noAmbient (a page that
// only "*" admits); -bin values are base64, other values printable ASCII,
// and grpc-timeout sets *timeout.
func (m *headerMatcher) addControlMetadata(md metadata.MD, timeout *time.Duration, entries map[string][]string, noAmbient bool) error {
	for name, values := range entries {
		key := strings.ToLower(name)
		if !validKey(key) {
			return fmt.Errorf("metadata key %s is not a valid gRPC metadata key (letters, digits, '-', '_', '.')", quoteName(name))
		}
		// The bridge sets these itself, from the connection.
		if !m.allows(key) || key == mdForwardedFor || key == mdForwardedHost ||
			noAmbient && slices.Contains(ambientCredentialKeys, key) {
			continue
		}
		if key == mdTimeout {
			if len(values) != 1 {
				return errors.New("metadata grpc-timeout: want exactly one value")
			}
			d, err := parseTimeout(values[0])
			if err != nil {
				return fmt.Errorf("metadata grpc-timeout: %w", err)
			}
			*timeout = d
			continue
		}
		for _, v := range values {
			if strings.HasSuffix(key, binaryKeySuffix) {
				b, err := decodeBinaryHeader(v)
				if err != nil {
					return fmt.Errorf("metadata %s: not base64: %v", quoteName(key), err)
				}
				md[key] = append(md[key], string(b))
				continue
			}
			if !isPrintableASCII(v) {
				return fmt.Errorf("metadata %s: values must be printable ASCII", quoteName(key))
			}
			md[key] = append(md[key], v)
		}
	}
	return nil
}
