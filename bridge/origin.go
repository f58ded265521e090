package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Origins as the Fetch standard defines them: a scheme, a host and a port,
// serialized as "scheme://host[:port]". Browsers send one in the Origin
// header of every CORS request, every POST and every WebSocket handshake,
// and "null" for opaque origins (sandboxed frames, file: pages, some
// redirects). The bridge compares origins in one normal form, so that
// spellings that name the same origin compare equal and nothing else does.

// originNull is the serialization of an opaque origin.
const originNull = "null"

// normalizeOrigin returns the normal form of an Origin value: scheme and
// host in lower case, a trailing dot of the host removed, and the port left
// out when it is the scheme's default (https://h:443 is https://h). It
// fails for anything that is not a tuple origin: "null", a path, a query,
// user info, an empty host or a bad port.
func normalizeOrigin(origin string) (string, error) {
	if origin == originNull {
		return "", errors.New("the opaque origin null (a sandboxed frame or a file: page) is never allowed")
	}
	u, err := url.Parse(origin)
	if err != nil {
		return "", fmt.Errorf("origin %s does not parse", quoteName(origin))
	}
	if u.Scheme == "" || u.Opaque != "" || u.User != nil || u.Host == "" ||
		u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("origin %s is not scheme://host[:port]", quoteName(origin))
	}
	scheme := strings.ToLower(u.Scheme)
	host, err := normalizeHost(u.Host, scheme)
	if err != nil {
		return "", fmt.Errorf("origin %s: %w", quoteName(origin), err)
	}
	return scheme + "://" + host, nil
}

// normalizeHost returns host[:port] (a Host header, or the authority of an
// origin) in normal form for scheme: the host in lower case without a
// trailing dot, and the port only when it is not the scheme's default.
func normalizeHost(hostport, scheme string) (string, error) {
	host, port := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		var err error
		if host, port, err = net.SplitHostPort(hostport); err != nil {
			return "", fmt.Errorf("host %s does not parse", quoteName(hostport))
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]" // SplitHostPort took the brackets off an IPv6 literal
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || host == "[]" {
		return "", errors.New("empty host")
	}
	// One trailing dot names the root (the same host); an empty label
	// anywhere else is no host name at all.
	if strings.HasSuffix(host, ".") || strings.HasPrefix(host, ".") || strings.Contains(host, "..") {
		return "", fmt.Errorf("host %s has an empty label", quoteName(hostport))
	}
	if port != "" || strings.HasSuffix(hostport, ":") {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return "", fmt.Errorf("bad port %s", quoteName(port))
		}
		if n != defaultPort(scheme) {
			host += ":" + strconv.FormatUint(n, 10)
		}
	}
	return host, nil
}

// defaultPort is the port that a URL of scheme means when it names none,
// or 0 for schemes without one.
func defaultPort(scheme string) uint64 {
	switch scheme {
	case "http", "ws":
		return 80
	case "https", "wss":
		return 443
	}
	return 0
}

// originList is the allow-list of [WithAllowedOrigins] in normal form. It
// is built once and read-only after.
type originList struct {
	named    map[string]bool
	wildcard bool // "*": any origin, without credentials
}

// newOriginList normalizes the allow-list; an entry that is not an origin
// is an error, so that a typo never leaves a page locked out or, worse, an
// operator believing a rule holds that does not.
func newOriginList(entries []string) (*originList, error) {
	l := &originList{named: make(map[string]bool)}
	var errs []error
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "*" {
			l.wildcard = true
			continue
		}
		o, err := normalizeOrigin(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("allowed origin: %w", err))
			continue
		}
		l.named[o] = true
	}
	return l, errors.Join(errs...)
}

// empty reports whether the list allows no other origin than the bridge's
// own.
func (l *originList) empty() bool { return !l.wildcard && len(l.named) == 0 }
