package rehearsal

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The topology, all on loopback addresses of the rehearsal's own network
// namespace (make rehearsal runs the test binary under unshare --net), so
// that fixed ports collide with nothing else on the machine.
const (
	ingressHost = "ingress.rehearsal.test"
	ingressAddr = "127.0.0.1:8443"
	toxiAPI     = "127.0.0.1:8474"
	nBridges    = 3
	nBackends   = 2
)

// origin is the page origin that every client sends, as a browser on the
// ingress's own host would.
var origin = "https://" + ingressHost + ":8443"

func bridgeAddr(i int) string      { return fmt.Sprintf("127.0.0.%d:8080", 2+i) }
func bridgeAdminAddr(i int) string { return fmt.Sprintf("127.0.0.%d:9090", 2+i) }
func backendAddr(j int) string     { return fmt.Sprintf("127.0.0.%d:7000", 5+j) }

// ingressLink is the toxiproxy listener between the ingress and bridge i.
func ingressLink(i int) string { return fmt.Sprintf("127.0.1.%d:8080", 1+i) }

// backendLink is the toxiproxy listener between bridge i and backend j:
// the DNS name of bridge i's backends resolves to one per backend.
func backendLink(i, j int) string { return fmt.Sprintf("127.0.2.%d:7000", 10*(i+1)+j+1) }

// backendName is the DNS name by which bridge i reaches both backends (each
// bridge has its own, so that one bridge's backend link can be stalled
// alone; the hosts file maps it to that bridge's two backend links).
func backendName(i int) string { return fmt.Sprintf("backends-b%d.rehearsal.test", i+1) }

// --- processes -----------------------------------------------------------

// proc is a process of the topology, in a process group of its own, killed
// (the whole group) when the test ends, and with SIGKILL as its parent-death
// signal, so that nothing outlives the test binary.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc starts bin with its output appended to dir/name.log.
func startProc(t *testing.T, dir, name, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = append(os.Environ(), "GODEBUG=adaptivestackstart=0") // as the image sets it
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

// kill SIGKILLs the process's group and waits for the process.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// wait waits up to d for the process to exit.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitUntil polls ok every 50 ms until it holds or d passes.
func waitUntil(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// listening reports whether addr accepts TCP connections.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		_ = c.Close()
	}
	return err == nil
}

// httpOK reports whether GET url answers 200.
func httpOK(url string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// --- the namespace -------------------------------------------------------

// setupNamespace brings up the loopback interface of the rehearsal's own
// network namespace and bind-mounts a hosts file over /etc/hosts in its
// own mount namespace: the ingress's name, and each bridge's backend name
// resolving to that bridge's two backend links.
func setupNamespace(t *testing.T, dir string) {
	t.Helper()
	if os.Getenv("REHEARSAL_NAMESPACE") != "1" {
		t.Skip("the rehearsal runs in network, mount and PID namespaces of its own: make rehearsal or make rehearsal-short")
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v\n%s", err, out)
	}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1 localhost " + ingressHost + "\n")
	for i := range nBridges {
		for j := range nBackends {
			host, _, _ := net.SplitHostPort(backendLink(i, j))
			fmt.Fprintf(&hosts, "%s %s\n", host, backendName(i))
		}
	}
	file := filepath.Join(dir, "hosts")
	if err := os.WriteFile(file, []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(file, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount the hosts file: %v", err)
	}
	addrs, err := net.LookupHost(backendName(0))
	if err != nil || len(addrs) != nBackends {
		t.Fatalf("%s resolves to %v, %v; want %d addresses", backendName(0), addrs, err, nBackends)
	}
}

// --- TLS -------------------------------------------------------------------

// writeCert writes a self-signed ECDSA certificate for the ingress's name
// (tls.crt, tls.key, and both in tls.pem for HAProxy) and returns it as a
// pool for the clients.
func writeCert(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: ingressHost},
		DNSNames:     []string{ingressHost},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "tls.pem": append(append([]byte{}, certPEM...), keyPEM...)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return pool
}

// --- bridges -------------------------------------------------------------

// bridgeConfig is deploy/bridge.yaml with only what this topology must
// change: the listen addresses, the backend (the demo, by bridge i's DNS
// name, with reflection), what is exposed, the allowed origin and the
// trusted proxies (the ingress and toxiproxy, on 127.0.0.0/16; the clients
// come from 127.3.0.0/16). Everything else, above all shutdown_delay,
// drain_timeout, heartbeat, retry and the stream limits, is the deploy
// config's, so that what is tested is what is shipped.
func bridgeConfig(t *testing.T, deployYAML []byte, i int) []byte {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal(deployYAML, &cfg); err != nil {
		t.Fatalf("deploy/bridge.yaml: %v", err)
	}
	cfg["addr"] = bridgeAddr(i)
	cfg["admin_addr"] = bridgeAdminAddr(i)
	cfg["backends"] = []map[string]any{{"name": "demo", "target": "dns:///" + backendName(i) + ":7000", "reflection": true}}
	cfg["expose"] = []string{"demo.v1.*"}
	cfg["allow_origins"] = []string{origin}
	cfg["trusted_proxies"] = []string{"127.0.0.0/16"}
	// The demo backends allow pings every 5 s: a stalled backend link is
	// noticed within seconds, not when Toxiproxy gives up on it.
	cfg["backend_keepalive"] = "10s"
	cfg["backend_keepalive_timeout"] = "5s"
	delete(cfg, "methods")           // the demo's own proto options name the ticker's cursor
	delete(cfg, "response_metadata") // nothing to pass on
	cfg["log_level"] = "info"
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// bridge is one replica: its config file, binary and current process.
type bridge struct {
	i    int
	dir  string
	bin  string
	conf string

	mu   sync.Mutex
	proc *proc
	runs int
}

func (b *bridge) name() string { return fmt.Sprintf("bridge%d", b.i+1) }

// start runs the bridge and waits until its admin /readyz answers 200, as
// a Deployment waits for the readiness probe before going on.
func (b *bridge) start(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	b.runs++
	p := startProc(t, b.dir, b.name(), b.bin, "-config", b.conf)
	b.proc = p
	b.mu.Unlock()
	if !waitUntil(60*time.Second, func() bool { return p.exited() || httpOK("http://"+bridgeAdminAddr(b.i)+"/readyz") }) || p.exited() {
		t.Fatalf("%s not ready within 60 s (exited: %v, %v); see %s.log", b.name(), p.exited(), p.err, b.name())
	}
}

func (b *bridge) current() *proc {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.proc
}

// --- toxiproxy -------------------------------------------------------------

// toxi drives a toxiproxy server over its HTTP API.
type toxi struct {
	base   string
	client http.Client
}

func (x *toxi) do(method, path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, x.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := x.client.Do(req)
	if err != nil {
		return fmt.Errorf("toxiproxy %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, msg)
	}
	return nil
}

// proxy creates a proxy from listen to upstream.
func (x *toxi) proxy(name, listen, upstream string) error {
	return x.do(http.MethodPost, "/proxies", map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true})
}

// toxic is one toxic on one proxy.
type toxic struct {
	Proxy      string         `json:"-"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"` // upstream or downstream
	Toxicity   float64        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

func (x *toxi) add(tx toxic) error { return x.do(http.MethodPost, "/proxies/"+tx.Proxy+"/toxics", tx) }

func (x *toxi) remove(tx toxic) error {
	return x.do(http.MethodDelete, "/proxies/"+tx.Proxy+"/toxics/"+tx.Name, nil)
}

// ingressProxy and backendProxy name the toxiproxy proxies.
func ingressProxy(i int) string    { return fmt.Sprintf("ingress-b%d", i+1) }
func backendProxy(i, j int) string { return fmt.Sprintf("b%d-backend%d", i+1, j+1) }

// startToxiproxy runs the toxiproxy server and creates every link.
func startToxiproxy(t *testing.T, dir, bin string) *toxi {
	t.Helper()
	host, port, _ := net.SplitHostPort(toxiAPI)
	p := startProc(t, dir, "toxiproxy", bin, "-host", host, "-port", port)
	if !waitUntil(20*time.Second, func() bool { return p.exited() || listening(toxiAPI) }) || p.exited() {
		t.Fatalf("toxiproxy does not listen on %s; see toxiproxy.log", toxiAPI)
	}
	x := &toxi{base: "http://" + toxiAPI}
	for i := range nBridges {
		if err := x.proxy(ingressProxy(i), ingressLink(i), bridgeAddr(i)); err != nil {
			t.Fatal(err)
		}
		for j := range nBackends {
			if err := x.proxy(backendProxy(i, j), backendLink(i, j), backendAddr(j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return x
}

// --- ingress -----------------------------------------------------------------

// ingress is nginx or HAProxy in front of the bridges' ingress links.
type ingress struct {
	kind string
	dir  string
	proc *proc
	conf string
}

// nginxConf is the ingress-nginx setup of deploy/kubernetes/ingress.yaml
// and docs/deploy.md, "Ingress", in plain nginx: TLS with HTTP/2 towards
// clients, HTTP/1.1 with keep-alive to the bridges, buffering off both
// ways, hour-long read and send timeouts, an 8 MiB body limit, WebSocket
// upgrades passed on, Host and X-Forwarded-* set as the controller sets
// them, and nginx's defaults for everything else (proxy_next_upstream
// error timeout, max_fails 1, fail_timeout 10 s, connect timeout 60 s).
// Beyond the docs: worker_connections and the open-file limit for 3,400
// streams, and worker_shutdown_timeout, which ingress-nginx sets (240 s by
// default) so that the old workers of a reload do not hold streams
// forever; 10 s here, to see those streams move within the run.
const nginxConf = `# Generated by reliability/rehearsal.
worker_processes 2;
worker_rlimit_nofile 20000;
worker_shutdown_timeout 10s;
user root root;
pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log notice;
events {
    worker_connections 16384;
}
http {
    access_log {{dir}}/nginx-access.log;
    client_body_temp_path {{dir}}/tmp/body;
    proxy_temp_path {{dir}}/tmp/proxy;
    fastcgi_temp_path {{dir}}/tmp/fastcgi;
    uwsgi_temp_path {{dir}}/tmp/uwsgi;
    scgi_temp_path {{dir}}/tmp/scgi;

    # ingress-nginx's: Connection: upgrade for WebSockets, and empty (keep
    # the upstream connection alive) otherwise.
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }
    upstream bridges {
{{servers}}        keepalive 320;
    }
    server {
        listen {{listen}} ssl http2;
        server_name {{host}};
        ssl_certificate {{dir}}/tls.crt;
        ssl_certificate_key {{dir}}/tls.key;
        # proxy-body-size: "8m"
        client_max_body_size 8m;
        location / {
            proxy_pass http://bridges;
            # proxy-http-version: "1.1"
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            # proxy-buffering: "off", proxy-request-buffering: "off"
            proxy_buffering off;
            proxy_request_buffering off;
            # proxy-read-timeout: "3600", proxy-send-timeout: "3600"
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
`

// haproxyConf is the same ingress in HAProxy: TLS with HTTP/2 (ALPN)
// towards clients, HTTP/1.1 to the bridges, round robin, streaming
// responses (HAProxy does not buffer them), client, server and tunnel
// timeouts of an hour, X-Forwarded-For and -Proto, retries of requests
// that got no answer at all (retry-on, which the first runs lacked: see
// docs/reliability.md, "Rehearsal"). HAProxy probes each
// bridge's admin /readyz itself (as a Service's endpoints follow the
// readiness probe), which is what shutdown_delay is for. hard-stop-after
// plays worker_shutdown_timeout's part on a reload.
const haproxyConf = `# Generated by reliability/rehearsal.
global
    maxconn 9000
    hard-stop-after 10s
    log stdout format raw local0 notice
defaults
    mode http
    log global
    option httplog
    option forwardfor
    option redispatch
    retries 3
    # Retry a request whose connection closed before any answer, as nginx's
    # proxy_next_upstream error (its default) does: without it, a bridge
    # killed behind a proxy that still accepts connections (Toxiproxy here,
    # a sidecar in a mesh) answers 502, which ends an EventSource for good.
    retry-on conn-failure empty-response
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout tunnel 3600s
    timeout http-request 10s
    timeout http-keep-alive 60s
frontend ingress
    bind {{listen}} ssl crt {{dir}}/tls.pem alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https
    default_backend bridges
backend bridges
    balance roundrobin
    option httpchk GET /readyz
{{servers}}`

// startIngress writes the ingress's config and runs it in the foreground.
func startIngress(t *testing.T, kind, dir string) *ingress {
	t.Helper()
	ing := &ingress{kind: kind, dir: dir}
	var servers strings.Builder
	var conf string
	switch kind {
	case "nginx":
		for i := range nBridges {
			fmt.Fprintf(&servers, "        server %s;\n", ingressLink(i))
		}
		conf = nginxConf
		if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
	case "haproxy":
		for i := range nBridges {
			host, _, _ := net.SplitHostPort(bridgeAdminAddr(i))
			fmt.Fprintf(&servers, "    server b%d %s check addr %s port 9090 inter 1s fall 2 rise 2\n", i+1, ingressLink(i), host)
		}
		conf = haproxyConf
	default:
		t.Fatalf("-ingress %q: want nginx or haproxy", kind)
	}
	conf = strings.NewReplacer("{{dir}}", dir, "{{servers}}", servers.String(), "{{listen}}", ingressAddr, "{{host}}", ingressHost).Replace(conf)
	ing.conf = filepath.Join(dir, kind+".conf")
	if err := os.WriteFile(ing.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	switch kind {
	case "nginx":
		ing.proc = startProc(t, dir, "nginx", "nginx", "-p", dir, "-c", ing.conf, "-e", filepath.Join(dir, "nginx-error.log"), "-g", "daemon off;")
	case "haproxy":
		// Master-worker mode, so that SIGUSR2 reloads it.
		ing.proc = startProc(t, dir, "haproxy", "haproxy", "-W", "-db", "-f", ing.conf)
	}
	if !waitUntil(20*time.Second, func() bool { return ing.proc.exited() || listening(ingressAddr) }) || ing.proc.exited() {
		t.Fatalf("%s does not listen on %s; see %s.log", kind, ingressAddr, kind)
	}
	return ing
}

// reload reloads the ingress's configuration as an operator (or the
// ingress-nginx controller) does: new workers take new connections, the old
// ones finish theirs, up to worker_shutdown_timeout (hard-stop-after).
func (ing *ingress) reload() error {
	switch ing.kind {
	case "nginx":
		out, err := exec.Command("nginx", "-p", ing.dir, "-c", ing.conf, "-e", filepath.Join(ing.dir, "nginx-error.log"), "-s", "reload").CombinedOutput()
		if err != nil {
			return fmt.Errorf("nginx -s reload: %v: %s", err, out)
		}
	case "haproxy":
		ing.proc.signal(syscall.SIGUSR2)
	}
	return nil
}
