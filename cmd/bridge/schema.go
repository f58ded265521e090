package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// reflectionTimeout bounds one backend's answer to server reflection, at
// start-up and on every reload.
const reflectionTimeout = 10 * time.Second

// schemaSource is where the bridge's schema comes from.
type schemaSource int

const (
	schemaCompiledIn schemaSource = iota // the descriptors compiled into the bridge
	schemaFile                           // -descriptors, re-read on SIGHUP
	schemaReflection                     // server reflection, refetched every -schema-refresh and on SIGHUP
)

func (s schemaSource) String() string {
	switch s {
	case schemaFile:
		return "descriptors"
	case schemaReflection:
		return "reflection"
	default:
		return "compiled-in"
	}
}

// schemaSourceOf tells where cfg's schema comes from. validate has made sure
// that -descriptors and reflection do not go together.
func schemaSourceOf(cfg *Config) schemaSource {
	if cfg.Descriptors != "" {
		return schemaFile
	}
	for _, b := range cfg.Backends {
		if b.Reflection {
			return schemaReflection
		}
	}
	return schemaCompiledIn
}

// loadSchema loads the schema from its source: the -descriptors file, or
// server reflection of the backends with reflection: true (conns holds
// their connections by index in cfg.Backends), or else the descriptors
// compiled into the bridge. Reflection asks every such backend at once,
// each within reflectionTimeout, and merges the answers.
func loadSchema(ctx context.Context, cfg *Config, conns map[int]*grpc.ClientConn) (*protoregistry.Files, error) {
	switch schemaSourceOf(cfg) {
	case schemaFile:
		return bridge.LoadDescriptorSet(cfg.Descriptors)
	case schemaReflection:
		return fetchSchemas(ctx, cfg, conns)
	default:
		return protoregistry.GlobalFiles, nil
	}
}

func fetchSchemas(ctx context.Context, cfg *Config, conns map[int]*grpc.ClientConn) (*protoregistry.Files, error) {
	var reflecting []int
	for i, b := range cfg.Backends {
		if b.Reflection {
			reflecting = append(reflecting, i)
		}
	}
	sets := make([][]*descriptorpb.FileDescriptorProto, len(reflecting))
	errs := make([]error, len(reflecting))
	var wg sync.WaitGroup
	for k, i := range reflecting {
		b, conn := cfg.Backends[i], conns[i]
		if conn == nil {
			errs[k] = fmt.Errorf("backend %s: no connection", backendName(b))
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, reflectionTimeout)
			defer cancel()
			set, err := bridge.FetchReflection(ctx, conn)
			switch {
			case errors.Is(err, bridge.ErrNoReflection):
				errs[k] = fmt.Errorf("backend %s: %w; register it on the backend (grpc-go: reflection.Register), or drop reflection: true and give -descriptors", backendName(b), err)
			case err != nil:
				errs[k] = fmt.Errorf("backend %s: %w", backendName(b), err)
			}
			sets[k] = set
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	files, err := bridge.MergeFiles(sets...)
	if err != nil {
		names := make([]string, len(reflecting))
		for k, i := range reflecting {
			names[k] = backendName(cfg.Backends[i])
		}
		return nil, fmt.Errorf("schemas of backends %s, in this order: %w", strings.Join(names, ", "), err)
	}
	return files, nil
}

// backendName names a backend in logs and errors.
func backendName(b BackendConfig) string {
	if b.Name != "" {
		return b.Name
	}
	return b.Target
}

// explainSchemaError adds to an error of [bridge.NewHandler] why the schema
// may lack what -expose asks for: backends without reflection: true and no
// -descriptors leave only the descriptors compiled into the bridge, which
// outside -demo rarely hold the backends' services.
func explainSchemaError(cfg *Config, err error) error {
	if err == nil || cfg.Demo || cfg.Descriptors != "" || !strings.Contains(err.Error(), "matches no method of the schema") {
		return err
	}
	var plain []string
	for _, b := range cfg.Backends {
		if !b.Reflection {
			plain = append(plain, backendName(b))
		}
	}
	switch {
	case len(plain) == 0:
		return err
	case schemaSourceOf(cfg) == schemaCompiledIn:
		return fmt.Errorf("%w: the backend has no reflection: true and no -descriptors was given, so the schema is only what is compiled into the bridge; set reflection: true for the backend in the config file, or give -descriptors", err)
	default:
		return fmt.Errorf("%w: the schema comes from the backends with reflection: true; %s, without it, serve only what those describe", err, strings.Join(plain, ", "))
	}
}

// startSchemaWatch catches SIGHUP and runs [watchSchema] until ctx ends or
// stop is called; stop waits for it to return. SIGHUP is caught whatever
// the schema source, so that it never ends the bridge: with the
// compiled-in schema it is only logged.
func startSchemaWatch(ctx context.Context, cfg *Config, h *bridge.Handler, conns map[int]*grpc.ClientConn, log *slog.Logger) (stop func()) {
	// Notify before the goroutine starts: once this returns, a SIGHUP is
	// the watcher's, never the default action, which ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var reload func(context.Context) (*protoregistry.Files, error)
	var refresh time.Duration
	switch source := schemaSourceOf(cfg); source {
	case schemaReflection:
		refresh = cfg.SchemaRefresh
		fallthrough
	case schemaFile:
		reload = func(ctx context.Context) (*protoregistry.Files, error) { return loadSchema(ctx, cfg, conns) }
		log = log.With(slog.String("source", source.String()))
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(hup)
		watchSchema(ctx, h, reload, refresh, hup, log)
	}()
	return func() {
		cancel()
		<-done
	}
}

// watchSchema reloads the schema every refresh (never when 0) and whenever
// trigger delivers, until ctx ends, and swaps it into h. A failed reload is
// logged and h keeps its schema; streams already open keep theirs in any
// case. reload nil means that the schema cannot change: triggers are only
// logged. Reloads run one at a time, in the caller's goroutine.
func watchSchema(ctx context.Context, h *bridge.Handler, reload func(context.Context) (*protoregistry.Files, error), refresh time.Duration, trigger <-chan os.Signal, log *slog.Logger) {
	var tick <-chan time.Time
	if refresh > 0 && reload != nil {
		t := time.NewTicker(refresh)
		defer t.Stop()
		tick = t.C
	}
	for {
		var why string
		select {
		case <-ctx.Done():
			return
		case <-tick:
			why = "refresh"
		case sig := <-trigger:
			why = sig.String()
		}
		if reload == nil {
			log.Info("schema reload asked; the schema is compiled into the bridge and cannot change", slog.String("trigger", why))
			continue
		}
		files, err := reload(ctx)
		if err == nil {
			err = h.UpdateFiles(files)
		}
		switch {
		case ctx.Err() != nil:
			return // shutting down: the failure says nothing about the schema
		case err != nil:
			log.Warn("schema reload failed; keeping the current schema", slog.String("trigger", why), slog.Any("error", err))
		default:
			log.Info("schema reloaded", slog.String("trigger", why), slog.Int("files", files.NumFiles()))
		}
	}
}
