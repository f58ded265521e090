package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Helpers for the tests that work as a user does, outside this module:
// TestNPMPackage and TestNewUser. They run real commands (npm, go, buf) and
// processes (cmd/bridge, a user's backend), each bounded by the caller's
// context and killed when the test ends.

// run runs a command in dir and returns its standard output; it fails the
// test with all the command printed when it fails.
func run(ctx context.Context, t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	return runEnv(ctx, t, dir, nil, name, args...)
}

// runEnv is run with env added to the environment.
func runEnv(ctx context.Context, t *testing.T, dir string, env []string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
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

// webPackage is what the scratch projects read of web/package.json.
type webPackage struct {
	Dependencies    map[string]string `json:"dependencies"`
	DevDependencies map[string]string `json:"devDependencies"`
}

// webPins returns web/package.json, whose pinned versions the scratch
// projects install, so that they test what the repository builds with.
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
	for _, pin := range []string{p.Dependencies["@bufbuild/protobuf"], p.DevDependencies["typescript"], p.DevDependencies["esbuild"], p.DevDependencies["@bufbuild/protoc-gen-es"]} {
		if pin == "" {
			t.Fatalf("web/package.json lacks a pin of @bufbuild/protobuf, typescript, esbuild or @bufbuild/protoc-gen-es: %s", b)
		}
	}
	return p
}

// packClient builds web/client and packs it into dir as npm publish would
// upload it, checks what the tarball holds, and returns its path.
func packClient(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	pkgDir, err := filepath.Abs(filepath.Join("..", "web", "client"))
	if err != nil {
		t.Fatal(err)
	}
	run(ctx, t, pkgDir, "npm", "run", "build")
	var packed []struct {
		Filename string `json:"filename"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	out := run(ctx, t, pkgDir, "npm", "pack", "--json", "--ignore-scripts", "--pack-destination", dir)
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
	return filepath.Join(dir, packed[0].Filename)
}

// installClient makes project an npm project and installs into it the
// tarball, as the README's npm install does, next to the versions of
// @bufbuild/protobuf, typescript and esbuild that the repository pins, and
// the extra packages (name@version).
func installClient(ctx context.Context, t *testing.T, project, tarball string, extra ...string) {
	t.Helper()
	writeFile(t, filepath.Join(project, "package.json"), `{"name": "consumer", "private": true, "type": "module"}`)
	pins := webPins(t)
	args := []string{"install", "--no-audit", "--no-fund", "--save-exact", tarball,
		"@bufbuild/protobuf@" + pins.Dependencies["@bufbuild/protobuf"],
		"typescript@" + pins.DevDependencies["typescript"],
		"esbuild@" + pins.DevDependencies["esbuild"]}
	run(ctx, t, project, "npm", append(args, extra...)...)
}

// bundlePage bundles project's entry with its esbuild into site as name,
// next to a copy of project/public, for a page server.
func bundlePage(ctx context.Context, t *testing.T, project, entry, site, name string) {
	t.Helper()
	run(ctx, t, project, filepath.Join(project, "node_modules", ".bin", "esbuild"), entry, "--bundle", "--format=esm",
		"--platform=browser", "--target=es2022", "--log-level=warning", "--outfile="+filepath.Join(site, name))
	if err := os.CopyFS(site, os.DirFS(filepath.Join(project, "public"))); err != nil {
		t.Fatal(err)
	}
}

// buildBridge builds cmd/bridge into dir and returns the binary's path.
func buildBridge(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bridge")
	run(ctx, t, "..", "go", "build", "-o", bin, "./cmd/bridge")
	return bin
}

// startBridgeProcess builds cmd/bridge into dir and runs it with -demo on a
// free loopback port and the extra args, until the test ends; it returns
// the bridge's origin once /readyz answers 200.
func startBridgeProcess(ctx context.Context, t *testing.T, dir string, args ...string) string {
	t.Helper()
	bin := buildBridge(ctx, t, dir)
	addr := freeAddr(ctx, t)
	runBridge(t, bin, dir, addr, append([]string{"-demo", "-addr", addr}, args...)...)
	return "http://" + addr
}

// runBridge runs the bridge binary with args until the test ends, and
// returns once /readyz on addr (its -addr) answers 200.
func runBridge(t *testing.T, bin, dir, addr string, args ...string) *process {
	t.Helper()
	p := startProcess(t, dir, "bridge", bin, args...)
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	p.waitFor(t, 30*time.Second, func() bool {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr(ctx context.Context, t *testing.T) string {
	t.Helper()
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// process is a program that runs until the test ends, its standard output
// and error in a log file that the test prints when it fails.
type process struct {
	name    string
	logPath string
	exited  chan error // receives Wait's result once; waitFor puts it back
}

// startProcess starts bin with args, logging to dir/name.log; the test's
// cleanup kills it.
func startProcess(t *testing.T, dir, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logPath: filepath.Join(dir, name+".log"), exited: make(chan error, 1)}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the process has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.log())
		}
	})
	return p
}

// log returns what the process wrote so far.
func (p *process) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// waitFor polls ready until it is true, and fails the test when the process
// exits first or timeout passes.
func (p *process) waitFor(t *testing.T, timeout time.Duration, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ready() {
		select {
		case err := <-p.exited:
			p.exited <- err
			t.Fatalf("%s exited before it was ready: %v\n%s", p.name, err, p.log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v\n%s", p.name, timeout, p.log())
		}
	}
}
