package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestAPIDocsFlag checks that -openapi serves both documents on the
// public port, and that without it neither path is answered.
func TestAPIDocsFlag(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-openapi"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	for path, version := range map[string]string{"/openapi.json": "openapi", "/asyncapi.json": "asyncapi"} {
		code, body := get(t, base+path)
		var doc map[string]any
		if code != 200 || json.Unmarshal([]byte(body), &doc) != nil {
			t.Fatalf("GET %s: %d %.200s", path, code, body)
		}
		if _, ok := doc[version].(string); !ok {
			t.Errorf("GET %s: no %q member", path, version)
		}
		if !hasKey(doc, "paths", "/demo.v1.TickerService/Watch") && !hasKey(doc, "channels", "demo.v1.TickerService.Watch") {
			t.Errorf("GET %s: the demo's Watch is not described", path)
		}
	}

	off, err := parseFlags([]string{"-demo"})
	if err != nil {
		t.Fatal(err)
	}
	offBase := startBridge(t, off)
	for _, path := range []string{"/openapi.json", "/asyncapi.json"} {
		if code, _ := get(t, offBase+path); code != 404 {
			t.Errorf("without -openapi, GET %s: %d, want 404", path, code)
		}
	}
}

// TestAPIDocsConfigKey checks the flag's config-file key.
func TestAPIDocsConfigKey(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(file, []byte("demo: true\nopenapi: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseFlags([]string{"-config", file})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.OpenAPI {
		t.Error("openapi: true in the config file did not turn the documents on")
	}
}

func hasKey(doc map[string]any, object, key string) bool {
	m, _ := doc[object].(map[string]any)
	_, ok := m[key]
	return ok
}
