package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grpcbridge/grpcbridge/bridge"
)

func TestReadSessionKeys(t *testing.T) {
	t.Parallel()
	key1, key2 := strings.Repeat("a", 40), strings.Repeat("b", 40)
	cases := []struct {
		name, file string
		want       int
		err        string
	}{
		{"one", key1 + "\n", 1, ""},
		{"two while rotating, blank lines and CRLF ignored", "\n" + key1 + "\r\n\n" + key2 + "\n", 2, ""},
		{"none", "\n\n", 0, "no key"},
		{"three", key1 + "\n" + key2 + "\n" + key1 + "\n", 0, "3 keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "keys")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			keys, err := readSessionKeys(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil || len(keys) != tc.want || string(keys[0]) != key1 {
				t.Fatalf("keys %q %v, want %d starting with key1", keys, err, tc.want)
			}
		})
	}
}

func TestSessionOptionsFromConfig(t *testing.T) {
	t.Parallel()
	cfg := defaultConfig()
	if o, err := sessionOptions(&cfg); o != nil || err != nil {
		t.Errorf("no key file, no demo: %v %v, want sessions off", o, err)
	}
	cfg.Demo = true
	o, err := sessionOptions(&cfg)
	if err != nil || o == nil || len(o.Keys) != 1 || len(o.Keys[0]) < 32 {
		t.Errorf("demo: %+v %v, want sessions with a made-up key", o, err)
	}
	cfg.SessionKeyFile = filepath.Join(t.TempDir(), "missing")
	if _, err := sessionOptions(&cfg); err == nil || !strings.Contains(err.Error(), "-session-key-file") {
		t.Errorf("missing key file: %v", err)
	}
}

// TestMetricsDocCoversSessionMetrics: every session metric and label is in
// docs/metrics.md.
func TestMetricsDocCoversSessionMetrics(t *testing.T) {
	t.Parallel()
	doc := readDoc(t, metricsDoc)
	reg := prometheus.NewRegistry()
	m := newPromMetrics(reg, defaultConfig().MetricsNamespace)
	var sm bridge.SessionMetrics = m // the bridge finds them with a type assertion
	sm.SessionStarted(bridge.SessionCarrierWebSocket)
	sm.SessionEnded(bridge.SessionCarrierWebSocket, 3)
	sm.SessionResumed(bridge.SessionCarrierSSE)
	sm.SessionForwarded(bridge.ForwardOutcomeForwarded)
	var fm bridge.SessionFallbackMetrics = m
	fm.SessionFellBack(bridge.SessionFallbackWSError)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 6 {
		t.Fatalf("gathered %d families, want the 6 session ones", len(families))
	}
	for _, mf := range families {
		if !strings.Contains(doc, "`"+mf.GetName()+"`") {
			t.Errorf("%s: metric `%s` is not documented", metricsDoc, mf.GetName())
		}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			if !strings.Contains(doc, "`"+lp.GetName()+"`") {
				t.Errorf("%s: label `%s` of %s is not documented", metricsDoc, lp.GetName(), mf.GetName())
			}
		}
	}
}
