package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Forwarding between replicas: a request for a session that another
// replica owns goes to that owner, as it is, but only when the owner is in
// the peer set, so that a token can never point the bridge anywhere else.

// Outcomes of a request for another replica's session, as passed to
// [SessionMetrics].
const (
	ForwardOutcomeForwarded = "forwarded"
	ForwardOutcomeRefused   = "refused"
	ForwardOutcomeFailed    = "failed"
)

const (
	forwardDialTimeout = 5 * time.Second
	peerLookupTimeout  = 2 * time.Second
)

// peerSet is where sessions' owners may be: prefixes, and the addresses
// of DNS names, looked up again when older than refresh. Lookups happen
// on use, so that the set costs no goroutine.
type peerSet struct {
	prefixes []netip.Prefix
	names    []string
	refresh  time.Duration

	mu       sync.Mutex
	resolved map[netip.Addr]bool
	at       time.Time // of the last lookup
}

func newPeerSet(entries []string, refresh time.Duration) (*peerSet, error) {
	p := &peerSet{refresh: refresh}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("peer %q: not a CIDR: %w", e, err)
			}
			p.prefixes = append(p.prefixes, pfx.Masked())
		default:
			if a, err := netip.ParseAddr(e); err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			if !validDNSName(e) {
				return nil, fmt.Errorf("peer %q: want a CIDR, an IP address or a DNS name", e)
			}
			p.names = append(p.names, e)
		}
	}
	return p, nil
}

func validDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// contains reports whether a is in the set.
func (p *peerSet) contains(ctx context.Context, a netip.Addr) bool {
	a = a.Unmap()
	for _, pfx := range p.prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	if len(p.names) == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resolved == nil || time.Since(p.at) > p.refresh {
		p.lookupLocked(ctx)
	}
	return p.resolved[a]
}

// lookupLocked resolves the names. A name that does not resolve keeps its
// last addresses out: an owner that is not found is not trusted.
func (p *peerSet) lookupLocked(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), peerLookupTimeout)
	defer cancel()
	resolved := make(map[netip.Addr]bool)
	for _, name := range p.names {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			resolved[a.Unmap()] = true
		}
	}
	p.resolved, p.at = resolved, time.Now()
}

// containsRemote reports whether a request's peer (RemoteAddr) is in the
// set.
func (p *peerSet) containsRemote(ctx context.Context, remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && p.contains(ctx, ap.Addr())
}

// sessionForwarder forwards requests to sessions' owners.
type sessionForwarder struct {
	srv   *sessionServer
	proxy *httputil.ReverseProxy
}

// ownerKey is the request context key of the owner's address, from
// forward to the proxy's Rewrite.
type ownerKey struct{}

func newSessionForwarder(srv *sessionServer) *sessionForwarder {
	f := &sessionForwarder{srv: srv}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(ownerKey{}).(string)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(headerSessionForwarded, f.srv.keys.forwardMark(pr.In.URL.Query().Get("sid")))
		},
		// No idle connections to keep (or to leak when the handler is
		// dropped): a forwarded request is the exception, after a cut or
		// on a load balancer without affinity.
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{Timeout: forwardDialTimeout}).DialContext,
			DisableKeepAlives: true,
		},
		FlushInterval: -1, // event streams go through as they come
		// A client that cuts a forwarded stream is no news.
		ErrorLog: slog.NewLogLogger(srv.h.log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			srv.metrics.SessionForwarded(ForwardOutcomeFailed)
			srv.h.log.LogAttrs(r.Context(), slog.LevelWarn, "session owner unreachable",
				slog.String(logKeyPeer, r.RemoteAddr), slog.String("owner", r.Context().Value(ownerKey{}).(string)),
				slog.String(logKeyReason, err.Error()))
			srv.h.writeError(w, http.StatusServiceUnavailable, status.New(codes.Unavailable, "the session's bridge cannot be reached"))
		},
	}
	return f
}

// forward serves a request for a session that owner owns.
func (f *sessionForwarder) forward(w http.ResponseWriter, r *http.Request, owner string) {
	srv := f.srv
	ap, err := netip.ParseAddrPort(owner)
	if err != nil || srv.o.AdvertiseAddr == "" || !srv.peers.contains(r.Context(), ap.Addr()) {
		srv.metrics.SessionForwarded(ForwardOutcomeRefused)
		// The token verified, so a replica signed it: the peer set is
		// out of step with the deployment, or a key leaked.
		srv.h.log.LogAttrs(r.Context(), slog.LevelWarn, "session owner outside the peer set",
			slog.String(logKeyPeer, r.RemoteAddr), slog.String("owner", owner))
		srv.h.writeError(w, http.StatusForbidden, status.New(codes.PermissionDenied, "the session's bridge is not a peer of this one"))
		return
	}
	srv.metrics.SessionForwarded(ForwardOutcomeForwarded)
	srv.h.log.LogAttrs(r.Context(), slog.LevelDebug, "session request forwarded",
		slog.String(logKeyPeer, r.RemoteAddr), slog.String("owner", owner))
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ownerKey{}, ap.String())))
}
