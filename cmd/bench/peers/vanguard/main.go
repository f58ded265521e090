// Command vanguard is make bench-peers' connectrpc vanguard-go proxy: it
// serves the demo backend's EchoService to Connect, gRPC-Web and REST
// clients by transcoding every call to gRPC (protobuf) and sending it to
// the backend over h2c, as a vanguard deployment in front of a gRPC server
// does. It is its own module, so the bridge's go.mod never depends on
// vanguard; it imports the demo protos from the bridge's module (a
// replace directive) for their descriptors.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"connectrpc.com/vanguard"
	"golang.org/x/net/http2"

	_ "github.com/grpcbridge/grpcbridge/gen/demo/v1" // registers demo.v1's descriptors
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen on this loopback `host:port`")
	backend := flag.String("backend", "127.0.0.1:9090", "the gRPC backend's `host:port` (h2c)")
	flag.Parse()
	if err := run(*addr, *backend); err != nil {
		fmt.Fprintf(os.Stderr, "vanguard: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, backend string) error {
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backend})
	// gRPC needs HTTP/2: cleartext, with prior knowledge, as to any gRPC
	// server without TLS.
	proxy.Transport = &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	proxy.FlushInterval = -1 // streams: every write goes out at once
	svc := vanguard.NewService("demo.v1.EchoService", proxy,
		vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
		vanguard.WithTargetCodecs(vanguard.CodecProto))
	tc, err := vanguard.NewTranscoder([]*vanguard.Service{svc})
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: tc, ReadHeaderTimeout: 10 * time.Second}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("vanguard: serving demo.v1.EchoService on %s, backend %s", addr, backend)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}
