package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	// Nothing else given, nothing to validate: -version answers alone, and
	// wins over flags that would not validate.
	for _, args := range [][]string{{"-version"}, {"-version", "-tls-cert", "c.pem"}} {
		if _, err := parseFlags(args); !errors.Is(err, errShowVersion) {
			t.Errorf("parseFlags(%q) = %v, want errShowVersion", args, err)
		}
	}
}

func TestBuildVersion(t *testing.T) {
	t.Parallel()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{
			name: "go install @version: the module version, no VCS",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/grpcbridge/grpcbridge", Version: "v1.2.3"}},
			want: "bridge v1.2.3 (revision unknown) go1.26.8 " + platform,
		},
		{
			name: "local build of a modified tree",
			info: &debug.BuildInfo{GoVersion: "go1.26.8",
				Main: debug.Module{Version: "v0.0.0-20261201220000-0123456789ab+dirty"},
				Settings: []debug.BuildSetting{
					{Key: "-trimpath", Value: "true"},
					{Key: "vcs", Value: "git"},
					{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
					{Key: "vcs.time", Value: "2026-12-01T22:00:00Z"},
					{Key: "vcs.modified", Value: "true"},
				}},
			want: "bridge v0.0.0-20261201220000-0123456789ab+dirty (revision 0123456789abcdef0123456789abcdef01234567, 2026-12-01T22:00:00Z, modified) go1.26.8 " + platform,
		},
		{
			name: "local build of a clean tagged commit",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.3.0"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.time", Value: "2026-12-01T22:00:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			want: "bridge v1.3.0 (revision abc, 2026-12-01T22:00:00Z) go1.26.8 " + platform,
		},
		{
			name: "-buildvcs=false, as in CI",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "-buildvcs", Value: "false"}}},
			want: "bridge (devel) (revision unknown) go1.26.8 " + platform,
		},
		{
			name: "no build info",
			want: "bridge unknown (revision unknown) " + runtime.Version() + " " + platform,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := newBuildVersion(tc.info, tc.info != nil).String(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	// This test binary has build info; whatever it says, the line is whole.
	if got := readBuildVersion().String(); !strings.HasPrefix(got, "bridge ") || !strings.HasSuffix(got, ") "+runtime.Version()+" "+platform) {
		t.Errorf("readBuildVersion: %q", got)
	}
}

// logLines runs logStartup with cfg and returns its JSON records.
func logLines(t *testing.T, cfg *Config) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	logStartup(slog.New(slog.NewJSONHandler(&buf, nil)), cfg, newBuildVersion(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}}, true))
	var recs []map[string]any
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestStartupLog(t *testing.T) {
	t.Parallel()
	strs := func(v any) []string {
		var out []string
		for _, s := range v.([]any) {
			out = append(out, s.(string))
		}
		return out
	}
	t.Run("version", func(t *testing.T) {
		t.Parallel()
		recs := logLines(t, &Config{})
		if len(recs) != 1 || recs[0]["msg"] != "bridge starting" || recs[0]["version"] != "v1.2.3" || recs[0]["revision"] != "unknown" || recs[0]["go"] != "go1.26.8" {
			t.Fatalf("records %v, want one start-up line with the version", recs)
		}
	})
	t.Run("request headers that drop defaults", func(t *testing.T) {
		t.Parallel()
		recs := logLines(t, &Config{RequestHeaders: []string{"Cookie", "X-Request-*", "grpc*"}})
		if len(recs) != 2 || recs[1]["level"] != "WARN" || !strings.Contains(recs[1]["msg"].(string), "replaces the default list") {
			t.Fatalf("records %v, want a warning after the version", recs)
		}
		// x-request-id is kept by its prefix; grpc-timeout only by its
		// name, as the bridge matches grpc-* keys.
		want := []string{"authorization", "traceparent", "tracestate", "baggage", "x-correlation-id", "accept-language", "grpc-timeout"}
		if got := strs(recs[1]["dropped"]); !slices.Equal(got, want) {
			t.Errorf("dropped %q, want %q", got, want)
		}
	})
	t.Run("native gRPC networks without loopback", func(t *testing.T) {
		t.Parallel()
		recs := logLines(t, &Config{NativeGRPCNets: []string{"10.0.0.0/8", "127.0.0.0/16"}})
		if len(recs) != 2 || recs[1]["level"] != "WARN" || !slices.Equal(strs(recs[1]["dropped"]), []string{"127.0.0.0/8", "::1/128"}) {
			t.Fatalf("records %v, want a warning that drops both loopback networks", recs)
		}
		if recs := logLines(t, &Config{NativeGRPCNets: []string{"10.0.0.0/8", "127.0.0.0/8", "::/0"}}); len(recs) != 1 {
			t.Fatalf("records %v, want only the version: loopback is kept", recs)
		}
	})
	t.Run("request headers that keep every default", func(t *testing.T) {
		t.Parallel()
		recs := logLines(t, &Config{RequestHeaders: []string{"x-tenant", "Authorization", "traceparent", "tracestate", "baggage", "x-*", "accept-language", "grpc-timeout"}})
		if len(recs) != 2 || recs[1]["level"] != "INFO" || recs[1]["dropped"] != nil || len(strs(recs[1]["request_headers"])) != 8 {
			t.Fatalf("records %v, want an info line naming the list", recs)
		}
	})
}
