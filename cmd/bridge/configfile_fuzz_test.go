package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzConfigFile feeds arbitrary bytes to the config-file reader, which
// an operator (or a mounted ConfigMap) controls: it must report an error
// that names the file, never panic, and whatever it accepts and validates
// must be safe for serve, which parses trusted proxies with
// netip.MustParsePrefix.
func FuzzConfigFile(f *testing.F) {
	for _, body := range []string{
		"",
		"addr: ':8080'\ndemo: true\n",
		"expose: [demo.v1.*]\nbackends:\n  - target: 127.0.0.1:9090\n    reflection: true\n",
		"backends:\n  - {target: x:1, services: [a.*], tls: {ca: ca.pem, cert: c.pem, key: k.pem}}\n",
		"methods:\n  demo.v1.TickerService/Watch: {cursor_field: seq, resume_field: after_seq}\n",
		"trusted_proxies: [10.0.0.0/8, '::1/128']\nmax_streams: 10\nmax_streams_per_client: 2\n",
		"heartbeat: 15s\nretry: -1s\n",
		"a: &a [*a]\n",
		"x: &x {y: *x}\nexpose: *x\n",
		"expose: &e [a.*]\nallow_origins: *e\n",
		"addr: [\n",
		"? [a]\n: b\n",
		"read_max_bytes: 99999999999999999999\n",
		"allow_origins: ['*']\ncors_credentials: true\n",
		"%YAML 1.2\n---\naddr: ':1'\n...\n---\naddr: ':2'\n",
		"addr: !!binary aGVsbG8=\n",
		"demo: !!str true\n",
		strings.Repeat("- ", 500) + "x\n",
		strings.Repeat("[", 1000),
	} {
		f.Add([]byte(body))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(dir, "bridge.yaml")
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		c := defaultConfig()
		if err := loadConfigFile(path, &c); err != nil {
			if !strings.Contains(err.Error(), "config") {
				t.Fatalf("error %q does not say it is about the config", err)
			}
			return
		}
		if err := c.validate(); err != nil {
			return
		}
		for _, p := range c.TrustedProxies {
			if _, err := netip.ParsePrefix(p); err != nil {
				t.Fatalf("trusted proxy %q passed validation: %v", p, err)
			}
		}
	})
}
