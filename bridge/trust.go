package bridge

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The trust boundary (docs/config.md, "Trust boundary"): the rules that
// hold for every browser-facing request whatever the configuration, applied
// before any backend call. This file owns them; the transports call
// [Handler.admitBrowser] first and build their metadata with
// [Handler.browserMetadata].

// Fetch metadata request headers (W3C Fetch Metadata). Browsers send them
// on every request; other clients do not.
const (
	headerSecFetchSite   = "Sec-Fetch-Site"
	headerSecFetchPrefix = "Sec-Fetch-"
	headerForwardedProto = "X-Forwarded-Proto"
)

// Logged when a request is refused at the boundary.
const (
	logKeyOrigin = "origin"
	logKeyReason = "reason"
)

// ambientCredentialKeys are the request headers that a browser may attach
// on its own (cookies, cached HTTP authentication): never forwarded for a
// page that only the "*" wildcard admits.
var ambientCredentialKeys = []string{headerKeyCookie, "authorization"}

// browserCaller is what the origin rules learned about a request.
type browserCaller struct {
	// origin is the request's Origin in normal form, "" when it has none.
	origin string
	// wildcard: the origin is admitted only by "*", so the request carries
	// no credentials to the backend.
	wildcard bool
	// named: the origin is on the allow-list by name (CORS credentials may
	// be allowed).
	named bool
}

// admitBrowser applies the origin rules to a browser-facing request for
// method name over transport. A request with an Origin must come from the
// bridge's own origin (scheme, host and port) or one on the allow-list; a
// request without one must not say (Sec-Fetch-Site) that another site or
// subdomain sent it. Requests with neither header are not from a browser
// and pass. On refusal it answers 403 with a JSON PERMISSION_DENIED status
// that names the reason, logs the refusal at Info, and returns false.
func (h *Handler) admitBrowser(w http.ResponseWriter, r *http.Request, name, transport string) (browserCaller, bool) {
	c, st := h.checkOrigin(r)
	if st == nil {
		return c, true
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "request refused",
		slog.String(logKeyMethod, name),
		slog.String(logKeyTransport, transport),
		slog.String(logKeyPeer, r.RemoteAddr),
		slog.String(logKeyOrigin, r.Header.Get(headerOrigin)),
		slog.String(logKeyReason, st.Message()),
	)
	h.writeError(w, http.StatusForbidden, st)
	return browserCaller{}, false
}

// checkOrigin is admitBrowser's decision: the caller, or the refusal.
func (h *Handler) checkOrigin(r *http.Request) (browserCaller, *status.Status) {
	raw := r.Header.Get(headerOrigin)
	if raw == "" {
		// No Origin: a same-origin GET, a navigation, or not a browser.
		// Browsers leave Origin off no-cors requests (<img>, <script>,
		// links) from other sites too; Fetch Metadata tells those apart.
		switch site := strings.ToLower(r.Header.Get(headerSecFetchSite)); site {
		case "cross-site", "same-site":
			return browserCaller{}, status.Newf(codes.PermissionDenied,
				"a %s request without an Origin header is not allowed", site)
		}
		return browserCaller{}, nil
	}
	origin, err := normalizeOrigin(raw)
	if err != nil {
		return browserCaller{}, status.New(codes.PermissionDenied, err.Error())
	}
	c := browserCaller{origin: origin}
	switch {
	case origin == h.ownOrigin(r):
	case h.origins.named[origin]:
		c.named = true
	case h.origins.wildcard:
		c.wildcard = true
	default:
		return browserCaller{}, status.Newf(codes.PermissionDenied, "origin %s is not allowed", origin)
	}
	return c, nil
}

// ownOrigin is the bridge's origin as the browser sees it, in normal form:
// https when the request came over TLS, or when a trusted proxy that
// terminated TLS says so in X-Forwarded-Proto; the host of the Host
// header. It is "" when the Host header does not parse, which no Origin
// equals.
func (h *Handler) ownOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	} else if h.peerTrusted(r) {
		// The first entry is the proto of the proxy that the browser
		// reached; later ones are hops between proxies.
		proto, _, _ := strings.Cut(r.Header.Get(headerForwardedProto), ",")
		if p := strings.ToLower(strings.TrimSpace(proto)); p == "https" || p == "http" {
			scheme = p
		}
	}
	host, err := normalizeHost(r.Host, scheme)
	if err != nil {
		return ""
	}
	return scheme + "://" + host
}

// browserMetadata is the request metadata of a browser call that
// admitBrowser admitted: the allow-listed headers, without ambient
// credentials when only the wildcard admitted the page.
func (h *Handler) browserMetadata(r *http.Request, c browserCaller) (metadata.MD, time.Duration, error) {
	md, timeout, err := h.requestMD.requestMetadata(r, h.peerTrusted(r))
	if err != nil || !c.wildcard {
		return md, timeout, err
	}
	for _, k := range ambientCredentialKeys {
		delete(md, k)
	}
	return md, timeout, nil
}

// fromBrowser reports why a native gRPC request looks like a browser's
// fetch (an Origin or a Fetch Metadata header), or "" when it does not.
// Native gRPC forwards every header, credentials included, so browsers
// never reach it.
func fromBrowser(r *http.Request) string {
	if r.Header.Get(headerOrigin) != "" {
		return "Origin"
	}
	for name := range r.Header {
		if len(name) >= len(headerSecFetchPrefix) && strings.EqualFold(name[:len(headerSecFetchPrefix)], headerSecFetchPrefix) {
			return name
		}
	}
	return ""
}
