package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key", "addr: :1\nexpoze: [a.*]\n", `:2: expoze: unknown key (known: addr, admin_addr, `},
		{"unknown nested key", "backends:\n  - target: x:1\n    servces: [a.*]\n", `:3: backends[0].servces: unknown key (known: name, reflection, services, target, tls)`},
		{"wrong type for a list", "expose: demo.v1.*\n", `:1: expose: want a list`},
		{"wrong type for a duration", "heartbeat: 15\n", `:1: heartbeat: "15" is not a duration such as 10s or 1m30s`},
		{"negative duration", "retry: -1s\n", `:1: retry: "-1s" is not a duration`},
		{"wrong type for a bool", "demo: yes please\n", `:1: demo: want true or false, got "yes please"`},
		{"wrong type for an integer", "read_max_bytes: 4MiB\n", `:1: read_max_bytes: want an integer, got "4MiB"`},
		{"number for a string", "addr: 8080\n", `:1: addr: want a string, got 8080 (quote it)`},
		{"duplicate key", "addr: ':1'\naddr: ':2'\n", `:2: addr: duplicate key`},
		{"duplicate method", "methods:\n  a.S/M: {cursor_field: x}\n  a.S/M: {cursor_field: y}\n", `:3: methods.a.S/M: duplicate key`},
		{"not YAML", "addr: [\n", `yaml: line 1`},
		{"mapping for a string", "tls_cert: {a: b}\n", `:1: tls_cert: want a string value`},
		{"invalid value", "log_format: xml\ndemo: true\n", `-log-format "xml": want text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tc.body)
			_, err := parseFlags([]string{"-config", path})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(tc.want, ":") && strings.HasPrefix(tc.want, ":") && !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v does not name the file %s", err, path)
			}
		})
	}
	if _, err := parseFlags([]string{"-config", filepath.Join(t.TempDir(), "missing.yaml")}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `
addr: "127.0.0.1:9000"
backends:
  - name: orders
    target: dns:///orders:9000
    services: [acme.orders.v1.*]
  - target: dns:///default:9000
expose: [acme.orders.v1.*, demo.v1.TickerService/Watch]
allow_origins: [https://app.example.com]
methods:
  acme.orders.v1.OrderService/Watch: {cursor_field: version, resume_field: after_version}
heartbeat: 5s
log_level: debug
`)
	cfg, err := parseFlags([]string{"-config", path, "-heartbeat", "7s", "-expose", "x.*", "-log-level", "warn"})
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.Addr = "127.0.0.1:9000"
	want.Backends = []BackendConfig{
		{Name: "orders", Target: "dns:///orders:9000", Services: []string{"acme.orders.v1.*"}},
		{Target: "dns:///default:9000"},
	}
	want.Expose = []string{"x.*"} // the flag replaces the file's list
	want.AllowOrigins = []string{"https://app.example.com"}
	want.Methods = map[string]MethodConfig{"acme.orders.v1.OrderService/Watch": {CursorField: "version", ResumeField: "after_version"}}
	want.HeartbeatInterval = 7 * time.Second // the flag wins
	want.LogLevel = "warn"
	if !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("config\n got %+v\nwant %+v", *cfg, want)
	}
}

func TestEveryFlagHasAConfigKey(t *testing.T) {
	t.Parallel()
	// copyField panics on a flag without a config key; give every flag.
	path := writeConfig(t, "demo: true\n")
	args := []string{"-config", path, "-addr", ":1", "-demo", "-descriptors", "d", "-expose", "e", "-allow-origin", "o",
		"-request-header", "h", "-response-metadata", "m", "-heartbeat", "1s", "-retry", "1s",
		"-write-timeout", "1s", "-ping-interval", "1s", "-pong-timeout", "1s", "-read-max-bytes", "1", "-response-max-bytes", "1", "-drain-timeout", "1s", "-schema-refresh", "1m",
		"-log-format", "json", "-log-level", "debug", "-h2c", "-max-streams", "5", "-max-streams-per-client", "2",
		"-trusted-proxy", "10.0.0.0/8", "-native-grpc-network", "10.0.0.0/8", "-max-stream-duration", "1h", "-metrics-namespace", "x",
		"-otlp-endpoint", "127.0.0.1:4317", "-otlp-insecure", "-service-name", "s"}
	if _, err := parseFlags(args); err != nil {
		t.Fatal(err)
	}
	if _, err := parseFlags([]string{"-config", path, "-tls-cert", "c", "-tls-key", "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := parseFlags([]string{"-config", writeConfig(t, "expose: [a.*]\n"), "-backend", "x:1"}); err != nil {
		t.Fatal(err)
	}
}
