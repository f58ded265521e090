package bridge

import (
	"context"
	"fmt"
	"google.golang.org/protobuf/reflect/protoregistry"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Content types the handler speaks.
const (
	contentTypeJSON        = "application/json"
	contentTypeEventStream = "text/event-stream; charset=utf-8"
	contentTypeGRPCPrefix  = "application/grpc"

	// wsSubprotocol is the WebSocket subprotocol of the bridge's protocol.
	wsSubprotocol = "grpc-ws.v1"
)

// Handler serves the exposed gRPC methods of its backends to browsers. See
// the package documentation for the URL and wire contract. Build one with
// [NewHandler]; it is safe for concurrent use.
type Handler struct {
	cfg        *config
	routes     atomic.Pointer[routes] // swapped whole by UpdateFiles
	codec      *codec
	requestMD  *headerMatcher
	origins    *originList // the allow-list of WithAllowedOrigins, normalized
	responseMD *headerMatcher
	log        *slog.Logger
	streams    *streams
	updateMu   sync.Mutex     // serialises UpdateFiles
	native     *nativeGRPC    // pass-through of native gRPC requests
	sessions   *sessionServer // nil unless WithSessions
}

var _ http.Handler = (*Handler)(nil)

// NewHandler builds a handler from the options. It fails when the options
// are inconsistent: nothing exposed, a pattern that matches nothing, an
// exposed service without a backend, an SSE option naming a field that does
// not exist, or a header allow-list entry that can never be forwarded.
func NewHandler(opts ...Option) (*Handler, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, codec: newCodec(cfg.files), log: cfg.logger, streams: newStreams(cfg.maxStreams, cfg.maxClientStreams)}
	h.native = newNativeGRPC(h)
	if h.origins, err = newOriginList(cfg.allowedOrigins); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if h.requestMD, err = newHeaderMatcher(cfg.requestHeaders); err != nil {
		return nil, fmt.Errorf("bridge: request headers: %w", err)
	}
	if h.responseMD, err = newHeaderMatcher(cfg.responseMetadata); err != nil {
		return nil, fmt.Errorf("bridge: response metadata: %w", err)
	}
	rt, err := buildRoutes(cfg, cfg.files, h)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	h.routes.Store(rt)
	if h.sessions, err = newSessionServer(h); err != nil { // session.go
		return nil, fmt.Errorf("bridge: %w", err)
	}
	return h, nil
}

// UpdateFiles replaces the schema, as after a reload of descriptor files or
// a new answer from server reflection. The new routes are built with the
// handler's options and swapped in whole: streams already open keep running
// on the schema they started with, new streams see the new one. On error
// (for example, an expose pattern that no longer matches anything) the
// handler keeps its current schema.
func (h *Handler) UpdateFiles(files *protoregistry.Files) error {
	// One update at a time, so the resolver and the routes always come
	// from the same schema.
	h.updateMu.Lock()
	defer h.updateMu.Unlock()
	rt, err := buildRoutes(h.cfg, files, h)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	keepSharedHubs(h.routes.Load(), rt) // unchanged methods keep their shared calls
	h.codec.types.setSchema(files)
	h.routes.Store(rt)
	return nil
}

// ServeHTTP dispatches a request for a method's gRPC path by transport
// (WebSocket upgrade, SSE or unary JSON over GET or POST), and hands every other path to
// the router of google.api.http annotations, which answers 404 for paths
// that are not an exposed method. A POST with a gRPC Content-Type, on any
// path, is a native gRPC call, proxied as it is (see serveGRPC).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Native gRPC first, whatever the path: an unknown or unexposed method
	// and the health service get gRPC statuses, not a JSON 404.
	if r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get(headerContentType), contentTypeGRPCPrefix) {
		h.serveGRPC(w, r)
		return
	}
	if h.sessions != nil && r.URL.Path == sessionPath {
		h.sessions.serveHTTP(w, r) // session_http.go
		return
	}
	// EscapedPath, not Path: a percent-encoded slash or dot must not reach a
	// method that the literal path does not name.
	rt := h.routes.Load()
	if m := rt.byPath[r.URL.EscapedPath()]; m != nil {
		h.serveMethod(w, r, m)
		return
	}
	rt.annotated.ServeHTTP(w, r)
}

// serveMethod serves a request for a method's gRPC path.
func (h *Handler) serveMethod(w http.ResponseWriter, r *http.Request, m *method) {
	switch r.Method {
	case http.MethodGet:
		if websocket.IsWebSocketUpgrade(r) {
			if c, ok := h.admitBrowser(w, r, m.name, TransportWebSocket); ok {
				h.serveWebSocket(w, r, m, c)
			}
			return
		}
		transport := callTransport(r, m)
		c, ok := h.admitBrowser(w, r, m.name, transport)
		if !ok {
			return
		}
		h.setCORS(w, c)
		// Any other upgrade (h2c, which curl --http2 asks for) is ignored,
		// as RFC 9110 section 7.8 allows. Upgrade: websocket without
		// Connection: Upgrade is a broken WebSocket handshake, though, not
		// a request for events: say what is missing.
		if headerHasToken(r.Header, "Upgrade", "websocket") {
			h.writeError(w, http.StatusBadRequest, status.Newf(codes.InvalidArgument,
				"%s: incomplete WebSocket handshake: send Connection: Upgrade with Upgrade: websocket and subprotocol %s, or open the method as Server-Sent Events",
				m.name, wsSubprotocol))
			return
		}
		if !m.safeGET {
			h.refuseGET(w, m)
			return
		}
		h.serveCall(w, r, m, c, transport, nil, binding{})
	case http.MethodPost:
		ct := r.Header.Get(headerContentType) // application/grpc went to serveGRPC in ServeHTTP
		transport := callTransport(r, m)
		c, ok := h.admitBrowser(w, r, m.name, transport)
		if !ok {
			return
		}
		h.setCORS(w, c)
		if !isJSON(ct) {
			h.writeError(w, http.StatusUnsupportedMediaType, status.Newf(codes.InvalidArgument,
				"%s: Content-Type %s is not supported; POST application/json", m.name, quoteName(ct)))
			return
		}
		h.serveCall(w, r, m, c, transport, nil, binding{body: "*"})
	case http.MethodOptions:
		h.servePreflight(w, r, m.name, m.allowedMethods())
	default:
		w.Header().Set(headerAllow, m.allowedMethods())
		h.writeError(w, http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented,
			"%s: HTTP method %s is not allowed; use %s", m.name, r.Method, strings.ReplaceAll(m.allowedMethods(), ", ", " or ")))
	}
}

// annotatedHandler serves one google.api.http binding of m: as unary JSON
// or SSE, as callTransport chooses.
func (h *Handler) annotatedHandler(m *method, b binding) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
		transport := callTransport(r, m)
		c, ok := h.admitBrowser(w, r, m.name, transport)
		if !ok {
			return
		}
		h.setCORS(w, c)
		if b.body != "" && !isJSON(r.Header.Get(headerContentType)) {
			h.writeError(w, http.StatusUnsupportedMediaType, status.Newf(codes.InvalidArgument,
				"%s: Content-Type %s is not supported; send application/json", m.name, quoteName(r.Header.Get(headerContentType))))
			return
		}
		h.serveCall(w, r, m, c, transport, pathParams, b)
	}
}

// routingError answers requests that match no exposed method, for
// grpc-gateway's router.
func (h *Handler) routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	var st *status.Status
	switch httpStatus {
	case http.StatusNotFound:
		st = status.Newf(codes.NotFound, "no exposed method at %s", r.URL.EscapedPath())
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		httpStatus = http.StatusMethodNotAllowed
		st = status.Newf(codes.Unimplemented, "HTTP method %s is not allowed at %s", r.Method, r.URL.EscapedPath())
	default:
		st = status.Newf(codes.InvalidArgument, "bad request path %s", r.URL.EscapedPath())
	}
	h.writeError(w, httpStatus, st)
}

// writeError answers a request that failed before its first byte with
// httpStatus and the status as a JSON google.rpc.Status.
func (h *Handler) writeError(w http.ResponseWriter, httpStatus int, st *status.Status) {
	hdr := w.Header()
	hdr.Set(headerContentType, contentTypeJSON)
	hdr.Set(headerCacheControl, "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(marshalStatus(h.codec, st, nil))
}

// writeStatus is writeError with the HTTP status that grpc-gateway maps the
// gRPC code to.
func (h *Handler) writeStatus(w http.ResponseWriter, st *status.Status) {
	h.writeError(w, httpStatusFromCode(st.Code()), st)
}

// isJSON reports whether a Content-Type is application/json in UTF-8, the
// only encoding that proto3 JSON allows.
func isJSON(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != contentTypeJSON {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}
