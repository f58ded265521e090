package bridge

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A separate port for native gRPC. By default the handler serves native
// gRPC beside the browser transports, on whatever port serves it. A program
// that wants port-based isolation (internal callers on a port that only the
// cluster network reaches, browsers on the public one) serves
// [Handler.GRPCHandler] on the internal port and builds the handler with
// [WithNativeGRPCOnlyOnGRPCHandler], so that the public port refuses native
// gRPC outright.

// msgNativeGRPCElsewhere is the message of the refusal of native gRPC on
// the public handler. It names no address: the caller is told where to
// look, not what the internal network is.
const msgNativeGRPCElsewhere = "native gRPC is served on the internal port only"

// grpcPortKey is the request context key that marks a request as having
// come through [Handler.GRPCHandler].
type grpcPortKey struct{}

// WithNativeGRPCOnlyOnGRPCHandler makes native gRPC (a POST with
// Content-Type application/grpc*) reachable only through
// [Handler.GRPCHandler]: the handler itself ([Handler.ServeHTTP]) refuses
// it with PERMISSION_DENIED before any backend call, the bridge's health
// service included. Serve GRPCHandler on a listener that only internal
// callers reach. [WithNativeGRPCNetworks] and [WithTrustedProxies] still
// apply to the calls GRPCHandler serves. Defaults to off: ServeHTTP serves
// native gRPC beside the browser transports.
func WithNativeGRPCOnlyOnGRPCHandler() Option {
	return optionFunc(func(c *config) { c.nativeGRPCOnlyOnGRPCHandler = true })
}

// GRPCHandler returns an [http.Handler] that serves native gRPC and nothing
// else: pass-through calls to the exposed methods and the bridge's own
// grpc.health.v1.Health, exactly as [Handler.ServeHTTP] serves them. Any
// other request gets a JSON error (404, or 415 for a POST in another
// Content-Type). Serve it over cleartext HTTP/2 with prior knowledge (h2c)
// or TLS; [Handler.Shutdown] drains its calls too.
func (h *Handler) GRPCHandler() http.Handler {
	return grpcPortHandler{h}
}

// grpcPortHandler is [Handler.GRPCHandler]'s handler.
type grpcPortHandler struct{ h *Handler }

func (p grpcPortHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get(headerContentType)
	switch {
	case r.Method == http.MethodPost && strings.HasPrefix(ct, contentTypeGRPCPrefix):
		// serveGRPC refuses what grpc-go would not serve (gRPC-Web,
		// HTTP/1.1) with a JSON status of its own.
		p.h.serveGRPC(w, r.WithContext(context.WithValue(r.Context(), grpcPortKey{}, true)))
	case r.Method == http.MethodPost:
		p.h.writeError(w, http.StatusUnsupportedMediaType, status.Newf(codes.InvalidArgument,
			"this port serves native gRPC only, and Content-Type %s is not gRPC: send application/grpc over HTTP/2", quoteName(ct)))
	default:
		p.h.writeError(w, http.StatusNotFound, status.New(codes.NotFound,
			"this port serves native gRPC only: POST application/grpc over HTTP/2"))
	}
}

// refuseNativeGRPCHere answers a native gRPC request that reached the
// public handler while [WithNativeGRPCOnlyOnGRPCHandler] is on, and reports
// whether it did: a gRPC PERMISSION_DENIED for gRPC clients, JSON 403 over
// HTTP/1.1 (see [writeGRPCRefusal]).
func (h *Handler) refuseNativeGRPCHere(w http.ResponseWriter, r *http.Request) bool {
	if !h.cfg.nativeGRPCOnlyOnGRPCHandler || r.Context().Value(grpcPortKey{}) != nil {
		return false
	}
	writeGRPCRefusal(w, r, h, status.New(codes.PermissionDenied, msgNativeGRPCElsewhere))
	return true
}
