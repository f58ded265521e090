package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"gopkg.in/yaml.v3"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// The files under deploy/ and docs/ that these tests keep honest, relative
// to this package.
const (
	exampleConfig  = "../../deploy/bridge.yaml"
	kubernetesDir  = "../../deploy/kubernetes"
	configDoc      = "../../docs/config.md"
	metricsDoc     = "../../docs/metrics.md"
	configMapFile  = "configmap.yaml"
	configMapKey   = "bridge.yaml"
	configMountDir = "/etc/bridge"
	// The Services: the ingress's upstream, and the headless one whose DNS
	// name is the session peer set.
	publicService = "grpcbridge"
	peersService  = "grpcbridge-peers"
)

// loadExample decodes a config file as the binary does: the defaults, then
// the file.
func loadExample(t *testing.T, path string) Config {
	t.Helper()
	cfg := defaultConfig()
	if err := loadConfigFile(path, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDeployExampleConfig(t *testing.T) {
	t.Parallel()
	cfg := loadExample(t, exampleConfig)
	if err := cfg.validate(); err != nil {
		t.Fatalf("%s does not validate: %v", exampleConfig, err)
	}
	if cfg.Addr != ":8080" || cfg.Demo || cfg.LogFormat != "json" || !cfg.H2C {
		t.Errorf("addr %q, demo %v, log_format %q, h2c %v", cfg.Addr, cfg.Demo, cfg.LogFormat, cfg.H2C)
	}
	if len(cfg.Backends) != 2 {
		t.Fatalf("backends: %+v, want 2", cfg.Backends)
	}
	def, tlsBackend := cfg.Backends[0], cfg.Backends[1]
	if def.Name == "" || !strings.HasPrefix(def.Target, "dns:///") || def.Reflection == nil || !*def.Reflection || len(def.Services) != 0 || def.TLS != nil {
		t.Errorf("default backend: %+v", def)
	}
	if tlsBackend.Name == "" || !strings.HasPrefix(tlsBackend.Target, "dns:///") || len(tlsBackend.Services) == 0 {
		t.Errorf("TLS backend: %+v", tlsBackend)
	}
	if tl := tlsBackend.TLS; tl == nil || tl.CA == "" || tl.Cert == "" || tl.Key == "" || tl.ServerName == "" {
		t.Errorf("TLS backend's tls: %+v", tlsBackend.TLS)
	}
	if len(cfg.Expose) == 0 || len(cfg.AllowOrigins) == 0 || len(cfg.Methods) == 0 || len(cfg.TrustedProxies) == 0 {
		t.Errorf("expose %v, allow_origins %v, methods %v, trusted_proxies %v", cfg.Expose, cfg.AllowOrigins, cfg.Methods, cfg.TrustedProxies)
	}
	if cfg.DrainTimeout != 20*time.Second || cfg.MaxStreams <= 0 || cfg.MaxClientStreams <= 0 {
		t.Errorf("drain_timeout %v, max_streams %d, max_streams_per_client %d", cfg.DrainTimeout, cfg.MaxStreams, cfg.MaxClientStreams)
	}
	// Probes and scrapes go to an operational listener of their own, and
	// load balancers get a few seconds to see /readyz at 503 on SIGTERM.
	if cfg.AdminAddr == "" || cfg.AdminAddr == cfg.Addr || cfg.ShutdownDelay < time.Second {
		t.Errorf("admin_addr %q (addr %q), shutdown_delay %v: want an admin listener and a shutdown delay of a few seconds", cfg.AdminAddr, cfg.Addr, cfg.ShutdownDelay)
	}
}

// manifest is one YAML document of deploy/kubernetes.
type manifest struct {
	file string
	doc  map[string]any
}

func (m manifest) kind() string { return fmt.Sprint(m.doc["kind"]) }

func (m manifest) name() string {
	md, _ := m.doc["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	return name
}

func readManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(kubernetesDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubernetesDir, err)
	}
	var all []manifest
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if doc == nil {
				continue // an empty document, as after a trailing ---
			}
			all = append(all, manifest{file: filepath.Base(file), doc: doc})
		}
		_ = f.Close()
	}
	return all
}

// dig walks a decoded YAML document along keys (map keys, or list indexes
// as ints).
func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a mapping at %q", path, k)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no item %d", path, k)
			}
			v = l[k]
		}
	}
	return v
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	all := readManifests(t)
	byKind := make(map[string]manifest)
	files := make(map[string]bool)
	for _, m := range all {
		files[m.file] = true
		for _, key := range []string{"apiVersion", "kind"} {
			if s, _ := m.doc[key].(string); s == "" {
				t.Errorf("%s: a document without %s", m.file, key)
			}
		}
		if m.name() == "" {
			t.Errorf("%s: %s without metadata.name", m.file, m.kind())
		}
		byKind[m.kind()] = m
	}
	for _, kind := range []string{"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Kustomization"} {
		if _, ok := byKind[kind]; !ok {
			t.Errorf("no %s in %s", kind, kubernetesDir)
		}
	}
	if t.Failed() {
		return
	}

	svc := findManifest(t, all, "Service", publicService)

	// The kustomization lists every other manifest.
	var resources []string
	for _, r := range dig(t, byKind["Kustomization"].doc, "resources").([]any) {
		resources = append(resources, fmt.Sprint(r))
	}
	for file := range files {
		if file != byKind["Kustomization"].file && !slices.Contains(resources, file) {
			t.Errorf("kustomization.yaml does not list %s", file)
		}
	}

	// The Deployment runs the config that the ConfigMap holds, and gives
	// the drain time to finish before SIGKILL.
	dep := byKind["Deployment"].doc
	pod := dig(t, dep, "spec", "template", "spec")
	ctr := dig(t, pod, "containers", 0)
	// The session flags follow (TestKubernetesSessionForwarding).
	if args, _ := dig(t, ctr, "args").([]any); len(args) < 2 || fmt.Sprint(args[:2]) != "[-config "+configMountDir+"/"+configMapKey+"]" {
		t.Errorf("container args %v, want -config %s/%s first", args, configMountDir, configMapKey)
	}
	cfg := loadExample(t, exampleConfig)
	grace := time.Duration(dig(t, pod, "terminationGracePeriodSeconds").(int)) * time.Second
	var preStop time.Duration // optional: shutdown_delay does its job
	if lc, ok := ctr.(map[string]any)["lifecycle"]; ok {
		preStop = time.Duration(dig(t, lc, "preStop", "sleep", "seconds").(int)) * time.Second
	}
	if grace <= preStop+cfg.ShutdownDelay+cfg.DrainTimeout {
		t.Errorf("terminationGracePeriodSeconds %v must exceed the preStop sleep %v plus shutdown_delay %v plus drain_timeout %v",
			grace, preStop, cfg.ShutdownDelay, cfg.DrainTimeout)
	}

	// The container's ports are the config's listeners, by name.
	ports := make(map[string]string) // name: ":port"
	for i := range dig(t, ctr, "ports").([]any) {
		ports[fmt.Sprint(dig(t, ctr, "ports", i, "name"))] = fmt.Sprint(":", dig(t, ctr, "ports", i, "containerPort"))
	}
	if ports["http"] != cfg.Addr || ports["admin"] != cfg.AdminAddr {
		t.Errorf("container ports %v, config addr %q and admin_addr %q", ports, cfg.Addr, cfg.AdminAddr)
	}
	// Probes and Prometheus on the admin port, which alone has the
	// detailed /readyz and, with admin_addr, /metrics.
	for _, probe := range []struct{ name, path string }{{"readinessProbe", "/readyz"}, {"livenessProbe", "/healthz"}, {"startupProbe", "/healthz"}} {
		path, port := dig(t, ctr, probe.name, "httpGet", "path"), fmt.Sprint(dig(t, ctr, probe.name, "httpGet", "port"))
		if path != probe.path || port != "admin" {
			t.Errorf("%s on %v port %s, want %s on the admin port", probe.name, path, port, probe.path)
		}
	}
	annotations := dig(t, dep, "spec", "template", "metadata", "annotations")
	if got := fmt.Sprint(":", dig(t, annotations, "prometheus.io/port")); got != cfg.AdminAddr || dig(t, annotations, "prometheus.io/path") != "/metrics" {
		t.Errorf("prometheus.io/port %s and path %v, want admin_addr %s and /metrics", got, dig(t, annotations, "prometheus.io/path"), cfg.AdminAddr)
	}
	// No Service, neither the one the ingress routes browsers through nor
	// the peer set, reaches the admin port.
	for _, m := range all {
		if m.kind() != "Service" {
			continue
		}
		for i := range dig(t, m.doc, "spec", "ports").([]any) {
			if target := fmt.Sprint(dig(t, m.doc, "spec", "ports", i, "targetPort")); target == "admin" || ":"+target == cfg.AdminAddr {
				t.Errorf("%s: Service %s routes port %d to the admin port", m.file, m.name(), i)
			}
		}
	}
	if dig(t, svc.doc, "spec", "clusterIP") == "None" {
		t.Errorf("%s: Service %s is headless; the ingress needs its virtual IP", svc.file, publicService)
	}
}

// findManifest returns the document of kind named name.
func findManifest(t *testing.T, all []manifest, kind, name string) manifest {
	t.Helper()
	for _, m := range all {
		if m.kind() == kind && m.name() == name {
			return m
		}
	}
	t.Fatalf("no %s %s in %s", kind, name, kubernetesDir)
	return manifest{}
}

func TestConfigMapMatchesExampleConfig(t *testing.T) {
	t.Parallel()
	var embedded string
	for _, m := range readManifests(t) {
		if m.file == configMapFile && m.kind() == "ConfigMap" {
			embedded, _ = dig(t, m.doc, "data", configMapKey).(string)
		}
	}
	if embedded == "" {
		t.Fatalf("%s: no ConfigMap with data.%s", configMapFile, configMapKey)
	}
	path := filepath.Join(t.TempDir(), configMapKey)
	if err := os.WriteFile(path, []byte(embedded), 0o600); err != nil {
		t.Fatal(err)
	}
	got, want := loadExample(t, path), loadExample(t, exampleConfig)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the ConfigMap's %s decodes to\n%+v\n%s decodes to\n%+v", configMapKey, got, exampleConfig, want)
	}
	// Comments included: the copy is the file, not a variant of it.
	text, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if embedded != string(text) {
		t.Errorf("the ConfigMap's %s is not a verbatim copy of %s", configMapKey, exampleConfig)
	}
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestConfigDocCoversEveryKey(t *testing.T) {
	t.Parallel()
	doc := readDoc(t, configDoc)
	for _, typ := range []reflect.Type{
		reflect.TypeFor[Config](), reflect.TypeFor[BackendConfig](), reflect.TypeFor[BackendTLS](), reflect.TypeFor[MethodConfig](),
	} {
		for f := range typ.Fields() {
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			if !strings.Contains(doc, "`"+key+"`") {
				t.Errorf("%s: %s.%s's key `%s` is not documented", configDoc, typ.Name(), f.Name, key)
			}
		}
	}
	// And every flag, by its name; methods has no flag.
	flags := map[string]string{}
	for flagName, key := range pluralKeys {
		flags[key] = flagName
	}
	for f := range reflect.TypeFor[Config]().Fields() {
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "methods" {
			continue
		}
		name, ok := flags[key]
		if !ok {
			name = strings.ReplaceAll(key, "_", "-")
		}
		if !strings.Contains(doc, "`-"+name) {
			t.Errorf("%s: flag -%s is not documented", configDoc, name)
		}
	}
}

func TestMetricsDocCoversEveryMetric(t *testing.T) {
	t.Parallel()
	doc := readDoc(t, metricsDoc)
	reg := prometheus.NewRegistry()
	m := newPromMetrics(reg, defaultConfig().MetricsNamespace)
	// One stream that touches every metric: a vector appears in Gather
	// once it has a child.
	obs := m.StreamStarted("demo.v1.EchoService/Echo", "websocket", true)
	obs.MessageSent(10)
	obs.MessageReceived(10)
	obs.StreamEnded(codes.Unavailable, 1001, true)
	m.StreamPanicked("demo.v1.EchoService/Echo", "websocket")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	collectors := 0
	collector := reflect.TypeFor[prometheus.Collector]()
	for f := range reflect.TypeFor[promMetrics]().Fields() {
		if f.Type.Implements(collector) {
			collectors++
		}
	}
	if len(families) != collectors {
		t.Fatalf("gathered %d metric families, promMetrics has %d collectors: observe the new one in this test", len(families), collectors)
	}
	for _, mf := range families {
		name := mf.GetName()
		suffix := strings.TrimPrefix(name, defaultConfig().MetricsNamespace+"_")
		if !strings.Contains(doc, "`"+name+"`") || !strings.Contains(doc, suffix) {
			t.Errorf("%s: metric `%s` is not documented", metricsDoc, name)
		}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			if !strings.Contains(doc, "`"+lp.GetName()+"`") {
				t.Errorf("%s: label `%s` of %s is not documented", metricsDoc, lp.GetName(), name)
			}
		}
	}
}

// ingressNginx is the annotation prefix of ingress-nginx.
const ingressNginx = "nginx.ingress.kubernetes.io/"

// nginxSize reads an nginx size ("8m", "512k", "1g", "1024") in bytes.
func nginxSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "m"), strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "g"), strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	n, err := strconv.ParseInt(strings.TrimRight(s, "kKmMgG"), 10, 64)
	return n * mult, err
}

// TestIngress holds ingress.yaml to what docs/deploy.md says an ingress
// needs for SSE and WebSockets, and to the Service and config it fronts.
func TestIngress(t *testing.T) {
	t.Parallel()
	all := readManifests(t)
	ing, svc := findManifest(t, all, "Ingress", "grpcbridge").doc, findManifest(t, all, "Service", publicService).doc
	cfg := loadExample(t, exampleConfig)
	annotations, _ := dig(t, ing, "metadata", "annotations").(map[string]any)
	annotation := func(name string) string {
		v, ok := annotations[ingressNginx+name].(string)
		if !ok {
			t.Errorf("ingress.yaml: no %s%s annotation (a string)", ingressNginx, name)
		}
		return v
	}
	for name, want := range map[string]string{
		"proxy-buffering":         "off", // SSE events pass as they come
		"proxy-request-buffering": "off",
		"proxy-http-version":      "1.1", // WebSocket upgrades
		"backend-protocol":        "HTTP",
		"proxy-next-upstream":     "error timeout", // a request without an answer goes to another replica
	} {
		if got := annotation(name); got != want {
			t.Errorf("ingress.yaml: %s %q, want %q", name, got, want)
		}
	}
	// Idle timeouts above every keep-alive of the bridge and the longest
	// stream, so that the ingress never cuts a stream the bridge keeps.
	for _, name := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
		secs, err := strconv.Atoi(annotation(name))
		timeout := time.Duration(secs) * time.Second
		if err != nil || timeout <= cfg.HeartbeatInterval || timeout <= cfg.PingInterval+cfg.PongTimeout || timeout <= cfg.MaxStreamDuration {
			t.Errorf("ingress.yaml: %s %v (%v), want above heartbeat %v, ping_interval+pong_timeout %v and max_stream_duration %v",
				name, timeout, err, cfg.HeartbeatInterval, cfg.PingInterval+cfg.PongTimeout, cfg.MaxStreamDuration)
		}
	}
	// Bodies a little over the bridge's limit reach it, for its own error.
	if size, err := nginxSize(annotation("proxy-body-size")); err != nil || size <= cfg.ReadMaxBytes {
		t.Errorf("ingress.yaml: proxy-body-size %d (%v), want above read_max_bytes %d", size, err, cfg.ReadMaxBytes)
	}
	if class := dig(t, ing, "spec", "ingressClassName"); class != "nginx" {
		t.Errorf("ingress.yaml: ingressClassName %v, want nginx", class)
	}
	tls := dig(t, ing, "spec", "tls", 0)
	if secret, _ := dig(t, tls, "secretName").(string); secret == "" || len(dig(t, tls, "hosts").([]any)) == 0 {
		t.Errorf("ingress.yaml: tls %v, want hosts and a secretName", tls)
	}

	// Every rule routes every path to the Service's public port, by the
	// name service.yaml gives it.
	svcName := dig(t, svc, "metadata", "name")
	publicPorts := make(map[string]bool)
	for i := range dig(t, svc, "spec", "ports").([]any) {
		port := dig(t, svc, "spec", "ports", i)
		if target := fmt.Sprint(dig(t, port, "targetPort")); target != "admin" && ":"+target != cfg.AdminAddr {
			publicPorts[fmt.Sprint(dig(t, port, "name"))] = true
		}
	}
	rules := dig(t, ing, "spec", "rules").([]any)
	if len(rules) == 0 {
		t.Fatal("ingress.yaml: no rules")
	}
	for i := range rules {
		paths := dig(t, rules[i], "http", "paths").([]any)
		if len(paths) != 1 || dig(t, paths[0], "path") != "/" || dig(t, paths[0], "pathType") != "Prefix" {
			t.Errorf("ingress.yaml rule %d: paths %v, want one: / as Prefix (methods are /package.Service/Method)", i, paths)
		}
		for j := range paths {
			backend := dig(t, paths[j], "backend", "service")
			port, _ := dig(t, backend, "port", "name").(string)
			if dig(t, backend, "name") != svcName || !publicPorts[port] {
				t.Errorf("ingress.yaml rule %d path %d: backend %v, want Service %v by the name of a public port (%v)", i, j, backend, svcName, publicPorts)
			}
		}
	}
}

// samplePod is what the kubelet would put in the container's env from a
// fieldRef, for the fields that deployment.yaml uses.
var samplePod = map[string]string{
	"status.podIP":       "10.244.3.7",
	"metadata.namespace": "grpcbridge-test",
}

// envVarRef is a $(VAR) reference, which Kubernetes expands in a
// container's args from the container's env.
var envVarRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// podArgs returns the container's args as the bridge would get them in a
// pod: $(VAR) expanded from its env (with samplePod's values), and the
// paths under its volume mounts moved to local directories, which mounts
// maps from the mount path.
func podArgs(t *testing.T, ctr any, mounts map[string]string) []string {
	t.Helper()
	env := make(map[string]string)
	for _, e := range dig(t, ctr, "env").([]any) {
		name := fmt.Sprint(dig(t, e, "name"))
		if v, ok := e.(map[string]any)["value"]; ok {
			env[name] = fmt.Sprint(v)
			continue
		}
		path := fmt.Sprint(dig(t, e, "valueFrom", "fieldRef", "fieldPath"))
		v, ok := samplePod[path]
		if !ok {
			t.Fatalf("env %s: fieldRef %s, which this test does not know", name, path)
		}
		env[name] = v
	}
	var args []string
	for _, a := range dig(t, ctr, "args").([]any) {
		arg := envVarRef.ReplaceAllStringFunc(fmt.Sprint(a), func(ref string) string {
			v, ok := env[envVarRef.FindStringSubmatch(ref)[1]]
			if !ok {
				t.Errorf("args: %s is not in the container's env, so Kubernetes passes it as it is", ref)
				return ref
			}
			return v
		})
		name, value, isFlag := strings.Cut(arg, "=")
		if !isFlag {
			name, value = "", arg
		}
		for mount, dir := range mounts {
			if rest, ok := strings.CutPrefix(value, mount+"/"); ok {
				value = filepath.Join(dir, rest)
			}
		}
		if isFlag {
			value = name + "=" + value
		}
		args = append(args, value)
	}
	return args
}

// TestKubernetesSessionForwarding holds deploy/kubernetes to what sessions
// need without sticky load balancing (docs/deploy.md, "Sessions without
// sticky load balancing"): the container's args, run through parseFlags
// with its env expanded and its volumes in a temporary directory, turn
// sessions on with the key of the generated Secret, the pod's IP and http
// port as advertised address, and the headless Service, which selects the
// Deployment's pods, as the peer set; and the bridge takes those options.
func TestKubernetesSessionForwarding(t *testing.T) {
	t.Parallel()
	all := readManifests(t)
	dep := findManifest(t, all, "Deployment", "grpcbridge").doc
	peers := findManifest(t, all, "Service", peersService)
	kust := findManifest(t, all, "Kustomization", "grpcbridge")
	pod := dig(t, dep, "spec", "template", "spec")
	ctr := dig(t, pod, "containers", 0)

	// Keys never come from git: the Secret is generated from a file that
	// each operator makes, and that .gitignore keeps out.
	for _, m := range all {
		if _, data := m.doc["data"]; m.kind() == "Secret" && (data || m.doc["stringData"] != nil) {
			t.Errorf("%s: Secret %s carries data; secrets come from kustomization.yaml's secretGenerator", m.file, m.name())
		}
	}
	generated := make(map[string][]string) // Secret name: its keys
	ignored := strings.Split(readDoc(t, filepath.Join(kubernetesDir, ".gitignore")), "\n")
	for _, g := range dig(t, kust.doc, "secretGenerator").([]any) {
		name := fmt.Sprint(dig(t, g, "name"))
		for _, f := range dig(t, g, "files").([]any) {
			key, src, named := strings.Cut(fmt.Sprint(f), "=") // [key=]source
			if !named {
				key, src = filepath.Base(key), key
			}
			generated[name] = append(generated[name], key)
			if !slices.Contains(ignored, "/"+src) {
				t.Errorf("%s/.gitignore does not list /%s, the source of Secret %s", kubernetesDir, src, name)
			}
		}
	}

	// The pod's volumes in a directory each: the ConfigMap's data, the
	// generated Secret's keys (a sample key, as openssl rand -base64 48
	// makes), nothing for other Secrets.
	sample := make([]byte, 48)
	_, _ = rand.Read(sample)
	sampleKey := base64.StdEncoding.EncodeToString(sample)
	volumes := make(map[string]any)
	for _, v := range dig(t, pod, "volumes").([]any) {
		volumes[fmt.Sprint(dig(t, v, "name"))] = v
	}
	mounts := make(map[string]string) // mount path: local directory
	keyMount := ""                    // where the generated session keys are
	root := t.TempDir()
	for i, vm := range dig(t, ctr, "volumeMounts").([]any) {
		name, path := fmt.Sprint(dig(t, vm, "name")), fmt.Sprint(dig(t, vm, "mountPath"))
		dir := filepath.Join(root, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mounts[path] = dir
		vol, ok := volumes[name].(map[string]any)
		if !ok {
			t.Fatalf("volumeMount %s: no such volume", name)
		}
		files := make(map[string]string)
		if cm, ok := vol["configMap"]; ok {
			for key, text := range dig(t, findManifest(t, all, "ConfigMap", fmt.Sprint(dig(t, cm, "name"))).doc, "data").(map[string]any) {
				files[key] = fmt.Sprint(text)
			}
		}
		if sec, ok := vol["secret"]; ok {
			for _, key := range generated[fmt.Sprint(dig(t, sec, "secretName"))] {
				files[key] = sampleKey + "\n"
				keyMount = path
			}
		}
		for key, text := range files {
			if err := os.WriteFile(filepath.Join(dir, key), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if keyMount == "" {
		t.Fatalf("no volume of the Deployment mounts a Secret of the secretGenerator (%v)", slices.Collect(maps.Keys(generated)))
	}

	args := podArgs(t, ctr, mounts)
	cfg, err := parseFlags(args)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	// Only the generated Secret's files hold the sample key.
	o, err := sessionOptions(cfg)
	if err != nil || o == nil || len(o.Keys) != 1 || string(o.Keys[0]) != sampleKey {
		t.Fatalf("sessionOptions: %+v, %v; want sessions with the key of the Secret mounted at %s", o, err, keyMount)
	}

	// Advertised: the pod's IP and the port browsers reach it on, which
	// the peers forward to.
	httpPort := ""
	for i := range dig(t, ctr, "ports").([]any) {
		if dig(t, ctr, "ports", i, "name") == "http" {
			httpPort = fmt.Sprint(dig(t, ctr, "ports", i, "containerPort"))
		}
	}
	if ap, err := netip.ParseAddrPort(cfg.AdvertiseAddr); err != nil || ap.Addr().String() != samplePod["status.podIP"] || strconv.Itoa(int(ap.Port())) != httpPort || ":"+httpPort != cfg.Addr {
		t.Errorf("advertise_addr %q (%v), want the pod IP %s and the http port %s (addr %s)", cfg.AdvertiseAddr, err, samplePod["status.podIP"], httpPort, cfg.Addr)
	}

	// The peer set is the headless Service, in the pod's own namespace;
	// the Service selects exactly the Deployment's pods, ready or not (a
	// draining owner still serves its sessions), on the same port.
	if len(cfg.SessionPeers) != 1 || !strings.HasPrefix(cfg.SessionPeers[0], peersService+"."+samplePod["metadata.namespace"]+".svc.") {
		t.Errorf("session_peers %q, want the Service %s in the pod's namespace (%s.NAMESPACE.svc.)", cfg.SessionPeers, peersService, peersService)
	}
	if dig(t, peers.doc, "spec", "clusterIP") != "None" || dig(t, peers.doc, "spec", "publishNotReadyAddresses") != true {
		t.Errorf("%s: clusterIP %v, publishNotReadyAddresses %v; want a headless Service (None) that publishes pods not ready",
			peers.file, dig(t, peers.doc, "spec", "clusterIP"), dig(t, peers.doc, "spec", "publishNotReadyAddresses"))
	}
	selector, podLabels := dig(t, peers.doc, "spec", "selector"), dig(t, dep, "spec", "template", "metadata", "labels").(map[string]any)
	if !reflect.DeepEqual(selector, dig(t, dep, "spec", "selector", "matchLabels")) {
		t.Errorf("%s: selector %v, want the Deployment's %v", peers.file, selector, dig(t, dep, "spec", "selector", "matchLabels"))
	}
	for k, v := range selector.(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("%s: selector %s=%v, which the pod template's labels %v lack", peers.file, k, v, podLabels)
		}
	}
	if ports := dig(t, peers.doc, "spec", "ports").([]any); len(ports) != 1 ||
		fmt.Sprint(dig(t, ports[0], "port")) != httpPort || !slices.Contains([]string{"http", httpPort}, fmt.Sprint(dig(t, ports[0], "targetPort"))) {
		t.Errorf("%s: ports %v, want one, port %s to the container's http port", peers.file, ports, httpPort)
	}

	// The bridge takes these options; a key too short (a placeholder)
	// stops it at start-up.
	opts := []bridge.Option{bridge.WithBackend(bridgetest.NewBackend(t, func(*grpc.Server) {})), bridge.WithExpose("demo.v1.*")}
	if _, err := bridge.NewHandler(append(opts, bridge.WithSessions(*o))...); err != nil {
		t.Errorf("the deployment's session options: %v", err)
	}
	short := *o
	short.Keys = [][]byte{[]byte("replace-me")}
	if _, err := bridge.NewHandler(append(opts, bridge.WithSessions(short))...); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("a placeholder key: %v, want start-up to fail", err)
	}
}
