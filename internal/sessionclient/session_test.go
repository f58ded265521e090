package sessionclient_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
	"github.com/grpcbridge/grpcbridge/internal/sessionclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 10 * time.Second

// newBridge serves the demo services with sessions on, on loopback, and
// returns the bridge's base URL.
func newBridge(t *testing.T, o bridge.SessionOptions) string {
	t.Helper()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	set := &descriptorpb.FileDescriptorSet{}
	for _, p := range []string{"demo/v1/echo.proto", "demo/v1/ticker.proto"} {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(p)
		if err != nil {
			t.Fatal(err)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	files, err := bridge.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	o.Keys = [][]byte{[]byte("0123456789abcdef0123456789abcdef-sessionclient")}
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithFiles(files), bridge.WithExpose("demo.v1.*"), bridge.WithSessions(o))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = h.Shutdown(ctx)
	})
	return srv.URL
}

var carriers = []struct {
	name string
	dial func(context.Context, string, sessionclient.Options) (*sessionclient.Session, error)
}{
	{"websocket", sessionclient.DialWebSocket},
	{"http", sessionclient.DialHTTP},
}

// forEachCarrier runs f with a session over each carrier.
func forEachCarrier(t *testing.T, o bridge.SessionOptions, opts sessionclient.Options, f func(t *testing.T, ctx context.Context, s *sessionclient.Session)) {
	for _, c := range carriers {
		t.Run(c.name, func(t *testing.T) {
			base := newBridge(t, o)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			s, err := c.dial(ctx, base, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			f(t, ctx, s)
		})
	}
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// echoRoundTrips does n round trips on an Echo call, then half-closes it
// and expects OK.
func echoRoundTrips(ctx context.Context, s *sessionclient.Session, n int, text string) error {
	c, err := s.Open("/demo.v1.EchoService/Echo", nil)
	if err != nil {
		return err
	}
	for i := range n {
		b, _ := proto.Marshal(&demov1.EchoRequest{Text: text})
		if err := c.Send(ctx, b); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		b, err := c.Recv(ctx)
		if err != nil {
			return fmt.Errorf("recv %d: %w", i, err)
		}
		var resp demov1.EchoResponse
		if err := proto.Unmarshal(b, &resp); err != nil {
			return err
		}
		if resp.Text != text || resp.Seq != uint64(i+1) {
			return fmt.Errorf("response %d: %v, want text %q seq %d", i, &resp, text, i+1)
		}
	}
	c.CloseSend()
	if _, err := c.Recv(ctx); err != io.EOF {
		return fmt.Errorf("after half-close: %v, want io.EOF (OK)", err)
	}
	return nil
}

func TestEveryCallKindOverBothCarriers(t *testing.T) {
	forEachCarrier(t, bridge.SessionOptions{}, sessionclient.Options{}, func(t *testing.T, ctx context.Context, s *sessionclient.Session) {
		if err := echoRoundTrips(ctx, s, 5, "bidi"); err != nil {
			t.Errorf("bidi: %v", err)
		}

		// Unary.
		c, err := s.Open("/demo.v1.TickerService/Quote", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Send(ctx, marshal(t, &demov1.QuoteRequest{Symbol: "ACME"})); err != nil {
			t.Fatal(err)
		}
		b, err := c.Recv(ctx)
		var tick demov1.Tick
		if err != nil || proto.Unmarshal(b, &tick) != nil || tick.Symbol != "ACME" {
			t.Errorf("unary: %v %v, want a tick of ACME", &tick, err)
		}
		if _, err := c.Recv(ctx); err != io.EOF {
			t.Errorf("unary end: %v, want io.EOF", err)
		}

		// Server streaming, then a failure status with its code.
		c, _ = s.Open("/demo.v1.EchoService/Stream", nil)
		if err := c.Send(ctx, marshal(t, &demov1.StreamRequest{Count: 5, FailAfter: 3, FailCode: int32(codes.Aborted), FailMessage: "enough"})); err != nil {
			t.Fatal(err)
		}
		got := 0
		for {
			if _, err = c.Recv(ctx); err != nil {
				break
			}
			got++
		}
		if st := status.Convert(err); got != 3 || st.Code() != codes.Aborted || st.Message() != "enough" {
			t.Errorf("stream: %d messages then %v; want 3 then ABORTED \"enough\"", got, err)
		}

		// A method that is not exposed ends the call, not the session.
		c, _ = s.Open("/nope.v1.Nope/Nope", nil)
		if _, err := c.Recv(ctx); status.Code(err) != codes.NotFound {
			t.Errorf("unexposed method: %v, want NOT_FOUND", err)
		}
		if err := echoRoundTrips(ctx, s, 1, "after"); err != nil {
			t.Errorf("the session after a failed call: %v", err)
		}
	})
}

func TestHundredConcurrentCallsOnOneSession(t *testing.T) {
	forEachCarrier(t, bridge.SessionOptions{}, sessionclient.Options{}, func(t *testing.T, ctx context.Context, s *sessionclient.Session) {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := range 100 {
			wg.Go(func() {
				if err := echoRoundTrips(ctx, s, 20, fmt.Sprint("call ", i)); err != nil {
					errs <- fmt.Errorf("call %d: %w", i, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestCreditsKeepALongStreamGoing(t *testing.T) {
	// 400 messages of ~1 KiB through a 4 KiB downstream window (and a
	// 4 KiB upstream one): the stream completes only if Recv grants
	// credit back, and the bridge's WINDOW frames are taken.
	o := bridge.SessionOptions{Window: 4096}
	forEachCarrier(t, o, sessionclient.Options{Window: 4096}, func(t *testing.T, ctx context.Context, s *sessionclient.Session) {
		c, _ := s.Open("/demo.v1.EchoService/Stream", nil)
		if err := c.Send(ctx, marshal(t, &demov1.StreamRequest{Count: 400, Size: 1000})); err != nil {
			t.Fatal(err)
		}
		n := 0
		var err error
		for ; ; n++ {
			if _, err = c.Recv(ctx); err != nil {
				break
			}
		}
		if n != 400 || err != io.EOF {
			t.Errorf("got %d messages then %v, want 400 then io.EOF", n, err)
		}
		// Upstream: 20 KiB of echo through the 4 KiB window.
		e, _ := s.Open("/demo.v1.EchoService/Echo", nil)
		for i := range 20 {
			if err := e.Send(ctx, marshal(t, &demov1.EchoRequest{Payload: make([]byte, 1000)})); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		for i := range 20 {
			if _, err := e.Recv(ctx); err != nil {
				t.Fatalf("recv %d: %v", i, err)
			}
		}
		e.CloseSend()
		if _, err := e.Recv(ctx); err != io.EOF {
			t.Errorf("echo end: %v, want io.EOF", err)
		}
	})
}

func TestCloseEndsOpenCallsAndRefusesNewOnes(t *testing.T) {
	forEachCarrier(t, bridge.SessionOptions{}, sessionclient.Options{}, func(t *testing.T, ctx context.Context, s *sessionclient.Session) {
		c, _ := s.Open("/demo.v1.EchoService/Echo", nil)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Recv(ctx); status.Code(err) != codes.Canceled {
			t.Errorf("open call after Close: %v, want CANCELED", err)
		}
		if _, err := s.Open("/demo.v1.EchoService/Echo", nil); err == nil {
			t.Error("Open after Close succeeded")
		}
		select {
		case <-s.Done():
		default:
			t.Error("Done not closed after Close")
		}
	})
}

func TestDialRefusedWithoutSessions(t *testing.T) {
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, c := range carriers {
		_, err := c.dial(ctx, srv.URL, sessionclient.Options{})
		const want = "HTTP 404"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: dial = %v, want an error naming %q", c.name, err, want)
		}
	}
}
