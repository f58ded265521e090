package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
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
// start-up and on every reload. A backend that is not reachable yet is
// waited for within it (wait-for-ready), so that a bridge and its backends
// may start together.
const reflectionTimeout = 10 * time.Second

// descriptorsPoll is how often the -descriptors file is looked at for a
// change: one stat, and a hash of the file only when its size or
// modification time moved.
const descriptorsPoll = 2 * time.Second

// builtinDescriptors is the -descriptors value that names the descriptors
// compiled into the bridge (the demo services and the protos the bridge
// itself imports), outside -demo. A file of that name is ./builtin.
const builtinDescriptors = "builtin"

// schemaSource is where the bridge's schema comes from.
type schemaSource int

const (
	schemaCompiledIn schemaSource = iota // the descriptors compiled into the bridge: -demo, -descriptors builtin
	schemaFile                           // -descriptors file, polled for changes and re-read on SIGHUP
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

// schemaSourceOf tells where cfg's schema comes from: -descriptors when
// given, else the compiled-in descriptors with -demo, else server
// reflection of the backends that reflects names. validate has made sure
// that the sources do not clash and that, outside -demo, one of them
// holds.
func schemaSourceOf(cfg *Config) schemaSource {
	switch {
	case cfg.Descriptors == builtinDescriptors:
		return schemaCompiledIn
	case cfg.Descriptors != "":
		return schemaFile
	case cfg.Demo:
		return schemaCompiledIn
	case len(reflecting(cfg)) > 0:
		return schemaReflection
	default:
		return schemaCompiledIn
	}
}

// reflecting returns the indexes in cfg.Backends of the backends whose
// schema comes from server reflection: without -descriptors and outside
// -demo, every backend, unless -reflection=false or its own reflection:
// false says otherwise.
func reflecting(cfg *Config) []int {
	if cfg.Descriptors != "" || cfg.Demo {
		return nil
	}
	var idx []int
	for i, b := range cfg.Backends {
		asks := cfg.Reflection
		if b.Reflection != nil {
			asks = *b.Reflection
		}
		if asks {
			idx = append(idx, i)
		}
	}
	return idx
}

// validateSchema checks that exactly one schema source holds: -descriptors
// and a backend's reflection: true clash, and so do -reflection=false and
// a backend's reflection: true; outside -demo, without -descriptors, some
// backend must be asked by reflection.
func (c *Config) validateSchema() []error {
	var errs []error
	for i, b := range c.Backends {
		if b.Reflection == nil || !*b.Reflection {
			continue
		}
		switch {
		case c.Descriptors != "":
			errs = append(errs, fmt.Errorf("backends[%d]: reflection and -descriptors are two schema sources; pick one", i))
		case !c.Reflection:
			errs = append(errs, fmt.Errorf("backends[%d]: reflection: true, but -reflection=false turns server reflection off", i))
		}
	}
	if c.Demo || c.Descriptors != "" || len(c.Backends) == 0 {
		return errs
	}
	const give = "give -descriptors file.binpb (buf build -o), or -descriptors builtin for the descriptors compiled into the bridge"
	switch {
	case !c.Reflection:
		errs = append(errs, errors.New("-reflection=false and no -descriptors: nothing describes the backends' services; "+give))
	case len(reflecting(c)) == 0:
		errs = append(errs, errors.New("every backend has reflection: false and no -descriptors was given: nothing describes their services; "+give))
	}
	return errs
}

// loadSchema loads the schema from its source (see [schemaSourceOf]): the
// -descriptors file, the descriptors compiled into the bridge, or server
// reflection of the backends that [reflecting] names (conns holds their
// connections by index in cfg.Backends). Reflection asks every such
// backend at once, each within reflectionTimeout, and merges the answers.
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
	asked := reflecting(cfg)
	sets := make([][]*descriptorpb.FileDescriptorProto, len(asked))
	errs := make([]error, len(asked))
	var wg sync.WaitGroup
	for k, i := range asked {
		b, conn := cfg.Backends[i], conns[i]
		if conn == nil {
			errs[k] = fmt.Errorf("backend %s: no connection", backendName(b))
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, reflectionTimeout)
			defer cancel()
			set, err := bridge.FetchReflection(ctx, reflectionConn{conn})
			switch {
			case errors.Is(err, bridge.ErrNoReflection):
				errs[k] = fmt.Errorf("backend %s: %w; register it on the backend (grpc-go: reflection.Register), or give -descriptors (a buf build -o file), or, when other backends describe its services, set reflection: false for it in the config file", backendName(b), err)
			case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
				errs[k] = fmt.Errorf("backend %s: no answer to server reflection within %v: %w", backendName(b), reflectionTimeout, err)
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
		names := make([]string, len(asked))
		for k, i := range asked {
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

// reflectionConn is a backend's connection as the reflection fetch uses
// it. Each call waits, within its context, for the backend to be
// reachable instead of failing at once (wait-for-ready), so the start-up
// fetch rides out a backend that starts a moment after the bridge. And it
// takes answers up to reflectionMaxBytes whatever -response-max-bytes
// says: that limit is for the messages browsers get, and one file with
// its imports can exceed a small one.
type reflectionConn struct{ grpc.ClientConnInterface }

// reflectionMaxBytes bounds one server reflection answer.
const reflectionMaxBytes = 64 << 20

func (c reflectionConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.ClientConnInterface.NewStream(ctx, desc, method, append(opts, grpc.WaitForReady(true), grpc.MaxCallRecvMsgSize(reflectionMaxBytes))...)
}

// explainSchemaError adds to an error of [bridge.NewHandler] why the schema
// may lack what -expose asks for: the descriptors compiled into the bridge
// (-descriptors builtin) rarely hold the backends' services, and backends
// with reflection: false serve only what the others describe.
func explainSchemaError(cfg *Config, err error) error {
	if err == nil || cfg.Demo || !strings.Contains(err.Error(), "matches no method of the schema") {
		return err
	}
	switch schemaSourceOf(cfg) {
	case schemaCompiledIn:
		return fmt.Errorf("%w: -descriptors builtin is only the schema compiled into the bridge (the demo services); drop it to ask the backends by server reflection, or give a descriptor file", err)
	case schemaReflection:
		asked := make(map[int]bool)
		for _, i := range reflecting(cfg) {
			asked[i] = true
		}
		var plain []string
		for i, b := range cfg.Backends {
			if !asked[i] {
				plain = append(plain, backendName(b))
			}
		}
		if len(plain) > 0 {
			return fmt.Errorf("%w: the schema comes from the backends' server reflection; %s, with reflection: false, serve only what the others describe", err, strings.Join(plain, ", "))
		}
	}
	return err
}

// startSchemaWatch catches SIGHUP and runs [watchSchema] until ctx ends or
// stop is called; stop waits for it to return. SIGHUP is caught whatever
// the schema source, so that it never ends the bridge: with the
// compiled-in schema it is only logged. A -descriptors file is also
// polled every descriptorsPoll, and reflection refetched every
// -schema-refresh.
func startSchemaWatch(ctx context.Context, cfg *Config, h *bridge.Handler, conns map[int]*grpc.ClientConn, log *slog.Logger) (stop func()) {
	// Notify before the goroutine starts: once this returns, a SIGHUP is
	// the watcher's, never the default action, which ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	load := func(ctx context.Context) (*protoregistry.Files, error) { return loadSchema(ctx, cfg, conns) }
	var r schemaReload
	switch source := schemaSourceOf(cfg); source {
	case schemaReflection:
		r = schemaReload{load: load, every: cfg.SchemaRefresh, tick: "refresh"}
		log = log.With(slog.String("source", source.String()))
	case schemaFile:
		// The first look is taken now, a moment after serve read the file:
		// a change in between waits for the next one, or SIGHUP.
		f := &descriptorFile{path: cfg.Descriptors}
		f.changed()
		r = schemaReload{load: load, every: descriptorsPoll, tick: "file changed", poll: f.changed}
		log = log.With(slog.String("source", source.String()))
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer signal.Stop(hup)
		watchSchema(ctx, h, r, hup, log)
	}()
	return func() {
		cancel()
		<-done
	}
}

// schemaReload is how [watchSchema] reloads one schema source.
type schemaReload struct {
	// load reads the schema; nil: the schema cannot change.
	load func(context.Context) (*protoregistry.Files, error)
	// every is the period of the timer; 0: no timer.
	every time.Duration
	// tick names the timer's reloads in the log ("refresh", "file changed").
	tick string
	// poll, when set, is asked on every tick whether the source changed
	// since it was last asked, and a tick without a change loads nothing.
	// A trigger asks it too, so that what the trigger loads is not loaded
	// again at the next tick. nil: every tick loads.
	poll func() bool
}

// watchSchema reloads the schema on r's timer and whenever trigger
// delivers, until ctx ends, and swaps it into h. A failed reload is logged
// and h keeps its schema; streams already open keep theirs in any case.
// r.load nil means that the schema cannot change: triggers are only
// logged. Reloads run one at a time, in the caller's goroutine, which is
// also the only one that calls r.poll.
func watchSchema(ctx context.Context, h *bridge.Handler, r schemaReload, trigger <-chan os.Signal, log *slog.Logger) {
	var tick <-chan time.Time
	if r.every > 0 && r.load != nil {
		t := time.NewTicker(r.every)
		defer t.Stop()
		tick = t.C
	}
	for {
		var why string
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if r.poll != nil && !r.poll() {
				continue
			}
			why = r.tick
		case sig := <-trigger:
			why = sig.String()
			if r.poll != nil {
				r.poll()
			}
		}
		if r.load == nil {
			log.Info("schema reload asked; the schema is compiled into the bridge and cannot change", slog.String("trigger", why))
			continue
		}
		files, err := r.load(ctx)
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

// descriptorFile tells when the -descriptors file changes on disk. It
// keeps what the file was at the last look: its modification time and
// size, and a hash of its bytes, so that a file written again with the
// same bytes (a touch, a redeployed ConfigMap) loads nothing, and a broken
// file is reported once, not at every look. A look stats the file and
// reads it, streaming into the hash, only when its size or modification
// time moved. Used by one goroutine at a time.
type descriptorFile struct {
	path string
	last fileStamp
}

// fileStamp is what a file was at one look.
type fileStamp struct {
	modTime time.Time
	size    int64
	sum     [sha256.Size]byte
	err     string // why the file could not be read; "" when it could
}

// changed looks at the file and reports whether its bytes, or the reason
// it cannot be read, differ from the last look.
func (f *descriptorFile) changed() bool {
	now := lookAt(f.path, f.last)
	changed := now.sum != f.last.sum || now.err != f.last.err
	f.last = now
	return changed
}

// lookAt stamps the file at path; prev, the last stamp, saves reading a
// file whose size and modification time have not moved.
func lookAt(path string, prev fileStamp) fileStamp {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: err.Error()}
	}
	now := fileStamp{modTime: info.ModTime(), size: info.Size()}
	if prev.err == "" && now.size == prev.size && now.modTime.Equal(prev.modTime) {
		now.sum = prev.sum
		return now
	}
	file, err := os.Open(path)
	if err != nil {
		return fileStamp{err: err.Error()}
	}
	defer file.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, file); err != nil {
		return fileStamp{err: err.Error()}
	}
	hash.Sum(now.sum[:0])
	return now
}
