package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// startTLSBackend serves the demo services over TLS with the certificate,
// requiring and checking client certificates against clientCAs when it is
// not nil (mTLS).
func startTLSBackend(t *testing.T, certFile, keyFile string, clientCAs *x509.CertPool) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientCAs
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := demo.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// echoOnce makes one Echo call through conn.
func echoOnce(t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	stream, err := demov1.NewEchoServiceClient(conn).Echo(t.Context())
	if err != nil {
		return err
	}
	if err := stream.Send(&demov1.EchoRequest{Text: "x"}); err != nil {
		_, err = stream.Recv()
		return err
	}
	_ = stream.CloseSend()
	_, err = stream.Recv()
	return err
}

func TestBackendTLS(t *testing.T) {
	t.Parallel()
	serverCert, serverKey, _ := selfSigned(t)
	clientCert, clientKey, clientPool := selfSigned(t)
	caFile := serverCert // self-signed: the certificate is its own CA
	plain := startTLSBackend(t, serverCert, serverKey, nil)
	mutual := startTLSBackend(t, serverCert, serverKey, clientPool)

	for _, tc := range []struct {
		name    string
		target  string
		tls     *BackendTLS
		wantErr codes.Code // OK: the call works
	}{
		{"TLS", plain, &BackendTLS{CA: caFile}, codes.OK},
		{"cleartext to a TLS backend", plain, nil, codes.Unavailable},
		{"unknown CA", plain, &BackendTLS{}, codes.Unavailable},
		{"mTLS", mutual, &BackendTLS{CA: caFile, Cert: clientCert, Key: clientKey}, codes.OK},
		{"mTLS without a client certificate", mutual, &BackendTLS{CA: caFile}, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := dialBackend(BackendConfig{Target: tc.target, TLS: tc.tls})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := status.Code(echoOnce(t, conn)); got != tc.wantErr {
				t.Fatalf("call: %v, want %v", got, tc.wantErr)
			}
		})
	}
}

func TestBackendTLSConfigErrors(t *testing.T) {
	t.Parallel()
	notPEM := writeConfig(t, "not a certificate")
	for _, tc := range []struct {
		tls  *BackendTLS
		want string
	}{
		{&BackendTLS{CA: "/nonexistent/ca.pem"}, "tls ca: open /nonexistent/ca.pem"},
		{&BackendTLS{CA: notPEM}, "no PEM certificate in it"},
		{&BackendTLS{Cert: notPEM, Key: notPEM}, "tls client certificate"},
	} {
		_, err := dialBackend(BackendConfig{Target: "127.0.0.1:1", TLS: tc.tls})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error containing %q", tc.tls, err, tc.want)
		}
	}
	_ = os.Remove(notPEM)
}

func TestKeepaliveOptions(t *testing.T) {
	t.Parallel()
	if opts := keepaliveOptions(0, 20*time.Second); len(opts) != 0 {
		t.Errorf("keepalive off: %d dial options, want none", len(opts))
	}
	if opts := keepaliveOptions(time.Minute, 20*time.Second); len(opts) != 1 {
		t.Errorf("keepalive on: %d dial options, want one", len(opts))
	}
}
