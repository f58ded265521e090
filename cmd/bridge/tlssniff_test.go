package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// startTLSBridge serves the demo over TLS until the test ends, and returns
// the public listener's host:port and a pool that trusts its certificate.
func startTLSBridge(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool := selfSigned(t)
	cfg, err := parseFlags([]string{"-demo", "-tls-cert", certFile, "-tls-key", keyFile})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(startBridge(t, cfg), "http://"), pool
}

// dialRaw opens a TCP connection to addr that the test ends.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestTLSPortAnswersCleartextClients: a client without TLS on the TLS
// port is told so, whatever it speaks: cleartext HTTP/2 (not gRPC) a JSON
// 400 with UNAVAILABLE [msgTLSOnly] (gRPC's case is
// TestPlaintextGRPCOnTheTLSPortFailsAtOnce), HTTP/1.1 net/http's own 400,
// which the sniff leaves alone.
func TestTLSPortAnswersCleartextClients(t *testing.T) {
	t.Parallel()
	addr, _ := startTLSBridge(t)
	t.Run("HTTP/2 prior knowledge", func(t *testing.T) {
		t.Parallel()
		resp, err := priorKnowledgeClient(t).Get("http://" + addr + "/demo.v1.TickerService/Watch?symbol=A&limit=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" ||
			st.Code != int(codes.Unavailable) || st.Message != msgTLSOnly {
			t.Fatalf("%s %d %s %+v, want an HTTP/2 JSON 400 UNAVAILABLE %q", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"), st, msgTLSOnly)
		}
	})
	t.Run("HTTP/1.1", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, addr)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
			t.Fatalf("%d %q, want net/http's 400", resp.StatusCode, body)
		}
	})
}

// TestTLSSniffHoldsNoOneElse: clients that open a connection to the TLS
// port and then send nothing, or stop inside the HTTP/2 preface, do not
// keep a TLS client waiting, far within the server's handshake timeout
// (10s): the sniff is in each connection's own goroutine, not in Accept.
func TestTLSSniffHoldsNoOneElse(t *testing.T) {
	t.Parallel()
	addr, pool := startTLSBridge(t)
	dialRaw(t, addr) // silent
	if _, err := io.WriteString(dialRaw(t, addr), h2Preface[:7]); err != nil {
		t.Fatal(err)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 3 * time.Second}
	for range 3 { // new connections each time: each goes through Accept
		resp, err := client.Get("https://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.TLS == nil || string(body) != "ok\n" {
			t.Fatalf("%d %q (TLS %v), want ok over TLS", resp.StatusCode, body, resp.TLS != nil)
		}
		transport.CloseIdleConnections()
	}
}

// TestTLSSniffRefusedConnectionCloses: the server closes a refused
// connection once it is idle, so that refusals hold no connection for
// long.
func TestTLSSniffRefusedConnectionCloses(t *testing.T) {
	t.Parallel()
	addr, _ := startTLSBridge(t)
	c := dialRaw(t, addr)
	start := time.Now()
	_ = c.SetDeadline(start.Add(5 * time.Second))
	// The client preface and an empty SETTINGS frame (RFC 9113, sections
	// 3.4 and 6.5), then nothing.
	if _, err := io.WriteString(c, h2Preface+"\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c) // the server's SETTINGS, GOAWAY, then EOF
	if err != nil || n == 0 {
		t.Fatalf("read %d bytes, %v after %v; want the server's frames, then EOF", n, err, time.Since(start))
	}
	if d := time.Since(start); d < refusalIdleTimeout/2 {
		t.Errorf("closed after %v, before the idle timeout %v", d, refusalIdleTimeout)
	}
}

// TestSniffConnReplaysWhatItRead: what the sniff read reaches the TLS
// side intact, whatever the size of the reads, and a read error during
// the sniff reaches it after those bytes.
func TestSniffConnReplaysWhatItRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, sent string
		closeAfter bool // the client closes after sent
	}{
		{name: "TLS record", sent: "\x16\x03\x01\x02\x00\x01\x00\x01\xfcrest of a ClientHello"},
		{name: "HTTP/1", sent: "PUT / HTTP/1.1\r\n\r\n"},
		{name: "preface cut short", sent: "PRI * HTTP", closeAfter: true},
		{name: "one byte", sent: "P", closeAfter: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, server := net.Pipe()
			t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
			go func() {
				for i := range len(tc.sent) { // a byte at a time: the sniff must keep reading
					if _, err := client.Write([]byte{tc.sent[i]}); err != nil {
						return
					}
				}
				if tc.closeAfter {
					_ = client.Close()
				}
			}()
			c := &sniffConn{replayConn: replayConn{Conn: server}}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []byte
			buf := make([]byte, 3) // smaller than the sniff's read
			for len(got) < len(tc.sent) {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					t.Fatalf("after %q: %v", got, err)
				}
			}
			if string(got) != tc.sent {
				t.Fatalf("read %q, want %q", got, tc.sent)
			}
			if tc.closeAfter {
				if _, err := c.Read(buf); !errors.Is(err, io.EOF) {
					t.Fatalf("read after the replay: %v, want EOF", err)
				}
			}
		})
	}
}
