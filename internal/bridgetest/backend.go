// Package bridgetest holds test helpers shared by the bridge's packages: an
// in-memory gRPC backend and a spec-following Server-Sent Events reader.
package bridgetest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

const bufSize = 1 << 20

// NewBackend starts a real gRPC server on an in-memory listener, lets
// register add services to it, and returns a client connection to it. The
// server and the connection are closed when the test ends.
func NewBackend(tb testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	tb.Helper()
	lis := bufconn.Listen(bufSize)
	srv := grpc.NewServer()
	register(srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return lis.DialContext(ctx)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		tb.Fatalf("dial in-memory backend: %v", err)
	}
	tb.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-served
	})
	return conn
}
