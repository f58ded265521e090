package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
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
	pkgDir, err := filepath.Abs(filepath.Join("..", "web", "client"))
	if err != nil {
		t.Fatal(err)
	}

	// Pack what npm publish would upload.
	run(ctx, t, pkgDir, "npm", "run", "build")
	var packed []struct {
		Filename string `json:"filename"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	out := run(ctx, t, pkgDir, "npm", "pack", "--json", "--ignore-scripts", "--pack-destination", tmp)
	if err := json.Unmarshal(out, &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v\n%s", err, out)
	}
	var files []string
	for _, f := range packed[0].Files {
		files = append(files, f.Path)
		if !strings.HasPrefix(f.Path, "dist/") && f.Path != "package.json" && f.Path != "README.md" {
			t.Errorf("the package holds %s; only dist/, package.json and README.md belong in it", f.Path)
		}
	}
	for _, want := range []string{"package.json", "README.md", "dist/index.js", "dist/index.d.ts"} {
		if !slices.Contains(files, want) {
			t.Errorf("the package lacks %s: %q", want, files)
		}
	}

	// A scratch project with the consumer, the demo's generated types (an
	// application generates its own with protoc-gen-es), and the tarball
	// installed next to the versions the repository pins.
	scratch := filepath.Join(tmp, "consumer")
	if err := os.CopyFS(scratch, os.DirFS(filepath.Join("testdata", "npmconsumer"))); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(scratch, "src", "gen"), os.DirFS(filepath.Join("..", "web", "src", "gen"))); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(scratch, "package.json"), `{"name": "consumer", "private": true, "type": "module"}`)
	pins := webPins(t)
	run(ctx, t, scratch, "npm", "install", "--no-audit", "--no-fund", "--save-exact",
		filepath.Join(tmp, packed[0].Filename),
		"@bufbuild/protobuf@"+pins.Dependencies["@bufbuild/protobuf"],
		"typescript@"+pins.DevDependencies["typescript"],
		"esbuild@"+pins.DevDependencies["esbuild"])
	bin := filepath.Join(scratch, "node_modules", ".bin")
	run(ctx, t, scratch, filepath.Join(bin, "tsc"), "-p", "tsconfig.json")
	run(ctx, t, scratch, filepath.Join(bin, "tsc"), "-p", "tsconfig.node.json")
	site := filepath.Join(tmp, "site")
	run(ctx, t, scratch, filepath.Join(bin, "esbuild"), "src/consumer.ts", "--bundle", "--format=esm",
		"--platform=browser", "--target=es2022", "--log-level=warning", "--outfile="+filepath.Join(site, "consumer.js"))
	if err := os.CopyFS(site, os.DirFS(filepath.Join(scratch, "public"))); err != nil {
		t.Fatal(err)
	}

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

// run runs a command in dir and returns its standard output; it fails the
// test with all the command printed when it fails.
func run(ctx context.Context, t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s%s", name, strings.Join(args, " "), dir, err, out, stderr.String())
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// webPackage is what TestNPMPackage reads of web/package.json.
type webPackage struct {
	Dependencies    map[string]string `json:"dependencies"`
	DevDependencies map[string]string `json:"devDependencies"`
}

// webPins returns web/package.json, whose pinned versions the scratch
// project installs, so that it tests what the repository builds with.
func webPins(t *testing.T) webPackage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "web", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p webPackage
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("web/package.json: %v", err)
	}
	for _, pin := range []string{p.Dependencies["@bufbuild/protobuf"], p.DevDependencies["typescript"], p.DevDependencies["esbuild"]} {
		if pin == "" {
			t.Fatalf("web/package.json lacks a pin of @bufbuild/protobuf, typescript or esbuild: %s", b)
		}
	}
	return p
}

// startBridgeProcess builds cmd/bridge into dir and runs it with -demo on a
// free loopback port and the extra args, until the test ends; it returns
// the bridge's origin once /readyz answers 200.
func startBridgeProcess(ctx context.Context, t *testing.T, dir string, args ...string) string {
	t.Helper()
	bin := filepath.Join(dir, "bridge")
	run(ctx, t, "..", "go", "build", "-o", bin, "./cmd/bridge")
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String() // free a moment ago
	_ = lis.Close()
	logPath := filepath.Join(dir, "bridge.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the process has its own copy
	cmd := exec.Command(bin, append([]string{"-demo", "-addr", addr}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("bridge log:\n%s", log)
		}
	})
	origin := "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(origin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return origin
			}
		}
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logPath)
			t.Fatalf("bridge exited before it was ready: %v\n%s", err, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("bridge not ready on %s after 30 s (last: %v)\n%s", addr, err, log)
		}
	}
}
