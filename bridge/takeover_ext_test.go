package bridge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/grpcbridge/grpcbridge/bridge"
	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// takeoverSafetyTimeout bounds every wait of these tests, so that a bug
// fails a test instead of hanging it. It is never what a test asserts.
const takeoverSafetyTimeout = 10 * time.Second

// echoStreamPath asks the demo's Echo Stream for count messages of size bytes
// each, as fast as it can.
func echoStreamPath(count, size int) string {
	return fmt.Sprintf("/demo.v1.EchoService/Stream?count=%d&size=%d", count, size)
}

// takeoverServer serves h over HTTP/1.1 only, in cleartext or TLS, and
// returns its address and the client TLS configuration (nil in
// cleartext).
func takeoverServer(t *testing.T, h http.Handler, useTLS bool) (string, *tls.Config) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if !useTLS {
		srv.Start()
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String(), nil
	}
	srv.TLS = &tls.Config{NextProtos: []string{"http/1.1"}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return srv.Listener.Addr().String(), cfg
}

// TestSSETakeoverDeliversTheTail sends bytes after the request on the
// connection of a stream that the bridge took over from net/http, and
// reads the stream only after the bridge has written all of it and closed
// the connection, as a busy browser would. Unread bytes must not turn the
// close into a reset that throws the end of the stream away: every
// message and the end event arrive, and the read ends with EOF.
func TestSSETakeoverDeliversTheTail(t *testing.T) {
	t.Parallel()
	const count, size = 200, 2000 // about 730 KB of events
	pipelined := "GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n"
	for _, tc := range []struct {
		name  string
		tls   bool
		extra string // sent after the request
		// early: with the request, so that net/http's reader may have
		// buffered it before the takeover; else after the response's head.
		early bool
	}{
		{name: "stray CRLF", extra: "\r\n"},
		{name: "pipelined request", extra: pipelined},
		{name: "stray CRLF with the request", extra: "\r\n", early: true},
		{name: "pipelined request with the request", extra: pipelined, early: true},
		{name: "TLS/stray CRLF", tls: true, extra: "\r\n"},
		{name: "TLS/pipelined request", tls: true, extra: pipelined},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newSSEEnv(t) // for its handler: this test needs its own server
			addr, tlsConfig := takeoverServer(t, env.handler, tc.tls)
			var (
				conn net.Conn
				err  error
			)
			dialer := &net.Dialer{Timeout: takeoverSafetyTimeout}
			if tc.tls {
				conn, err = tls.DialWithDialer(dialer, "tcp", addr, tlsConfig)
			} else {
				conn, err = dialer.Dial("tcp", addr)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(takeoverSafetyTimeout))
			req := "GET " + echoStreamPath(count, size) + " HTTP/1.1\r\nHost: bridge\r\nAccept: text/event-stream\r\n\r\n"
			if tc.early {
				req += tc.extra
			}
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read the response head: %v", err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if !tc.early {
				if _, err := io.WriteString(conn, tc.extra); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(300 * time.Millisecond) // the bridge writes the rest and closes meanwhile
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read the stream: %v after %d bytes", err, len(body))
			}
			r := bridgetest.NewSSEReader(bytes.NewReader(body))
			var msgs int
			var last bridgetest.Event
			for {
				ev, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("events: %v", err)
				}
				if ev.Type == "message" {
					msgs++
				}
				last = ev
			}
			if msgs != count {
				t.Errorf("%d messages of %d in %d bytes", msgs, count, len(body))
			}
			if last.Type != "end" || decodeStatus(t, last.Data).Code != codes.OK {
				t.Errorf("last event %q %s, want the end event with code 0", last.Type, last.Data)
			}
		})
	}
}

// panicRecorder is a [bridge.Metrics] and [bridge.PanicMetrics] whose
// stream observers panic once, in the call that on names ("sent" or
// "received"), and a log sink. It records the panics the bridge recovered
// from, the streams' final codes and the log's Error records.
type panicRecorder struct {
	on     string
	armed  atomic.Bool
	panics atomic.Int32
	ended  chan codes.Code

	mu     sync.Mutex
	errors []map[string]any // the log's Error records
}

func newPanicRecorder(on string) *panicRecorder {
	r := &panicRecorder{on: on, ended: make(chan codes.Code, 16)}
	r.armed.Store(on != "")
	return r
}

// options makes the bridge report to r.
func (r *panicRecorder) options() []bridge.Option {
	log := slog.New(slog.NewJSONHandler(r, &slog.HandlerOptions{Level: slog.LevelError}))
	return []bridge.Option{bridge.WithMetrics(r), bridge.WithLogger(log)}
}

func (r *panicRecorder) Write(p []byte) (int, error) {
	var rec map[string]any
	if err := json.Unmarshal(p, &rec); err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.errors = append(r.errors, rec)
	r.mu.Unlock()
	return len(p), nil
}

// panicHere panics the first time it is called with r.on.
func (r *panicRecorder) panicHere(at string) {
	if at == r.on && r.armed.CompareAndSwap(true, false) {
		panic("test: a panic in " + at)
	}
}

func (r *panicRecorder) StreamStarted(string, string, bool) bridge.StreamObserver { return r }
func (r *panicRecorder) StreamPanicked(string, string)                            { r.panics.Add(1) }
func (r *panicRecorder) MessageSent(int)                                          { r.panicHere("sent") }
func (r *panicRecorder) MessageReceived(int)                                      { r.panicHere("received") }
func (r *panicRecorder) StreamEnded(code codes.Code, _ int, _ bool) {
	select {
	case r.ended <- code:
	default:
	}
}

// check waits for the stream's end and checks that it ended with
// INTERNAL after exactly one panic, logged at Error with its stack.
func (r *panicRecorder) check(t *testing.T) {
	t.Helper()
	select {
	case code := <-r.ended:
		if code != codes.Internal {
			t.Errorf("the stream ended with %v, want Internal", code)
		}
	case <-time.After(takeoverSafetyTimeout):
		t.Fatal("the stream did not end")
	}
	if n := r.panics.Load(); n != 1 {
		t.Errorf("%d panics counted, want 1", n)
	}
	if r.armed.Load() {
		t.Error("the test's panic did not happen")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errors) != 1 {
		t.Fatalf("%d Error log records, want 1: %v", len(r.errors), r.errors)
	}
	stack, _ := r.errors[0]["stack"].(string)
	if p, _ := r.errors[0]["panic"].(string); !strings.HasPrefix(p, "test: a panic in") || !strings.Contains(stack, "takeover_ext_test.go") {
		t.Errorf("log record %v: want the panic and its stack", r.errors[0])
	}
}

// panicBackend is a backend whose NewStream panics once when armed.
type panicBackend struct {
	grpc.ClientConnInterface
	armed atomic.Bool
}

func (b *panicBackend) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if b.armed.CompareAndSwap(true, false) {
		panic("test: a panic in the backend's NewStream")
	}
	return b.ClientConnInterface.NewStream(ctx, desc, method, opts...)
}

// panicWriter is a ResponseWriter, or a connection, whose Write panics
// once when armed: a middleware's or a listener's code.
type panicWriter struct {
	http.ResponseWriter
	armed *atomic.Bool
}

func (w panicWriter) Write(p []byte) (int, error) {
	if w.armed.CompareAndSwap(true, false) {
		panic("test: a panic in Write")
	}
	return w.ResponseWriter.Write(p)
}

func (w panicWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type panicConn struct {
	net.Conn
	armed *atomic.Bool
}

func (c panicConn) Write(p []byte) (int, error) {
	if c.armed.CompareAndSwap(true, false) {
		panic("test: a panic in Write")
	}
	return c.Conn.Write(p)
}

type panicListener struct {
	net.Listener
	armed *atomic.Bool
}

func (l panicListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return panicConn{Conn: c, armed: l.armed}, nil
}

// TestSSEPanicEndsOneStream makes the code that each goroutine of an SSE
// stream runs panic once, over HTTP/1.1 (a connection taken over from
// net/http, whose goroutines net/http does not recover) and over HTTP/2
// (the ResponseWriter). The stream ends with INTERNAL, as an error event
// once it is committed or a 500 JSON answer before; the panic is counted
// and logged with its stack; the bridge serves the next stream.
func TestSSEPanicEndsOneStream(t *testing.T) {
	t.Parallel()
	type setup struct {
		on      string // the observer call that panics, if any
		backend bool   // the backend's NewStream panics
		write   bool   // a Write to the browser panics
		shared  bool   // the method is shared
	}
	for _, tc := range []struct {
		name string
		setup
		// want: the stream's HTTP status and, for 200, its last event
		wantHTTP  int
		wantEvent string
	}{
		{name: "serve", setup: setup{on: "sent"}, wantHTTP: 200, wantEvent: "error"},
		{name: "open", setup: setup{backend: true}, wantHTTP: 500},
		{name: "request count", setup: setup{on: "received"}, wantHTTP: 500},
		{name: "shared receiver", setup: setup{backend: true, shared: true}, wantHTTP: 500},
		{name: "shared relay", setup: setup{on: "sent", shared: true}, wantHTTP: 200, wantEvent: "error"},
		{name: "writer", setup: setup{write: true}},
	} {
		for _, h2 := range []bool{false, true} {
			name := tc.name + "/HTTP1.1"
			if h2 {
				name = tc.name + "/h2c"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				rec := newPanicRecorder(tc.on)
				conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
				backend := &panicBackend{ClientConnInterface: conn}
				backend.armed.Store(tc.backend)
				opts := append(rec.options(), bridge.WithBackend(backend), bridge.WithExpose("demo.v1.*"))
				if tc.shared {
					opts = append(opts, bridge.WithSSEOptions("demo.v1.EchoService/Stream", bridge.SSEOptions{Shared: true}))
				}
				h, err := bridge.NewHandler(opts...)
				if err != nil {
					t.Fatal(err)
				}
				writeArmed := new(atomic.Bool)
				writeArmed.Store(tc.write)
				srv := httptest.NewUnstartedServer(h)
				client := http.DefaultClient
				if h2 {
					srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						h.ServeHTTP(panicWriter{ResponseWriter: w, armed: writeArmed}, r)
					})
					srv.Config.Protocols = new(http.Protocols)
					srv.Config.Protocols.SetUnencryptedHTTP2(true)
					transport := &http.Transport{Protocols: new(http.Protocols)}
					transport.Protocols.SetUnencryptedHTTP2(true)
					t.Cleanup(transport.CloseIdleConnections)
					client = &http.Client{Transport: transport}
				} else {
					srv.Listener = panicListener{Listener: srv.Listener, armed: writeArmed}
				}
				srv.Start()
				t.Cleanup(srv.Close)
				do := func(query string) (*http.Response, error) {
					ctx, cancel := context.WithTimeout(t.Context(), takeoverSafetyTimeout)
					t.Cleanup(cancel)
					req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+echoStreamPath(3, 10)+query, nil)
					if err != nil {
						t.Fatal(err)
					}
					resp, err := client.Do(req)
					if err == nil {
						t.Cleanup(func() { _ = resp.Body.Close() })
					}
					return resp, err
				}
				get := func() *http.Response {
					resp, err := do("")
					if err != nil {
						t.Fatalf("GET: %v", err)
					}
					return resp
				}

				switch {
				case tc.write:
					// Nothing reaches the browser once a write failed: not
					// even the head, which was in that write. The call is
					// still on (the next message is 50 ms away), and the
					// failed write ends it.
					if resp, err := do("&interval_ms=50"); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
					}
				case tc.wantHTTP == http.StatusOK:
					resp := get()
					ev := lastOfType(t, events(t, resp), tc.wantEvent)
					if st := decodeStatus(t, ev.Data); st.Code != codes.Internal {
						t.Errorf("%s event %s, want code 13", tc.wantEvent, ev.Data)
					}
				default:
					if st := errorBody(t, get(), tc.wantHTTP); st.Code != codes.Internal {
						t.Errorf("status %+v, want code 13", st)
					}
				}
				rec.check(t)

				// The bridge serves on.
				evs := events(t, get())
				if len(messages(evs)) != 3 || decodeStatus(t, lastOfType(t, evs, "end").Data).Code != codes.OK {
					t.Errorf("the next stream: %+v, want 3 messages and the end", evs)
				}
			})
		}
	}
}

// TestWSPanicEndsOneSession makes the WebSocket reader (which counts the
// requests) and the receiver (which counts the responses) panic once: the
// session ends with an INTERNAL status frame and close code 1011, the
// panic is counted and logged, and the bridge serves the next session.
func TestWSPanicEndsOneSession(t *testing.T) {
	t.Parallel()
	for _, on := range []string{"received", "sent"} {
		t.Run(on, func(t *testing.T) {
			t.Parallel()
			rec := newPanicRecorder(on)
			env := newWSEnv(t, nil, rec.options()...)
			c := env.dial(t, "/demo.v1.EchoService/Echo", nil)
			c.sendMsg(&demov1.EchoRequest{Text: "hi"})
			c.end(true, codes.Internal, 1011)
			rec.check(t)

			c = env.dial(t, "/demo.v1.EchoService/Echo", nil)
			c.sendMsg(&demov1.EchoRequest{Text: "again"})
			var resp demov1.EchoResponse
			c.recv(&resp)
			if resp.GetText() != "again" {
				t.Errorf("the next session echoed %q", resp.GetText())
			}
		})
	}
}

// TestGRPCPanicEndsOneCall makes the native gRPC pump (which counts the
// requests) and the stream handler (which counts the responses) panic
// once: the call ends with INTERNAL, the panic is counted and logged, and
// the bridge serves the next call.
func TestGRPCPanicEndsOneCall(t *testing.T) {
	t.Parallel()
	for _, on := range []string{"received", "sent"} {
		t.Run(on, func(t *testing.T) {
			t.Parallel()
			rec := newPanicRecorder(on)
			env := newPTEnv(t, nil, rec.options()...)
			echo := demov1.NewEchoServiceClient(env.conn)
			call := func() error {
				ctx, cancel := context.WithTimeout(t.Context(), takeoverSafetyTimeout)
				defer cancel()
				stream, err := echo.Echo(ctx)
				if err != nil {
					return err
				}
				if err := stream.Send(&demov1.EchoRequest{Text: "hi"}); err != nil {
					return err
				}
				_ = stream.CloseSend()
				for {
					if _, err := stream.Recv(); err != nil {
						return err
					}
				}
			}
			if err := call(); status.Code(err) != codes.Internal {
				t.Errorf("call: %v, want Internal", err)
			}
			rec.check(t)
			if err := call(); !errors.Is(err, io.EOF) {
				t.Errorf("the next call: %v, want its end", err)
			}
		})
	}
}
