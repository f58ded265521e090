package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// npmTimeout bounds the whole of TestNPMPackage's work outside the browser:
// packing, installing from the registry, type-checking, bundling and
// building the bridge.
const npmTimeout = 5 * time.Minute

// TestNPMPackage checks @grpcbridge/client as a user gets it: npm pack
// (what npm publish would upload), installed from the tarball into a
// scratch project outside the repository with @bufbuild/protobuf, type-checked
// strictly against the installed .d.ts (with bundler and with Node.js
// resolution), bundled with esbuild, and run in Chromium from a page of
// another origin against a live bridge process (cmd/bridge -demo): a few
// ticks over EventSource, a quote as plain JSON and a failing one, and an
// echo over a WebSocket. It needs npm and the registry, so only make npmpack
// (BRIDGE_NPM_PACKAGE=1) runs it.
func TestNPMPackage(t *testing.T) {
	if os.Getenv("BRIDGE_NPM_PACKAGE") != "1" {
		t.Skip("needs npm and its registry: make npmpack runs it (BRIDGE_NPM_PACKAGE=1)")
	}
	browserCtx := newBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	tmp := t.TempDir()
	tarball := packClient(ctx, t, tmp)

	// A scratch project with the consumer, the demo's generated types (an
	// application generates its own with protoc-gen-es: TestNewUser does),
	// and the tarball installed next to the versions the repository pins.
	scratch := filepath.Join(tmp, "consumer")
	if err := os.CopyFS(scratch, os.DirFS(filepath.Join("testdata", "npmconsumer"))); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(scratch, "src", "gen"), os.DirFS(filepath.Join("..", "web", "src", "gen"))); err != nil {
		t.Fatal(err)
	}
	installClient(ctx, t, scratch, tarball)
	bin := filepath.Join(scratch, "node_modules", ".bin")
	run(ctx, t, scratch, filepath.Join(bin, "tsc"), "-p", "tsconfig.json")
	run(ctx, t, scratch, filepath.Join(bin, "tsc"), "-p", "tsconfig.node.json")
	site := filepath.Join(tmp, "site")
	bundlePage(ctx, t, scratch, "src/consumer.ts", site, "consumer.js")

	// The page on one origin, the bridge on another that lets it in.
	page := httptest.NewServer(http.FileServer(http.Dir(site)))
	t.Cleanup(page.Close)
	bridgeURL := startBridgeProcess(ctx, t, tmp, "-allow-origin", page.URL)

	tab := newTab(t, browserCtx, page.URL+"/?bridge="+url.QueryEscape(bridgeURL))
	tab.wait(`window.demo.done`)
	var got struct {
		Ticker struct {
			Seqs   []int    `json:"seqs"`
			Log    []string `json:"log"`
			Status *struct {
				Code int `json:"code"`
			} `json:"status"`
		} `json:"ticker"`
		Quote *struct {
			Symbol string  `json:"symbol"`
			Price  float64 `json:"price"`
		} `json:"quote"`
		BadQuote *struct {
			Code    int    `json:"code"`
			Name    string `json:"name"`
			Message string `json:"message"`
		} `json:"badQuote"`
		Echo struct {
			Texts  []string `json:"texts"`
			Status *struct {
				Code int `json:"code"`
			} `json:"status"`
		} `json:"echo"`
		Failure string `json:"failure"`
	}
	tab.eval(`window.demo`, &got)
	if got.Failure != "" {
		t.Fatalf("the page failed: %s (ticker log %q)", got.Failure, got.Ticker.Log)
	}
	if len(got.Ticker.Seqs) != 3 || !isContiguous(got.Ticker.Seqs) || got.Ticker.Status == nil || got.Ticker.Status.Code != 0 {
		t.Errorf("ticker: seqs %v, status %+v; want 1, 2, 3 and OK (log %q)", got.Ticker.Seqs, got.Ticker.Status, got.Ticker.Log)
	}
	if got.Quote == nil || got.Quote.Symbol != "ACME" || got.Quote.Price <= 0 {
		t.Errorf("quote: %+v; want ACME at a positive price", got.Quote)
	}
	if got.BadQuote == nil || got.BadQuote.Name != "INVALID_ARGUMENT" || !strings.Contains(got.BadQuote.Message, "symbol") {
		t.Errorf("quote without a symbol: %+v; want a StatusError INVALID_ARGUMENT naming the symbol", got.BadQuote)
	}
	if !slices.Equal(got.Echo.Texts, []string{"hello", "from npm"}) || got.Echo.Status == nil || got.Echo.Status.Code != 0 {
		t.Errorf("echo: %q, status %+v; want both texts back and OK", got.Echo.Texts, got.Echo.Status)
	}
}
