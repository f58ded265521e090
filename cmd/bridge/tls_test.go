package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files
// and returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bridge test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLSMultiplexesSSEStreamsOverHTTP2(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	cfg, err := parseFlags([]string{"-demo", "-tls-cert", certFile, "-tls-key", keyFile})
	if err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(startBridge(t, cfg), "http://", "https://", 1)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}

	// Browsers open at most six HTTP/1.1 connections per host; over HTTP/2
	// every stream shares one. Hold ten streams open at once.
	const streams = 10
	var (
		mu    sync.Mutex
		conns = make(map[net.Conn]bool)
		wg    sync.WaitGroup
		errs  = make(chan error, streams)
		open  sync.WaitGroup
	)
	stop := make(chan struct{})
	open.Add(streams)
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
				mu.Lock()
				conns[info.Conn] = true
				mu.Unlock()
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet,
				base+"/demo.v1.TickerService/Watch?symbol=A&interval_ms=20", nil)
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				open.Done()
				return
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				errs <- &protoError{resp.Proto}
			}
			r := bridgetest.NewSSEReader(resp.Body)
			for {
				ev, err := r.Next()
				if err != nil {
					errs <- err
					break
				}
				if ev.Type == "message" {
					break
				}
			}
			open.Done()
			<-stop // keep the stream open until every stream is
		}()
	}
	open.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(conns) != 1 {
		t.Fatalf("%d streams used %d connections, want 1", streams, len(conns))
	}
}

type protoError struct{ proto string }

func (e *protoError) Error() string { return "response over " + e.proto + ", want HTTP/2" }

func TestH2CServesHTTP2InCleartext(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-demo", "-h2c"})
	if err != nil {
		t.Fatal(err)
	}
	base := startBridge(t, cfg)
	transport := &http.Transport{Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport}).Get(base + "/demo.v1.TickerService/Watch?symbol=A&limit=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
}
