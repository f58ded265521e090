package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// pprofOverlay is added to cmd/bridge at build time (go build -overlay),
// so the benchmarked bridge is the real binary, serve path and all, with
// net/http/pprof on a side port when GRPCBRIDGE_BENCH_PPROF names one.
// cmd/bridge serves its own mux, so pprof never shows on the bridge's port.
const pprofOverlay = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("GRPCBRIDGE_BENCH_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
`

// binaries are the programs the harness runs, built once into a temporary
// directory.
type binaries struct {
	dir    string
	demo   string
	bridge string
	self   string // this program, for the gateway proxy and the load generators
}

// build compiles cmd/demo and cmd/bridge (with the pprof overlay) into dir.
func build(ctx context.Context, dir string) (*binaries, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b := &binaries{dir: dir, demo: filepath.Join(dir, "demo"), bridge: filepath.Join(dir, "bridge"), self: self}
	overlayFile := filepath.Join(dir, "zz_bench_pprof.go")
	if err := os.WriteFile(overlayFile, []byte(pprofOverlay), 0o644); err != nil {
		return nil, err
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(root, "cmd", "bridge", "zz_bench_pprof.go"): overlayFile,
	}})
	overlayJSON := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayJSON, overlay, 0o644); err != nil {
		return nil, err
	}
	for _, c := range [][]string{
		{"build", "-o", b.demo, "./cmd/demo"},
		{"build", "-overlay", overlayJSON, "-o", b.bridge, "./cmd/bridge"},
	} {
		cmd := exec.CommandContext(ctx, "go", c...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return b, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the benchmark inside the grpcbridge module")
	}
	return filepath.Dir(gomod), nil
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// proc is a child process. Its stderr goes to a log file in the work
// directory; it dies with the harness (Pdeathsig) if nothing else stops it.
type proc struct {
	name   string
	cmd    *exec.Cmd
	logf   string
	exited chan struct{}
	err    error
}

func startProc(dir, name, bin string, args, env []string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logf: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// logTail returns the last lines of the process's output.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logf)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// errExited tells that a process ended while the harness waited for it.
var errExited = errors.New("process exited")

// waitReady polls ready until it succeeds, the process exits or timeout.
func (p *proc) waitReady(timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s: %w (%v):\n%s", p.name, errExited, p.err, p.logTail())
		default:
		}
		if ready() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v:\n%s", p.name, timeout, p.logTail())
}

func tcpReady(addr string) func() bool {
	return func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
}

func httpReady(url string) func() bool {
	return func() bool {
		resp, err := opsClient.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

// opsClient talks to the bridge's operational endpoints. It keeps no idle
// connection, so it adds no goroutine to the bridge between scrapes. Over
// HTTPS it trusts opsTLS.RootCAs: the harness's own certificate
// (loopbackCert).
var (
	opsTLS    = &tls.Config{}
	opsClient = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: opsTLS},
	}
)

// loopbackCert writes a self-signed certificate for 127.0.0.1 and its key
// into dir, for a bridge serving HTTPS, and makes opsClient trust it.
func loopbackCert(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "grpcbridge bench"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "bench-cert.pem"), filepath.Join(dir, "bench-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", err
	}
	if opsTLS.RootCAs == nil {
		opsTLS.RootCAs = x509.NewCertPool()
	}
	opsTLS.RootCAs.AddCert(cert)
	return certFile, keyFile, nil
}

// procStat reads a process's resident set size (bytes) and its user plus
// system CPU time.
func procStat(pid int) (rss int64, cpu time.Duration, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	rest := string(stat[bytes.LastIndexByte(stat, ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	cpu = time.Duration(ut+st) * time.Second / clkTck
	return rss, cpu, nil
}

// writeCalls reads how many write system calls a process has made (syscw
// in /proc/PID/io: write, writev and the like).
func writeCalls(pid int) (int64, error) {
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(io), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/io: no syscw", pid)
}

// goroutines scrapes go_goroutines from the /metrics of the server at base
// (scheme and host).
func goroutines(base string) (int, error) {
	m, err := scrape(base, "go_goroutines")
	return int(m["go_goroutines"]), err
}

// scrape reads the named unlabelled metrics from the /metrics of the
// server at base.
func scrape(base string, names ...string) (map[string]float64, error) {
	resp, err := opsClient.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := make(map[string]float64, len(names))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if ok && slices.Contains(names, name) {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("/metrics %s: %w", name, err)
			}
			m[name] = f
		}
	}
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return nil, fmt.Errorf("no %s in /metrics", n)
		}
	}
	return m, sc.Err()
}

// fetch saves url to path.
func fetch(url, path string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofTop runs go tool pprof -top on a profile and returns its first
// lines.
func pprofTop(ctx context.Context, path string, n int, extra ...string) string {
	args := append([]string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(n)}, extra...)
	args = append(args, path)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v\n%s", err, out)
	}
	return string(out)
}

// loadResult runs this program as a load generator and decodes the JSON
// line it prints last into v.
func (b *binaries) runLoad(ctx context.Context, v any, args ...string) error {
	cmd := exec.CommandContext(ctx, b.self, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return json.Unmarshal([]byte(lines[len(lines)-1]), v)
}

// session is an interactive load generator: the harness and it exchange
// lines over its stdin and stdout.
type session struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *bytes.Buffer
	mu     sync.Mutex
}

func (b *binaries) startSession(args ...string) (*session, error) {
	cmd := exec.Command(b.self, args...)
	s := &session{cmd: cmd, stderr: new(bytes.Buffer)}
	cmd.Stderr = s.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if s.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.out = bufio.NewScanner(stdout)
	s.out.Buffer(make([]byte, 64<<10), 16<<20)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *session) pid() int { return s.cmd.Process.Pid }

// expect reads the next line and checks that it starts with word; it
// returns the rest of the line.
func (s *session) expect(word string) (string, error) {
	if !s.out.Scan() {
		_ = s.cmd.Wait()
		return "", fmt.Errorf("load generator ended before %q: %s", word, strings.TrimSpace(s.stderr.String()))
	}
	line := s.out.Text()
	rest, ok := strings.CutPrefix(line, word)
	if !ok {
		return "", fmt.Errorf("load generator said %q, want %q", line, word)
	}
	return strings.TrimSpace(rest), nil
}

func (s *session) send(line string) error {
	_, err := io.WriteString(s.in, line+"\n")
	return err
}

// close ends the session: stdin closes, and a generator still alive after
// grace is killed.
func (s *session) close(grace time.Duration) {
	s.in.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = s.cmd.Process.Kill()
		<-done
	}
}
