package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// CORS for SSE: only allow-listed origins get Access-Control-Allow-Origin
// (their exact origin, never "*"), credentials only when configured and
// only for named origins; requests and preflights of other origins are
// refused (reliability/trust_test.go has the whole trust boundary).
func TestCORS(t *testing.T) {
	const app, evil = "https://app.example", "https://evil.example"
	for _, tc := range []struct {
		name        string
		opts        []bridge.Option
		method      string
		origin      string
		reqHeaders  string
		status      int
		allowOrigin string
		credentials string
		allowHeader string
	}{
		{"default: another origin refused", nil, "GET", evil, "", 403, "", "", ""},
		{"default: preflight from another origin refused", nil, "OPTIONS", evil, "authorization", 403, "", "", ""},
		{"listed origin reads the stream", []bridge.Option{bridge.WithAllowedOrigins(app)}, "GET", app, "", 200, app, "", ""},
		{"unlisted origin refused", []bridge.Option{bridge.WithAllowedOrigins(app)}, "GET", evil, "", 403, "", "", ""},
		{"listed origin's preflight", []bridge.Option{bridge.WithAllowedOrigins(app)}, "OPTIONS", app,
			"Authorization, Last-Event-ID, Content-Type, Cookie, X-Evil", 204, app, "", "authorization, last-event-id, content-type"},
		{"unlisted origin's preflight", []bridge.Option{bridge.WithAllowedOrigins(app)}, "OPTIONS", evil, "authorization", 403, "", "", ""},
		{"credentials when configured", []bridge.Option{bridge.WithAllowedOrigins(app), bridge.WithCORSCredentials(true)}, "GET", app, "", 200, app, "true", ""},
		{"credentials in the preflight", []bridge.Option{bridge.WithAllowedOrigins(app), bridge.WithCORSCredentials(true)}, "OPTIONS", app, "authorization", 204, app, "true", "authorization"},
		{"* admits, with the exact origin", []bridge.Option{bridge.WithAllowedOrigins("*")}, "GET", evil, "", 200, evil, "", ""},
		{"* never gets credentials", []bridge.Option{bridge.WithAllowedOrigins("*"), bridge.WithCORSCredentials(true)}, "GET", evil, "", 200, evil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newMemBridge(t, tc.opts...)
			client := newHTTPClient(t)
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tickerPath+"?symbol=CORS&limit=1", nil)
			req.Header.Set("Origin", tc.origin)
			if tc.method == "OPTIONS" {
				req.Header.Set("Access-Control-Request-Method", "GET")
				req.Header.Set("Access-Control-Request-Headers", tc.reqHeaders)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			h := resp.Header
			if resp.StatusCode != tc.status || h.Get("Access-Control-Allow-Origin") != tc.allowOrigin ||
				h.Get("Access-Control-Allow-Credentials") != tc.credentials || h.Get("Access-Control-Allow-Headers") != tc.allowHeader {
				t.Errorf("HTTP %d, Allow-Origin %q, Allow-Credentials %q, Allow-Headers %q (%s); want %d, %q, %q, %q",
					resp.StatusCode, h.Get("Access-Control-Allow-Origin"), h.Get("Access-Control-Allow-Credentials"),
					h.Get("Access-Control-Allow-Headers"), body, tc.status, tc.allowOrigin, tc.credentials, tc.allowHeader)
			}
			if tc.allowOrigin != "" && h.Get("Vary") == "" {
				t.Errorf("no Vary header with Access-Control-Allow-Origin")
			}
			if tc.status == 403 {
				checkStatusBody(t, h, body, codes.PermissionDenied, fmt.Sprintf("origin %s is not allowed", tc.origin))
			}
		})
	}
}

// A connection flood from one address: the per-client limit admits
// exactly its number of streams and answers the rest 429 at once, a
// forged X-Forwarded-For from an untrusted peer does not get around it,
// the total limit answers 503 with a retry (SSE: 200, retry hint,
// UNAVAILABLE), and every slot is free again afterwards.
func TestConnectionFloodFromOneAddress(t *testing.T) {
	const perClient, flood = 20, 400
	srv, _ := newMemBridge(t, bridge.WithMaxStreamsPerClient(perClient), bridge.WithMaxStreams(1000))
	client := newHTTPClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	// Hold perClient streams open.
	held := make(chan *http.Response, perClient)
	for i := range perClient {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s%s?symbol=HOLD%d&interval_ms=1000", srv.URL, tickerPath, i), nil)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d under the limit: %v %v", i, resp, err)
		}
		held <- resp
	}
	// Flood: every further stream, forged X-Forwarded-For or not, is refused.
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s%s?symbol=FLOOD%d&limit=1", srv.URL, tickerPath, i), nil)
			if i%2 == 0 {
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.0.%d.%d", i/256, i%256))
			}
			resp, err := client.Do(req)
			code := -1
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			got[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got[http.StatusTooManyRequests] != flood {
		t.Errorf("flood answers %v; want all %d refused with 429", got, flood)
	}
	close(held)
	for resp := range held {
		resp.Body.Close()
	}
	// The slots free up: a new stream is served.
	waitFor(t, "the per-client slots are free again", func() bool {
		resp, err := client.Get(srv.URL + tickerPath + "?symbol=AFTER&limit=1&interval_ms=1")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
}

// A flood of 1,000 connections from one address that never finish their
// request headers (slowloris) does not starve the bridge process: a normal
// stream is served at once, and the server's ReadHeaderTimeout closes the
// idle ones.
func TestIdleConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a bridge process")
	}
	be := newBackend(t)
	be.start()
	addr := freeAddr(t)
	startProc(t, addr, buildBinary(t, "./cmd/bridge"), "-addr", addr, "-backend", be.addr, "-descriptors", "builtin", "-expose", "demo.v1.*", "-log-level", "error")
	const idle = 1000
	conns := make([]io.Closer, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := smallBufferDialer.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial after %d: %v", len(conns), err)
		}
		_, _ = c.Write([]byte("GET " + tickerPath + "?symbol=X HTTP/1.1\r\n")) // and never finish the headers
		conns = append(conns, c)
	}
	client := newHTTPClient(t)
	start := time.Now()
	resp, err := client.Get("http://" + addr + tickerPath + "?symbol=OK&limit=2&interval_ms=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || time.Since(start) > 5*time.Second {
		t.Errorf("with %d idle connections open: HTTP %d after %v (%q)", idle, resp.StatusCode, time.Since(start), body)
	}
}
