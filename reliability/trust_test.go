package reliability

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	binenc "encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	_ "google.golang.org/genproto/googleapis/rpc/errdetails" // google.rpc.RequestInfo, for protojson
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// The trust boundary (design.md, "Trust boundary"; docs/reliability.md,
// "Trust boundary"), tried as an attacker would: one table, one row per rule
// and transport. Every row runs against a bridge of its own in front of a
// backend that records every call it receives and the metadata it came
// with, and checks the exact answer (HTTP status and JSON status, gRPC
// status, or whether the WebSocket was upgraded) and what reached the
// backend: nothing, for a refusal; no cookie, for a page that only "*"
// admits.

const (
	quotePath  = "/demo.v1.TickerService/Quote"
	postPath   = "/demo.v1.ChatService/Post"
	evilOrigin = "https://evil.example"
	appOrigin  = "https://app.example"

	// A ticker stream that ends after one tick, at once.
	watchOne = tickerPath + "?symbol=TRUST&limit=1&interval_ms=1"
	// The JSON body of a ChatService/Post, and of a one-tick Watch.
	postBody  = `{"room":"trust","user":"mallory","text":"hi"}`
	watchBody = `{"symbol":"TRUST","limit":1,"intervalMs":1}`
	// A WebSocket metadata frame with ambient credentials in it.
	credentialFrame = `{"metadata":{"cookie":["session=secret"],"authorization":["Bearer secret"],"x-request-id":["trust"]}}`

	// noCode: the row does not check the status code (405s, whose code is
	// not part of the contract).
	noCode = codes.Code(1 << 31)
)

// via is the transport a row's request uses.
type via int

const (
	// viaHTTP is one HTTP request: HTTP/1.1 in cleartext, HTTP/2 over TLS.
	// SSE over GET and POST, unary JSON, annotated routes, preflights, and
	// gRPC-Web and Connect requests, which browsers send this way.
	viaHTTP via = iota
	// viaWS is a grpc-ws.v1 WebSocket: the handshake, then, once upgraded,
	// the row's metadata frame, one message, and the half-close.
	viaWS
	// viaGRPC is one native gRPC call over HTTP/2: h2c in cleartext (prior
	// knowledge), h2 over TLS.
	viaGRPC
)

// trustRow is one rule tried on one transport.
type trustRow struct {
	rule string // the rule the row shows, as docs/reliability.md lists it
	name string // transport and case

	// The bridge.
	opts []bridge.Option
	tls  bool // HTTPS with HTTP/2 instead of cleartext HTTP/1.1 and h2c
	dead bool // the backend's address refuses connections

	// The request. In host and header values, {self} is the bridge's
	// host:port and {port} its port.
	via        via
	method     string        // HTTP method; "" is GET, or POST when there is a body
	path       string        // path and query
	host       string        // Host header; "" is {self}
	header     http.Header   // request headers
	body       string        // viaHTTP: the body (Content-Type application/json unless the header says otherwise)
	msg        proto.Message // viaWS and viaGRPC: the request message
	wsMetadata string        // viaWS: the first frame, a metadata frame, when set

	// The answer.
	status int        // HTTP status: 101 for an upgraded WebSocket, 200 for gRPC over HTTP/2
	code   codes.Code // the JSON, gRPC or WebSocket status code (noCode: not checked)
	msgHas string     // a part of the status message that names the reason
	allow  string     // the Allow header, when set
	calls  int        // calls the backend received: 0 is refused before the backend
	sees   []string   // metadata keys that must reach the backend
	hides  []string   // metadata keys that must not
	// hidden: the status is the bridge's own, for a backend that cannot be
	// reached: "backend unavailable" with a request id, no address or port,
	// and the detail in the bridge's log under the same id.
	hidden bool
}

// trustRows is the table. Rows are grouped by rule; a refusal row's calls
// is 0, and it fails if the backend saw anything.
func trustRows() []trustRow {
	h := func(kv ...string) http.Header {
		hdr := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			hdr.Add(kv[i], kv[i+1])
		}
		return hdr
	}
	cookies := []bridge.Option{bridge.WithRequestHeaders("cookie", "authorization", "x-request-id")}
	withCookies := func(opts ...bridge.Option) []bridge.Option { return append(opts, cookies...) }
	wildcard := withCookies(bridge.WithAllowedOrigins("*"))
	named := withCookies(bridge.WithAllowedOrigins(appOrigin), bridge.WithCORSCredentials(true))
	proxied := []bridge.Option{bridge.WithTrustedProxies(netip.MustParsePrefix("127.0.0.0/8"))}
	internal := func(prefix string) []bridge.Option {
		return append([]bridge.Option{bridge.WithNativeGRPCNetworks(netip.MustParsePrefix(prefix))}, proxied...)
	}
	ambient := func(kv ...string) http.Header {
		return h(append([]string{"Cookie", "session=secret", "Authorization", "Bearer secret", "X-Request-Id", "trust"}, kv...)...)
	}
	quote := &demov1.QuoteRequest{Symbol: "TRUST"}
	echo := &demov1.EchoRequest{Text: "hi"}
	evil := h("Origin", evilOrigin)
	const (
		notAllowed = "origin https://evil.example is not allowed"
		opaque     = "the opaque origin null"
		browserMsg = "native gRPC is for internal callers"
		unknown    = "the caller's address is unknown"
	)
	xff := func(name string, lines ...string) trustRow {
		hdr := h()
		for _, l := range lines {
			hdr.Add("X-Forwarded-For", l)
		}
		return trustRow{rule: "forwarded-for", name: "grpc/" + name, opts: proxied, via: viaGRPC, path: quotePath, msg: quote,
			header: hdr, status: 200, code: codes.PermissionDenied, msgHas: unknown}
	}
	var thousand []string
	for range 1000 {
		thousand = append(thousand, "127.0.0.3") // every one a trusted proxy
	}

	return []trustRow{
		// --- Origins, on every browser-facing transport ---
		{rule: "origin", name: "sse-get/unlisted origin", via: viaHTTP, path: watchOne, header: evil,
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "sse-post/unlisted origin", via: viaHTTP, path: tickerPath, body: watchBody, header: evil,
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "unary-post/unlisted origin", via: viaHTTP, path: postPath, body: postBody, header: evil,
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "unary-get/unlisted origin", via: viaHTTP, path: quotePath + "?symbol=TRUST", header: evil,
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "annotated-get/unlisted origin", via: viaHTTP, path: "/v1/tickers/TRUST:watch?limit=1", header: evil,
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "annotated-post/unlisted origin", via: viaHTTP, path: "/v1/rooms/trust/messages", body: `{"text":"hi"}`, header: evil,
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "websocket/unlisted origin", via: viaWS, path: echoPath, msg: echo, header: evil,
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "preflight/unlisted origin", via: viaHTTP, method: "OPTIONS", path: postPath,
			header: h("Origin", evilOrigin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type"),
			status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "origin", name: "preflight/listed origin", opts: named, via: viaHTTP, method: "OPTIONS", path: postPath,
			header: h("Origin", appOrigin, "Access-Control-Request-Method", "POST"), status: 204},
		{rule: "origin", name: "sse-get/null", via: viaHTTP, path: watchOne, header: h("Origin", "null"),
			status: 403, code: codes.PermissionDenied, msgHas: opaque},
		{rule: "origin", name: "sse-post/null", via: viaHTTP, path: tickerPath, body: watchBody, header: h("Origin", "null"),
			status: 403, code: codes.PermissionDenied, msgHas: opaque},
		{rule: "origin", name: "unary-post/null", via: viaHTTP, path: postPath, body: postBody, header: h("Origin", "null"),
			status: 403, code: codes.PermissionDenied, msgHas: opaque},
		{rule: "origin", name: "websocket/null", via: viaWS, path: echoPath, msg: echo, header: h("Origin", "null"),
			status: 403, code: codes.PermissionDenied, msgHas: opaque},
		{rule: "origin", name: "websocket/null with * on the list", opts: wildcard, via: viaWS, path: echoPath, msg: echo, header: h("Origin", "null"),
			status: 403, code: codes.PermissionDenied, msgHas: opaque},
		{rule: "origin", name: "sse-get/not an origin (path)", via: viaHTTP, path: watchOne, header: h("Origin", "https://evil.example/x"),
			status: 403, code: codes.PermissionDenied, msgHas: "is not scheme://host[:port]"},
		{rule: "origin", name: "sse-get/own origin", via: viaHTTP, path: watchOne, header: h("Origin", "http://{self}"),
			status: 200, calls: 1},
		{rule: "origin", name: "websocket/own origin", via: viaWS, path: echoPath, msg: echo, header: h("Origin", "http://{self}"),
			status: 101, calls: 1},
		{rule: "origin", name: "sse-get/listed origin", opts: named, via: viaHTTP, path: watchOne, header: h("Origin", appOrigin),
			status: 200, calls: 1},
		{rule: "origin", name: "sse-get/mixed case and trailing dot (https)", tls: true, via: viaHTTP, path: watchOne,
			host: "bridge.example", header: h("Origin", "https://Bridge.Example."), status: 200, calls: 1},
		{rule: "origin", name: "websocket/mixed case and trailing dot", via: viaWS, path: echoPath, msg: echo,
			host: "bridge.example", header: h("Origin", "http://BRIDGE.example."), status: 101, calls: 1},
		{rule: "origin", name: "sse-get/sibling subdomain", via: viaHTTP, path: watchOne, host: "bridge.example",
			header: h("Origin", "http://app.bridge.example", "Sec-Fetch-Site", "same-site"),
			status: 403, code: codes.PermissionDenied, msgHas: "origin http://app.bridge.example is not allowed"},
		{rule: "origin", name: "sse-get/https default port in the Origin", tls: true, via: viaHTTP, path: watchOne,
			host: "h", header: h("Origin", "https://h:443"), status: 200, calls: 1},
		{rule: "origin", name: "sse-get/https default port in the Host", tls: true, via: viaHTTP, path: watchOne,
			host: "h:443", header: h("Origin", "https://h"), status: 200, calls: 1},
		{rule: "origin", name: "sse-get/http default port", via: viaHTTP, path: watchOne,
			host: "h", header: h("Origin", "http://h:80"), status: 200, calls: 1},
		{rule: "origin", name: "sse-get/other port", via: viaHTTP, path: watchOne,
			host: "h:8080", header: h("Origin", "http://h"), status: 403, code: codes.PermissionDenied, msgHas: "origin http://h is not allowed"},
		{rule: "origin", name: "sse-get/http page for an https bridge (TLS)", tls: true, via: viaHTTP, path: watchOne,
			header: h("Origin", "http://{self}"), status: 403, code: codes.PermissionDenied, msgHas: "origin http://{self} is not allowed"},
		{rule: "origin", name: "websocket/http page for an https bridge (TLS)", tls: true, via: viaWS, path: echoPath, msg: echo,
			header: h("Origin", "http://{self}"), status: 403, code: codes.PermissionDenied, msgHas: "origin http://{self} is not allowed"},
		{rule: "origin", name: "websocket/https page (TLS)", tls: true, via: viaWS, path: echoPath, msg: echo,
			header: h("Origin", "https://{self}"), status: 101, calls: 1},
		{rule: "origin", name: "sse-get/http page for an https bridge (X-Forwarded-Proto)", opts: proxied, via: viaHTTP, path: watchOne,
			host: "bridge.example", header: h("Origin", "http://bridge.example", "X-Forwarded-Proto", "https"),
			status: 403, code: codes.PermissionDenied, msgHas: "origin http://bridge.example is not allowed"},
		{rule: "origin", name: "sse-get/https page (X-Forwarded-Proto)", opts: proxied, via: viaHTTP, path: watchOne,
			host: "bridge.example", header: h("Origin", "https://bridge.example", "X-Forwarded-Proto", "https"), status: 200, calls: 1},
		{rule: "origin", name: "sse-get/X-Forwarded-Proto of an untrusted peer", via: viaHTTP, path: watchOne,
			host: "bridge.example", header: h("Origin", "https://bridge.example", "X-Forwarded-Proto", "https"),
			status: 403, code: codes.PermissionDenied, msgHas: "origin https://bridge.example is not allowed"},
		{rule: "origin", name: "sse-get/IPv6 literal", via: viaHTTP, path: watchOne,
			host: "[::1]:{port}", header: h("Origin", "http://[::1]:{port}"), status: 200, calls: 1},
		{rule: "origin", name: "websocket/IPv6 literal", via: viaWS, path: echoPath, msg: echo,
			host: "[::1]:{port}", header: h("Origin", "http://[::1]:{port}"), status: 101, calls: 1},
		{rule: "origin", name: "sse-get/IPv6 literal, other port", via: viaHTTP, path: watchOne,
			host: "[::1]:{port}", header: h("Origin", "http://[::1]:1"), status: 403, code: codes.PermissionDenied, msgHas: "origin http://[::1]:1 is not allowed"},

		// --- Fetch Metadata, for requests without an Origin ---
		{rule: "fetch-metadata", name: "sse-get/cross-site", via: viaHTTP, path: watchOne, header: h("Sec-Fetch-Site", "cross-site"),
			status: 403, code: codes.PermissionDenied, msgHas: "a cross-site request without an Origin header is not allowed"},
		{rule: "fetch-metadata", name: "sse-get/same-site", via: viaHTTP, path: watchOne, header: h("Sec-Fetch-Site", "same-site"),
			status: 403, code: codes.PermissionDenied, msgHas: "a same-site request without an Origin header is not allowed"},
		{rule: "fetch-metadata", name: "unary-get/cross-site (an <img>)", via: viaHTTP, path: quotePath + "?symbol=TRUST",
			header: h("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors", "Sec-Fetch-Dest", "image"),
			status: 403, code: codes.PermissionDenied, msgHas: "a cross-site request without an Origin header is not allowed"},
		{rule: "fetch-metadata", name: "annotated-get/same-site", via: viaHTTP, path: "/v1/tickers/TRUST:watch?limit=1",
			header: h("Sec-Fetch-Site", "same-site"), status: 403, code: codes.PermissionDenied, msgHas: "a same-site request without an Origin header is not allowed"},
		{rule: "fetch-metadata", name: "sse-get/same-origin", via: viaHTTP, path: watchOne, header: h("Sec-Fetch-Site", "same-origin"),
			status: 200, calls: 1},
		{rule: "fetch-metadata", name: "sse-get/none (typed in the address bar)", via: viaHTTP, path: watchOne, header: h("Sec-Fetch-Site", "none"),
			status: 200, calls: 1},
		{rule: "fetch-metadata", name: "sse-get/cross-site with a listed Origin", opts: named, via: viaHTTP, path: watchOne,
			header: h("Origin", appOrigin, "Sec-Fetch-Site", "cross-site"), status: 200, calls: 1},

		// --- Wildcards carry no credentials ---
		{rule: "wildcard", name: "sse-get/no cookie or authorization", opts: wildcard, via: viaHTTP, path: watchOne,
			header: ambient("Origin", evilOrigin), status: 200, calls: 1, sees: []string{"x-request-id"}, hides: []string{"cookie", "authorization"}},
		{rule: "wildcard", name: "sse-post/no cookie or authorization", opts: wildcard, via: viaHTTP, path: tickerPath, body: watchBody,
			header: ambient("Origin", evilOrigin), status: 200, calls: 1, sees: []string{"x-request-id"}, hides: []string{"cookie", "authorization"}},
		{rule: "wildcard", name: "unary-post/no cookie or authorization", opts: wildcard, via: viaHTTP, path: postPath, body: postBody,
			header: ambient("Origin", evilOrigin), status: 200, calls: 1, sees: []string{"x-request-id"}, hides: []string{"cookie", "authorization"}},
		{rule: "wildcard", name: "websocket/upgrade headers: no cookie or authorization", opts: wildcard, via: viaWS, path: echoPath, msg: echo,
			header: ambient("Origin", evilOrigin), status: 101, calls: 1, sees: []string{"x-request-id"}, hides: []string{"cookie", "authorization"}},
		{rule: "wildcard", name: "websocket/metadata frame: no cookie or authorization", opts: wildcard, via: viaWS, path: echoPath, msg: echo,
			header: evil, wsMetadata: credentialFrame, status: 101, calls: 1, sees: []string{"x-request-id"}, hides: []string{"cookie", "authorization"}},
		{rule: "wildcard", name: "sse-get/own origin keeps the cookie", opts: wildcard, via: viaHTTP, path: watchOne,
			header: ambient("Origin", "http://{self}"), status: 200, calls: 1, sees: []string{"cookie", "authorization"}},
		{rule: "wildcard", name: "sse-get/named origin keeps the cookie", opts: named, via: viaHTTP, path: watchOne,
			header: ambient("Origin", appOrigin), status: 200, calls: 1, sees: []string{"cookie", "authorization", "x-request-id"}},
		{rule: "wildcard", name: "websocket/named origin keeps the cookie", opts: named, via: viaWS, path: echoPath, msg: echo,
			header: ambient("Origin", appOrigin), status: 101, calls: 1, sees: []string{"cookie", "authorization", "x-request-id"}},
		{rule: "wildcard", name: "websocket/metadata frame: named origin keeps the cookie", opts: named, via: viaWS, path: echoPath, msg: echo,
			header: h("Origin", appOrigin), wsMetadata: credentialFrame, status: 101, calls: 1, sees: []string{"cookie", "authorization", "x-request-id"}},

		// --- GET runs no mutation ---
		{rule: "get-safe-only", name: "unary-get/ChatService/Post", via: viaHTTP, path: postPath + "?room=trust&text=hi",
			status: 405, code: noCode, allow: "POST"},
		{rule: "get-safe-only", name: "unary-get/ChatService/Post from the own origin", via: viaHTTP, path: postPath + "?room=trust&text=hi",
			header: h("Origin", "http://{self}", "Sec-Fetch-Site", "same-origin"), status: 405, code: noCode, allow: "POST"},
		{rule: "get-safe-only", name: "annotated-get/ChatService/Post", via: viaHTTP, path: "/v1/rooms/trust/messages?text=hi",
			status: 405, code: noCode},
		{rule: "get-safe-only", name: "unary-get/TickerService/Quote", via: viaHTTP, path: quotePath + "?symbol=TRUST",
			status: 200, calls: 1},
		{rule: "get-safe-only", name: "annotated-get/TickerService/Quote", via: viaHTTP, path: "/v1/tickers/TRUST",
			status: 200, calls: 1},

		// --- Native gRPC is for internal callers only ---
		{rule: "grpc-internal", name: "grpc/loopback caller", via: viaGRPC, path: quotePath, msg: quote, status: 200, calls: 1},
		{rule: "grpc-internal", name: "grpc/Origin", via: viaGRPC, path: quotePath, msg: quote, header: evil,
			status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc/own Origin", via: viaGRPC, path: quotePath, msg: quote, header: h("Origin", "http://{self}"),
			status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc/Sec-Fetch-Site", via: viaGRPC, path: quotePath, msg: quote, header: h("Sec-Fetch-Site", "same-origin"),
			status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc/Sec-Fetch-Mode alone", via: viaGRPC, path: quotePath, msg: quote, header: h("Sec-Fetch-Mode", "cors"),
			status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc/sec-fetch-dest in lower case", via: viaGRPC, path: quotePath, msg: quote, header: h("sec-fetch-dest", "empty"),
			status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc/Origin over TLS", tls: true, via: viaGRPC, path: quotePath, msg: quote, header: evil,
			status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc/Origin from an internal network", opts: internal("10.0.0.0/8"), via: viaGRPC, path: quotePath, msg: quote,
			header: h("Origin", evilOrigin, "X-Forwarded-For", "10.0.0.5"), status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc-web/application/grpc-web", via: viaHTTP, path: quotePath, body: "\x00\x00\x00\x00\x00",
			header: h("Origin", evilOrigin, "Content-Type", "application/grpc-web"), status: 403, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc-web/application/grpc-web-text", via: viaHTTP, path: quotePath, body: "AAAAAAA=",
			header: h("Origin", evilOrigin, "Content-Type", "application/grpc-web-text"), status: 403, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc-web/application/grpc-web+proto, own origin", via: viaHTTP, path: quotePath, body: "\x00\x00\x00\x00\x00",
			header: h("Origin", "http://{self}", "Content-Type", "application/grpc-web+proto"), status: 403, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "grpc-web/over HTTP/2 with Sec-Fetch-Site", via: viaGRPC, path: quotePath, msg: quote,
			header: h("Sec-Fetch-Site", "cross-site", "Content-Type", "application/grpc-web"), status: 200, code: codes.PermissionDenied, msgHas: browserMsg},
		{rule: "grpc-internal", name: "connect/application/connect+proto", via: viaHTTP, path: quotePath, body: "\x00\x00\x00\x00\x00",
			header: h("Origin", evilOrigin, "Content-Type", "application/connect+proto"), status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "grpc-internal", name: "connect/unary application/proto", via: viaHTTP, path: postPath, body: "\x0a\x01x",
			header: h("Origin", evilOrigin, "Content-Type", "application/proto", "Connect-Protocol-Version", "1"), status: 403, code: codes.PermissionDenied, msgHas: notAllowed},
		{rule: "grpc-internal", name: "connect/unary application/proto, own origin", via: viaHTTP, path: postPath, body: "\x0a\x01x",
			header: h("Origin", "http://{self}", "Content-Type", "application/proto", "Connect-Protocol-Version", "1"), status: 415, code: codes.InvalidArgument},
		{rule: "grpc-internal", name: "grpc/no network at all", opts: []bridge.Option{bridge.WithNativeGRPCNetworks()}, via: viaGRPC, path: quotePath, msg: quote,
			status: 200, code: codes.PermissionDenied, msgHas: "127.0.0.1 is not in one"},

		// --- X-Forwarded-For is parsed strictly and fails closed ---
		xff("several lines, one malformed", "garbage", "127.0.0.2"),
		xff("empty entry", "10.0.0.5,,127.0.0.2"),
		xff("empty last entry", "127.0.0.2,"),
		xff("empty line", "", "127.0.0.2"),
		xff("port", "203.0.113.7:4711"),
		xff("garbage", "garbage"),
		xff("bracketed IPv6 with port", "[2001:db8::1]:443"),
		xff("bracketed IPv6", "[2001:db8::1]"),
		xff("spaces inside an entry", "203.0.113.7 127.0.0.2"),
		xff("IPv6 zone", "fe80::1%eth0"),
		xff("unknown (RFC 7239 token)", "unknown"),
		xff("1,000 trusted entries", strings.Join(thousand, ", ")),
		{rule: "forwarded-for", name: "grpc/internal client, loopback-only default", opts: proxied, via: viaGRPC, path: quotePath, msg: quote,
			header: h("X-Forwarded-For", "10.0.0.5"), status: 200, code: codes.PermissionDenied, msgHas: "10.0.0.5 is not in one"},
		{rule: "forwarded-for", name: "grpc/internal client, networks include it", opts: internal("10.0.0.0/8"), via: viaGRPC, path: quotePath, msg: quote,
			header: h("X-Forwarded-For", "10.0.0.5"), status: 200, calls: 1},
		{rule: "forwarded-for", name: "grpc/internal client through two proxies", opts: internal("10.0.0.0/8"), via: viaGRPC, path: quotePath, msg: quote,
			header: h("X-Forwarded-For", "10.0.0.5, 127.0.0.2", "X-Forwarded-For", "127.0.0.3"), status: 200, calls: 1},
		{rule: "forwarded-for", name: "grpc/internal client, networks exclude it", opts: internal("192.168.0.0/16"), via: viaGRPC, path: quotePath, msg: quote,
			header: h("X-Forwarded-For", "10.0.0.5"), status: 200, code: codes.PermissionDenied, msgHas: "10.0.0.5 is not in one"},
		{rule: "forwarded-for", name: "grpc/forged chain from an untrusted peer is ignored", via: viaGRPC, path: quotePath, msg: quote,
			header: h("X-Forwarded-For", "garbage"), status: 200, calls: 1},
		{rule: "forwarded-for", name: "grpc/public client spoofing an internal hop", opts: internal("10.0.0.0/8"), via: viaGRPC, path: quotePath, msg: quote,
			header: h("X-Forwarded-For", "10.0.0.5, 203.0.113.7"), status: 200, code: codes.PermissionDenied, msgHas: "203.0.113.7 is not in one"},

		// --- Errors reveal no internals ---
		{rule: "no-internals", name: "sse-get/backend down", dead: true, via: viaHTTP, path: watchOne, status: 200, code: codes.Unavailable, hidden: true},
		{rule: "no-internals", name: "sse-post/backend down", dead: true, via: viaHTTP, path: tickerPath, body: watchBody, status: 200, code: codes.Unavailable, hidden: true},
		{rule: "no-internals", name: "unary-post/backend down", dead: true, via: viaHTTP, path: postPath, body: postBody, status: 503, code: codes.Unavailable, hidden: true},
		{rule: "no-internals", name: "websocket/backend down", dead: true, via: viaWS, path: echoPath, msg: echo, status: 101, code: codes.Unavailable, hidden: true},
		{rule: "no-internals", name: "grpc/backend down", dead: true, via: viaGRPC, path: quotePath, msg: quote, status: 200, code: codes.Unavailable, hidden: true},
	}
}

func TestTrustBoundary(t *testing.T) {
	for _, row := range trustRows() {
		t.Run(row.rule+"/"+row.name, func(t *testing.T) {
			t.Parallel()
			env := newTrustEnv(t, row)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			res := env.send(ctx, t, row)
			env.check(t, row, res)
		})
	}
}

// --- the bridge and its backend -------------------------------------------

// trustEnv is one row's bridge, in front of a recording demo backend (or an
// address that refuses connections), with clients for each transport.
type trustEnv struct {
	self        string // the bridge's host:port
	scheme      string // http or https
	http        *http.Client
	h2          *http.Client // HTTP/2 only: h2c, or h2 over TLS
	ws          *websocket.Dialer
	calls       *callRecorder
	logs        *logRecorder
	backendAddr string
}

func newTrustEnv(t *testing.T, row trustRow) *trustEnv {
	t.Helper()
	e := &trustEnv{calls: &callRecorder{}, logs: &logRecorder{}}
	if row.dead {
		e.backendAddr = refusingAddr(t)
	} else {
		be := newBackend(t)
		be.opts = e.calls.serverOptions()
		be.start()
		e.backendAddr = be.addr
	}
	h, err := bridge.NewHandler(append([]bridge.Option{
		bridge.WithBackend(dialFast(t, e.backendAddr)),
		bridge.WithExpose("demo.v1.*"),
		bridge.WithRetryInterval(50 * time.Millisecond),
		bridge.WithLogger(slog.New(e.logs)),
	}, row.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	pl := &panicLog{}
	srv.Config.ErrorLog = newLogger(pl)
	e.ws = &websocket.Dialer{Subprotocols: []string{subproto}, HandshakeTimeout: 10 * time.Second}
	if row.tls {
		srv.EnableHTTP2 = true
		srv.StartTLS()
		e.scheme = "https"
		e.http = srv.Client()
		e.h2 = srv.Client()
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		e.ws.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	} else {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Start()
		e.scheme = "http"
		e.http = newHTTPClient(t)
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		t.Cleanup(tr.CloseIdleConnections)
		e.h2 = &http.Client{Transport: tr}
	}
	e.self = srv.Listener.Addr().String()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		pl.check(t)
	})
	return e
}

// refusingAddr returns a loopback address that refuses connections: a
// socket bound to it and never listening holds the port for the test, so
// that no other test's listener can take it.
func refusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// callRecorder records every call a backend receives, with its metadata.
type callRecorder struct {
	mu    sync.Mutex
	calls []recordedCall
}

type recordedCall struct {
	method string
	md     metadata.MD
}

// serverOptions are the interceptors that record the calls.
func (r *callRecorder) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			r.record(ctx, info.FullMethod)
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			r.record(ss.Context(), info.FullMethod)
			return handler(srv, ss)
		}),
	}
}

func (r *callRecorder) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, recordedCall{method: method, md: md.Copy()})
}

func (r *callRecorder) all() []recordedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedCall(nil), r.calls...)
}

// logRecorder is a slog.Handler that keeps every record, its attributes
// flattened to strings. The bridge logs through one logger without
// attributes or groups of its own, so WithAttrs and WithGroup keep none.
type logRecorder struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool {
		rec[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, rec)
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) all() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]map[string]string(nil), l.recs...)
}

// --- sending a row's request -------------------------------------------------

// trustResult is what the client got.
type trustResult struct {
	status int
	header http.Header
	st     *status // nil when the answer carries none
	raw    string  // every byte of the answer a browser could read
}

// expand replaces {self} and {port} with the bridge's address.
func (e *trustEnv) expand(s string) string {
	_, port, _ := net.SplitHostPort(e.self)
	return strings.NewReplacer("{self}", e.self, "{port}", port).Replace(s)
}

func (e *trustEnv) requestHeader(row trustRow) http.Header {
	hdr := http.Header{}
	for k, vs := range row.header {
		for _, v := range vs {
			hdr[k] = append(hdr[k], e.expand(v)) // as given: "sec-fetch-dest" stays lower case
		}
	}
	return hdr
}

func (e *trustEnv) send(ctx context.Context, t *testing.T, row trustRow) trustResult {
	t.Helper()
	switch row.via {
	case viaWS:
		return e.sendWS(ctx, t, row)
	case viaGRPC:
		return e.sendGRPC(ctx, t, row)
	}
	method := row.method
	if method == "" {
		method = http.MethodGet
		if row.body != "" {
			method = http.MethodPost
		}
	}
	var body io.Reader
	if row.body != "" {
		body = strings.NewReader(row.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.scheme+"://"+e.self+row.path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = e.requestHeader(row)
	if row.body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if row.host != "" {
		req.Host = e.expand(row.host)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, row.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v (%q)", method, row.path, err, b)
	}
	res := trustResult{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "text/event-stream"):
		// The status is the end or error event's.
		for _, ev := range readAllEvents(t, string(b)) {
			if ev.Type == "end" || ev.Type == "error" {
				res.st = decodeStatus(t, []byte(ev.Data))
			}
		}
	case strings.HasPrefix(ct, "application/json") && resp.StatusCode != http.StatusOK:
		res.st = decodeStatus(t, b)
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent:
		res.st = &status{} // a message, or a preflight's answer: OK
	}
	return res
}

func decodeStatus(t *testing.T, b []byte) *status {
	t.Helper()
	var st status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%q is not a JSON status: %v", b, err)
	}
	return &st
}

// sendWS opens the WebSocket; once upgraded, it sends the row's metadata
// frame, its message and the half-close, and reads to the close frame.
func (e *trustEnv) sendWS(ctx context.Context, t *testing.T, row trustRow) trustResult {
	t.Helper()
	hdr := e.requestHeader(row)
	if row.host != "" {
		hdr.Set("Host", e.expand(row.host))
	}
	scheme := "ws"
	if e.scheme == "https" {
		scheme = "wss"
	}
	conn, resp, err := e.ws.DialContext(ctx, scheme+"://"+e.self+row.path, hdr)
	if err != nil {
		if resp == nil {
			t.Fatalf("WebSocket %s: no answer: %v", row.path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res := trustResult{status: resp.StatusCode, header: resp.Header, raw: string(b)}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			res.st = decodeStatus(t, b)
		}
		return res
	}
	defer conn.Close()
	// Write from a goroutine: a bridge that ends the call may stop reading.
	written := make(chan error, 1)
	go func() {
		var frames []wsFrame
		if row.wsMetadata != "" {
			frames = append(frames, text(row.wsMetadata))
		}
		frames = append(frames, binary(mustMarshal(row.msg)), text(`{"end":true}`))
		for _, f := range frames {
			if err := conn.WriteMessage(f.typ, f.data); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	deadline, _ := ctx.Deadline()
	fin := wsReadToEnd(conn, deadline)
	<-written
	res := trustResult{status: resp.StatusCode, header: resp.Header, st: fin.st}
	if fin.st != nil {
		b, _ := json.Marshal(fin.st)
		res.raw = string(b) + " close " + strconv.Itoa(fin.closeCode)
	} else {
		t.Errorf("WebSocket %s: no status frame (close %d, %v)", row.path, fin.closeCode, fin.err)
	}
	return res
}

// sendGRPC makes one native gRPC call by hand, so that the row controls
// every header: Content-Type, Origin, Sec-Fetch-*, each X-Forwarded-For
// line.
func (e *trustEnv) sendGRPC(ctx context.Context, t *testing.T, row trustRow) trustResult {
	t.Helper()
	msg := mustMarshal(row.msg)
	frame := make([]byte, 5, 5+len(msg))
	binenc.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.scheme+"://"+e.self+row.path, bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = e.requestHeader(row)
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/grpc")
	}
	req.Header.Set("Te", "trailers")
	resp, err := e.h2.Do(req)
	if err != nil {
		t.Fatalf("gRPC %s: %v", row.path, err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("gRPC %s over %s", row.path, resp.Proto)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // the trailers come after the body
	get := func(k string) string {
		if v := resp.Trailer.Get(k); v != "" {
			return v
		}
		return resp.Header.Get(k) // a trailers-only answer
	}
	res := trustResult{status: resp.StatusCode, header: resp.Header}
	code, err := strconv.Atoi(get("Grpc-Status"))
	if err != nil {
		t.Fatalf("gRPC %s: HTTP %d without a grpc-status", row.path, resp.StatusCode)
	}
	msgText, _ := url.PathUnescape(get("Grpc-Message"))
	res.st = &status{Code: code, Message: msgText}
	res.raw = get("Grpc-Message")
	if bin := get("Grpc-Status-Details-Bin"); bin != "" {
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(bin, "="))
		if err != nil {
			t.Fatalf("grpc-status-details-bin %q: %v", bin, err)
		}
		var p spb.Status
		if err := proto.Unmarshal(b, &p); err != nil {
			t.Fatalf("grpc-status-details-bin: %v", err)
		}
		for _, d := range p.GetDetails() {
			j, err := protojson.Marshal(d)
			if err != nil {
				t.Fatalf("detail %s: %v", d.GetTypeUrl(), err)
			}
			res.st.Details = append(res.st.Details, j)
			res.raw += " " + string(j)
		}
	}
	return res
}

// --- checking the answer ------------------------------------------------------

func (e *trustEnv) check(t *testing.T, row trustRow, res trustResult) {
	t.Helper()
	if res.status != row.status {
		t.Errorf("HTTP %d (%.300s); want %d", res.status, res.raw, row.status)
	}
	if row.via == viaWS && row.status != 101 && res.status == 101 {
		t.Errorf("the WebSocket was upgraded")
	}
	if row.allow != "" && res.header.Get("Allow") != row.allow {
		t.Errorf("Allow %q; want %q", res.header.Get("Allow"), row.allow)
	}
	if row.code != noCode {
		switch {
		case res.st == nil:
			t.Errorf("no status in the answer (%.300s); want %s", res.raw, row.code)
		case codes.Code(res.st.Code) != row.code || !strings.Contains(res.st.Message, e.expand(row.msgHas)):
			t.Errorf("status %s %q; want %s with %q", codes.Code(res.st.Code), res.st.Message, row.code, e.expand(row.msgHas))
		}
	}
	if row.hidden {
		e.checkHidden(t, res)
		return
	}
	if res.status == http.StatusForbidden {
		e.checkRefusalLogged(t, row)
	}
	calls := e.calls.all()
	if len(calls) != row.calls {
		t.Errorf("the backend received %d calls %v; want %d", len(calls), methods(calls), row.calls)
	}
	for _, c := range calls {
		for _, k := range row.sees {
			if len(c.md.Get(k)) == 0 {
				t.Errorf("%s: the backend did not receive %s; metadata %v", c.method, k, c.md)
			}
		}
		for _, k := range row.hides {
			if v := c.md.Get(k); len(v) > 0 {
				t.Errorf("%s: the backend received %s %q", c.method, k, v)
			}
		}
	}
}

func methods(calls []recordedCall) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.method)
	}
	return out
}

// checkRefusalLogged checks that a refused browser request left an Info
// line with its origin, so that an operator can see why a page fails.
func (e *trustEnv) checkRefusalLogged(t *testing.T, row trustRow) {
	t.Helper()
	origin := e.expand(row.header.Get("Origin"))
	for _, rec := range e.logs.all() {
		if rec["msg"] == "request refused" && rec["level"] == "INFO" && rec["origin"] == origin && rec["reason"] != "" {
			return
		}
	}
	t.Errorf("no Info line \"request refused\" with origin %q and a reason; the log: %v", origin, e.logs.all())
}

// checkHidden checks a status the bridge made for a backend it cannot
// reach: an actionable message, a request id, nothing internal, and the
// detail in the bridge's log under the same id.
func (e *trustEnv) checkHidden(t *testing.T, res trustResult) {
	t.Helper()
	if res.st == nil {
		return // reported by check
	}
	if res.st.Message != "backend unavailable" {
		t.Errorf("message %q; want %q", res.st.Message, "backend unavailable")
	}
	_, port, _ := net.SplitHostPort(e.backendAddr)
	for _, internal := range []string{"127.0.0.1", ":" + port, "dial", "refused", "transport", "connection error"} {
		if strings.Contains(res.raw, internal) {
			t.Errorf("the answer names %q: %s", internal, res.raw)
		}
	}
	id := requestInfoID(t, res.st)
	if id == "" {
		t.Fatalf("no google.rpc.RequestInfo with a request id in the details: %s", res.raw)
	}
	for _, rec := range e.logs.all() {
		if rec["request_id"] == id && strings.Contains(rec["message"], e.backendAddr) {
			return
		}
	}
	t.Errorf("no log record with request_id %s and a message naming %s; the log: %v", id, e.backendAddr, e.logs.all())
}

// requestInfoID returns the request id of the status's RequestInfo
// detail, or "".
func requestInfoID(t *testing.T, st *status) string {
	t.Helper()
	for _, d := range st.Details {
		var info struct {
			Type      string `json:"@type"`
			RequestID string `json:"requestId"`
		}
		if json.Unmarshal(d, &info) == nil && strings.HasSuffix(info.Type, "/google.rpc.RequestInfo") {
			return info.RequestID
		}
	}
	return ""
}
