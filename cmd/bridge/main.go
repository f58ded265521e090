// Command bridge serves gRPC methods to browsers: server streams as
// Server-Sent Events, on the methods' own gRPC paths.
//
//	bridge -backend 127.0.0.1:9090 -expose 'demo.v1.*'
//	bridge -demo   # in-process demo services and the demo page at /
//	bridge -version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/grpcbridge/grpcbridge/bridge"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if errors.Is(err, errShowVersion) {
		fmt.Println(readBuildVersion())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridge: %v\n", err)
		os.Exit(2)
	}
	log, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridge: %v\n", err)
		os.Exit(2)
	}
	logStartup(log, cfg, readBuildVersion())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, a second one stops the process at once
	// instead of waiting for the shutdown delay and the drain.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, cfg, log); err != nil {
		log.Error("bridge stopped", slog.Any("error", err))
		os.Exit(1)
	}
}

func newLogger(cfg *Config) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

// logStartup logs the version, so that every log names the build it came
// from, and the settings that silently replace a default list.
func logStartup(log *slog.Logger, cfg *Config, v buildVersion) {
	log.LogAttrs(context.Background(), slog.LevelInfo, "bridge starting", v.attrs()...)
	logReplacedNetworks(log, cfg.NativeGRPCNets)
	if len(cfg.RequestHeaders) == 0 {
		return
	}
	// -request-header replaces the default list rather than adding to it:
	// "-request-header cookie" stops forwarding authorization and trace
	// context, which is easy to miss until a backend rejects every call.
	var dropped []string
	for _, d := range bridge.DefaultRequestHeaders() {
		if !slices.ContainsFunc(cfg.RequestHeaders, func(h string) bool { return headerPatternMatches(h, d) }) {
			dropped = append(dropped, d)
		}
	}
	if len(dropped) == 0 {
		log.Info("request_headers replaces the default list, and keeps all of it", slog.Any("request_headers", cfg.RequestHeaders))
		return
	}
	log.Warn("request_headers replaces the default list: these defaults are no longer forwarded to backends; name them to keep them",
		slog.Any("dropped", dropped), slog.Any("request_headers", cfg.RequestHeaders))
}

// headerPatternMatches reports whether a request_headers entry (a name, or
// a prefix ending in "*") matches the header name, as the bridge matches
// them: case-insensitively, and grpc-* keys only when named exactly.
func headerPatternMatches(pattern, name string) bool {
	pattern, name = strings.ToLower(pattern), strings.ToLower(name)
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok && !strings.HasPrefix(name, "grpc-") {
		return strings.HasPrefix(name, prefix)
	}
	return pattern == name
}

// logReplacedNetworks warns when native_grpc_networks drops the loopback
// default: a local grpcurl or health probe is then refused with
// PERMISSION_DENIED. nets is nil when not set, and validated.
func logReplacedNetworks(log *slog.Logger, nets []string) {
	if nets == nil {
		return
	}
	var dropped []string
	for _, d := range bridge.DefaultNativeGRPCNetworks() {
		if !slices.ContainsFunc(nets, func(n string) bool {
			p := netip.MustParsePrefix(n) // validated with the config
			return p.Bits() <= d.Bits() && p.Contains(d.Addr())
		}) {
			dropped = append(dropped, d.String())
		}
	}
	if len(dropped) > 0 {
		log.Warn("native_grpc_networks replaces the default list: callers from these networks can no longer use native gRPC; name them to keep them",
			slog.Any("dropped", dropped), slog.Any("native_grpc_networks", nets))
	}
}
