package demo_test

import (
	"context"
	"net"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// TestMain fails the package if any goroutine, such as a stream handler or a
// chat receive goroutine, is still running once every test is done.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// serve runs srv on an in-memory listener until the test ends.
func serve(t *testing.T, srv *grpc.Server) *bufconn.Listener {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis
}

// dial returns a client connection to lis, closed when the test ends.
func dial(t *testing.T, lis *bufconn.Listener, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return lis.DialContext(ctx)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)
	conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// dialDemo starts demo.NewServer and returns a connection to it.
func dialDemo(t *testing.T) *grpc.ClientConn {
	t.Helper()
	// WaitForHandlers makes Stop wait for handlers to return, so that each
	// test's goroutines are gone when it ends.
	return dial(t, serve(t, demo.NewServer(grpc.WaitForHandlers(true))))
}

// wantStatus fails the test unless err is a status with code and, when msg
// is not empty, that message.
func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || (msg != "" && st.Message() != msg) {
		t.Fatalf("got error %v, want status %v %q", err, code, msg)
	}
}
