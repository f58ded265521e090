// Command demo serves the demo gRPC services (ticker, chat and echo) with
// server reflection and health checking, as a backend for grpcbridge.
//
// Usage:
//
//	demo [-addr host:port]
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// shutdownTimeout bounds the graceful stop. Chat and ticker streams can stay
// open indefinitely, so waiting for them without a bound could hang forever.
const shutdownTimeout = 5 * time.Second

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "address to listen on")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default handling so that a second
	// one kills the process even if the graceful stop is still under way.
	context.AfterFunc(ctx, stop)

	if err := run(ctx, *addr); err != nil {
		slog.Error("demo server failed", "err", err)
		os.Exit(1)
	}
}

// run serves on addr until ctx is done, then stops the server gracefully,
// cutting remaining RPCs off after shutdownTimeout.
func run(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := demo.NewServer()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	slog.Info("demo gRPC server listening", "addr", lis.Addr().String())

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}

	slog.Info("shutting down", "timeout", shutdownTimeout)
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(shutdownTimeout):
		slog.Warn("graceful stop timed out; closing remaining streams")
		srv.Stop() // also makes the pending GracefulStop return
		<-stopped
	}

	// Serve reports ErrServerStopped if the signal came before it started.
	if err := <-serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	slog.Info("demo gRPC server stopped")
	return nil
}
