package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// roundRobin spreads calls over every address a backend target resolves to
// (dns:/// returns them all), rather than gRPC's default of the first one.
const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// dialBackend creates the client connection to a backend. gRPC resolves
// the target itself (dns:///, xds:/// where the process is set up for it)
// and connects lazily, so a backend that is down at start-up is reported
// by /readyz, not fatal.
func dialBackend(b BackendConfig, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds, err := backendCredentials(b.TLS)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", b.Target, err)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(roundRobin),
	}, extra...)
	conn, err := grpc.NewClient(b.Target, opts...)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", b.Target, err)
	}
	return conn, nil
}

// minBackendKeepalive is grpc-go's floor for a client's keepalive time: a
// shorter one is raised to it.
const minBackendKeepalive = 10 * time.Second

// keepaliveOptions are the dial options of the backend keepalive: HTTP/2
// pings after interval of quiet, while calls are open (a connection without
// calls needs none, and servers refuse pings without streams by default),
// so that a black-holed path (a lost NAT entry, a peer gone without a FIN)
// ends its streams with UNAVAILABLE instead of leaving them waiting, with
// the browsers getting heartbeats and never reconnecting. None when
// interval is 0.
func keepaliveOptions(interval, timeout time.Duration) []grpc.DialOption {
	if interval <= 0 {
		return nil
	}
	return []grpc.DialOption{grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: interval, Timeout: timeout})}
}

// backendCredentials builds the transport security of a backend
// connection: cleartext without TLS settings, TLS verified against the CA
// file (or the system roots), and mTLS when a client certificate is given.
func backendCredentials(t *BackendTLS) (credentials.TransportCredentials, error) {
	if t == nil {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate in it", t.CA)
		}
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}
