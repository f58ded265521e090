package bridge

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// CORS (Fetch standard, "CORS protocol") for the SSE transport: a page of
// another origin reads an event stream (EventSource, or fetch for POST and
// headers) only when the response names its origin.
const (
	headerACAllowOrigin      = "Access-Control-Allow-Origin"
	headerACAllowCredentials = "Access-Control-Allow-Credentials"
	headerACAllowHeaders     = "Access-Control-Allow-Headers"
	headerACAllowMethods     = "Access-Control-Allow-Methods"
	headerACMaxAge           = "Access-Control-Max-Age"
	headerACRequestMethod    = "Access-Control-Request-Method"
	headerACRequestHeaders   = "Access-Control-Request-Headers"
	headerVary               = "Vary"

	// corsMaxAgeSeconds lets a browser cache a preflight for ten minutes,
	// Chromium's own upper bound (Firefox allows a day).
	corsMaxAgeSeconds = 600
)

// setCORS adds the CORS response headers of an actual (not preflight)
// request that admitBrowser admitted as c. Only a cross-origin page on the
// allow-list may read the response; credentials
// ([WithCORSCredentials]) are allowed only to origins named on the list,
// never to those that "*" admits: "*" with credentials would let any site
// read a user's streams. A response that varies by Origin says so, so that
// caches keep one copy per origin.
func (h *Handler) setCORS(w http.ResponseWriter, c browserCaller) {
	if h.origins.empty() {
		return
	}
	hdr := w.Header()
	hdr.Add(headerVary, "Origin")
	if !c.named && !c.wildcard {
		return // no Origin, or the bridge's own: no CORS headers needed
	}
	hdr.Set(headerACAllowOrigin, c.origin)
	if c.named && h.cfg.corsCredentials {
		hdr.Set(headerACAllowCredentials, "true")
	}
}

// servePreflight answers a CORS preflight (OPTIONS) for a path that serves
// method name (for the log) with the HTTP methods allow ("GET, POST"): 204
// with those methods and the request headers the bridge accepts for an
// allowed origin, 403 with a JSON status for any other. An OPTIONS request
// without Origin is not a preflight; it gets 204 and Allow.
func (h *Handler) servePreflight(w http.ResponseWriter, r *http.Request, name, allow string) {
	hdr := w.Header()
	hdr.Set(headerAllow, allow+", "+http.MethodOptions)
	if r.Header.Get(headerOrigin) == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	hdr.Add(headerVary, "Origin")
	hdr.Add(headerVary, headerACRequestMethod)
	hdr.Add(headerVary, headerACRequestHeaders)
	c, ok := h.admitBrowser(w, r, name, "cors-preflight")
	if !ok {
		return
	}
	if !c.named && !c.wildcard {
		// Same origin: browsers do not preflight these, and no CORS
		// header is needed.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	hdr.Set(headerACAllowOrigin, c.origin)
	if c.named && h.cfg.corsCredentials {
		hdr.Set(headerACAllowCredentials, "true")
	}
	hdr.Set(headerACAllowMethods, allow)
	if names := h.corsRequestHeaders(r.Header.Values(headerACRequestHeaders)); names != "" {
		hdr.Set(headerACAllowHeaders, names)
	}
	hdr.Set(headerACMaxAge, strconv.Itoa(corsMaxAgeSeconds))
	w.WriteHeader(http.StatusNoContent)
}

// corsRequestHeaders returns, of the headers a preflight asks for, those
// the bridge reads: Content-Type, Last-Event-ID and the request headers on
// the metadata allow-list (which may hold prefixes, so the list is matched
// name by name rather than sent whole). Others are left out, and the
// browser does not send the request.
func (h *Handler) corsRequestHeaders(requested []string) string {
	var names []string
	for _, line := range requested {
		for name := range strings.SplitSeq(line, ",") {
			key := strings.ToLower(strings.TrimSpace(name))
			switch {
			case key == "":
				continue
			case key == "content-type", key == mdLastEventID, h.requestMD.allows(key):
				if !slices.Contains(names, key) {
					names = append(names, key)
				}
			}
		}
	}
	return strings.Join(names, ", ")
}

// annotatedPreflights collects the HTTP methods of each google.api.http
// path, so that the path answers CORS preflights for all of them: a page
// of another origin sends PUT, PATCH and DELETE (and POST with JSON) only
// after a preflight. Patterns keep the order they were registered in,
// which is the order grpc-gateway's router tries them in.
type annotatedPreflights struct {
	patterns []string
	name     map[string]string   // a method served at the pattern, for the log
	verbs    map[string][]string // the pattern's HTTP methods, in registration order
}

// add records that the route pattern serves method name with verb.
func (p *annotatedPreflights) add(pattern, name, verb string) {
	if p.verbs == nil {
		p.name, p.verbs = make(map[string]string), make(map[string][]string)
	}
	if _, ok := p.verbs[pattern]; !ok {
		p.patterns = append(p.patterns, pattern)
		p.name[pattern] = name
	}
	if !slices.Contains(p.verbs[pattern], verb) {
		p.verbs[pattern] = append(p.verbs[pattern], verb)
	}
}

// register adds an OPTIONS route for every pattern that has none of its
// own (a custom OPTIONS rule keeps its path). The patterns registered
// already, so registering them again cannot fail.
func (p *annotatedPreflights) register(h *Handler, mux *runtime.ServeMux) {
	for _, pattern := range p.patterns {
		verbs := p.verbs[pattern]
		if slices.Contains(verbs, http.MethodOptions) {
			continue
		}
		name, allow := p.name[pattern], strings.Join(verbs, ", ")
		_ = mux.HandlePath(http.MethodOptions, pattern, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			h.servePreflight(w, r, name, allow)
		})
	}
}
