package main

// The load generators: this program re-executed with a subcommand, so that
// clients never share a process (or a Go scheduler) with the servers they
// measure. Each prints one JSON line with its result, or talks to the
// harness line by line (load-idle, load-fanout).

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	demov1 "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// streamResult is what load-stream reports.
type streamResult struct {
	Messages int64   `json:"messages"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"per_sec"`
}

// loadStream reads one EchoService/Stream as fast as it comes, over direct
// gRPC, the bridge's SSE or grpc-gateway's NDJSON, and reports messages per
// second over dur after a warm-up.
func loadStream(args []string) error {
	fs := flag.NewFlagSet("load-stream", flag.ContinueOnError)
	target := fs.String("target", "sse", "direct, sse, gateway or connect")
	addr := fs.String("addr", "", "backend (direct), bridge (sse), gateway or Connect proxy (connect) address")
	size := fs.Int("size", 60, "payload bytes per message")
	dur := fs.Duration("dur", 3*time.Second, "measured time")
	warm := fs.Duration("warm", 300*time.Millisecond, "unmeasured time first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *warm+*dur+30*time.Second)
	defer cancel()

	m := &meter{warm: *warm, dur: *dur}
	var err error
	switch *target {
	case "direct":
		err = streamDirect(ctx, *addr, *size, m)
	case "sse":
		url := fmt.Sprintf("http://%s/demo.v1.EchoService/Stream?size=%d", *addr, *size)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Accept", "text/event-stream")
		var c sseCounter
		err = streamHTTP(req, m, func(p []byte) int64 {
			before := c.messages
			c.Write(p)
			return c.messages - before
		})
	case "gateway":
		url := fmt.Sprintf("http://%s/demo.v1.EchoService/Stream", *addr)
		body := fmt.Sprintf(`{"size":%d}`, *size)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		// grpc-gateway writes one JSON object per line: {"result":{...}}.
		err = streamHTTP(req, m, func(p []byte) int64 { return int64(bytes.Count(p, []byte{'\n'})) })
	case "connect":
		// The Connect protocol's server stream with the JSON codec, as a
		// browser's connect-web client sends it: one enveloped request,
		// enveloped messages back (vanguard's proxy transcodes to gRPC).
		url := fmt.Sprintf("http://%s/demo.v1.EchoService/Stream", *addr)
		body := connectEnvelope([]byte(fmt.Sprintf(`{"size":%d}`, *size)))
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/connect+json")
		req.Header.Set("Connect-Protocol-Version", "1")
		var c envelopeCounter
		err = streamHTTP(req, m, c.count)
	default:
		return fmt.Errorf("unknown target %q", *target)
	}
	if err != nil {
		return err
	}
	return printJSON(m.result())
}

// meter counts messages after a warm-up, for a fixed time.
type meter struct {
	warm, dur  time.Duration
	first      time.Time // the first message
	start, end time.Time // the measured window
	messages   int64
	bytes      int64
}

// add records n messages in b bytes; it reports false when the measured
// time is over.
func (m *meter) add(n, b int64) bool {
	now := time.Now()
	if m.first.IsZero() {
		m.first = now
	}
	if m.start.IsZero() {
		if now.Sub(m.first) < m.warm {
			return true
		}
		m.start = now
		return true
	}
	m.messages += n
	m.bytes += b
	if now.Sub(m.start) >= m.dur {
		m.end = now
		return false
	}
	return true
}

func (m *meter) result() streamResult {
	s := m.end.Sub(m.start).Seconds()
	return streamResult{Messages: m.messages, Bytes: m.bytes, Seconds: s, PerSec: float64(m.messages) / s}
}

func streamDirect(ctx context.Context, addr string, size int, m *meter) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := demov1.NewEchoServiceClient(conn).Stream(ctx, &demov1.StreamRequest{Size: int32(size)})
	if err != nil {
		return err
	}
	var msg demov1.EchoResponse
	for {
		if err := stream.RecvMsg(&msg); err != nil {
			return err
		}
		if !m.add(1, int64(proto.Size(&msg))) {
			return nil
		}
	}
}

var streamClient = &http.Client{Transport: &http.Transport{DisableCompression: true, ReadBufferSize: 64 << 10}}

func streamHTTP(req *http.Request, m *meter, count func([]byte) int64) error {
	resp, err := streamClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL, resp.Status, b)
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 && !m.add(count(buf[:n]), int64(n)) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// connectEnvelope frames one message of the Connect streaming protocol:
// a flags byte (0: a message) and the length, big-endian.
func connectEnvelope(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// envelopeCounter counts the messages of a Connect stream fed to it in
// arbitrary chunks; the end-of-stream envelope (flag 0x02) is not one.
type envelopeCounter struct {
	hdr  [5]byte
	hlen int    // header bytes seen of the current envelope
	left uint32 // body bytes still to skip
}

func (c *envelopeCounter) count(p []byte) int64 {
	var n int64
	for len(p) > 0 {
		if c.left > 0 {
			k := min(uint32(len(p)), c.left)
			c.left -= k
			p = p[k:]
			continue
		}
		k := copy(c.hdr[c.hlen:], p)
		c.hlen += k
		p = p[k:]
		if c.hlen < len(c.hdr) {
			break
		}
		c.hlen = 0
		c.left = binary.BigEndian.Uint32(c.hdr[1:])
		if c.hdr[0]&0x02 == 0 {
			n++
		}
	}
	return n
}

// wsResult is what load-ws reports.
type wsResult struct {
	RTT       latencySummary `json:"rtt"`
	RTTPerSec float64        `json:"rtt_per_sec"`
	Pipelined float64        `json:"pipelined_per_sec"`
}

// echoConn is one bidi echo call: over the bridge's WebSocket or direct
// gRPC.
type echoConn interface {
	send(payload []byte) error
	// sendN sends n messages at once, as a client does with what it
	// queued meanwhile: the WebSocket clients in one write (see
	// coalesceConn), gRPC through its own batching writer.
	sendN(payload []byte, n int) error
	recv() error
	close()
}

// sendEach sends payload n times with send.
func sendEach(send func([]byte) error, payload []byte, n int) error {
	for range n {
		if err := send(payload); err != nil {
			return err
		}
	}
	return nil
}

// loadWS measures sequential round trips and pipelined throughput of
// EchoService/Echo.
func loadWS(args []string) error {
	fs := flag.NewFlagSet("load-ws", flag.ContinueOnError)
	target := fs.String("target", "ws", "ws (the bridge), direct (gRPC), centrifugo-rpc (an RPC its proxy sends to an HTTP backend) or centrifugo (a publication to its own channel)")
	addr := fs.String("addr", "", "bridge, backend or Centrifugo address")
	n := fs.Int("n", 2000, "measured round trips")
	warm := fs.Int("warm", 200, "unmeasured round trips first")
	size := fs.Int("size", 60, "payload bytes per message")
	pipeDur := fs.Duration("pipeline", 2*time.Second, "time of the pipelined throughput run")
	window := fs.Int("window", 64, "messages in flight in the pipelined run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+*pipeDur)
	defer cancel()
	dial := func() (echoConn, error) {
		switch *target {
		case "direct":
			return dialGRPCEcho(ctx, *addr)
		case "centrifugo":
			return dialCentrifugoEcho(ctx, *addr, false)
		case "centrifugo-rpc":
			return dialCentrifugoEcho(ctx, *addr, true)
		}
		return dialWSEcho(ctx, *addr)
	}
	payload := make([]byte, *size)
	c, err := dial()
	if err != nil {
		return err
	}
	var rtts []time.Duration
	for i := range *warm + *n {
		start := time.Now()
		if err := c.send(payload); err != nil {
			return err
		}
		if err := c.recv(); err != nil {
			return err
		}
		if i >= *warm {
			rtts = append(rtts, time.Since(start))
		}
	}
	c.close()
	var total time.Duration
	for _, d := range rtts {
		total += d
	}
	res := wsResult{RTTPerSec: float64(len(rtts)) / total.Seconds()}
	res.RTT = summarize(rtts)

	// Pipelined: a writer keeps window messages in flight, the reader counts;
	// the writer sends what came back meanwhile at once.
	c, err = dial()
	if err != nil {
		return err
	}
	defer c.close()
	credits := make(chan struct{}, *window)
	for range *window {
		credits <- struct{}{}
	}
	stop := make(chan struct{})
	werr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				werr <- nil
				return
			case <-credits:
			}
			n := 1 // and every credit that came back meanwhile
			for more := true; more && n < *window; {
				select {
				case <-credits:
					n++
				default:
					more = false
				}
			}
			if err := c.sendN(payload, n); err != nil {
				werr <- err
				return
			}
		}
	}()
	var got int64
	start := time.Now()
	for time.Since(start) < *pipeDur {
		if err := c.recv(); err != nil {
			return err
		}
		got++
		credits <- struct{}{}
	}
	res.Pipelined = float64(got) / time.Since(start).Seconds()
	close(stop)
	// The writer stops before the connection closes: one writer at a time.
	if err := <-werr; err != nil {
		return err
	}
	return printJSON(res)
}

type wsEcho struct {
	c  *websocket.Conn
	cc *coalesceConn
}

func dialWSEcho(ctx context.Context, addr string) (*wsEcho, error) {
	d, cc := coalescingDialer()
	d.Subprotocols = []string{"grpc-ws.v1"}
	c, _, err := d.DialContext(ctx, "ws://"+addr+"/demo.v1.EchoService/Echo", nil)
	if err != nil {
		return nil, err
	}
	return &wsEcho{c: c, cc: cc}, nil
}

func (w *wsEcho) sendN(payload []byte, n int) error {
	return w.cc.batch(func() error { return sendEach(w.send, payload, n) })
}

func (w *wsEcho) send(payload []byte) error {
	b, _ := proto.Marshal(&demov1.EchoRequest{Text: "x", Payload: payload})
	return w.c.WriteMessage(websocket.BinaryMessage, b)
}

// recv reads up to the next binary frame: one response. Text frames
// (headers) are control frames.
func (w *wsEcho) recv() error {
	for {
		typ, b, err := w.c.ReadMessage()
		if err != nil {
			return err
		}
		if typ == websocket.BinaryMessage {
			var resp demov1.EchoResponse
			return proto.Unmarshal(b, &resp)
		}
		if bytes.Contains(b, []byte(`"status"`)) {
			return fmt.Errorf("call ended: %s", b)
		}
	}
}

func (w *wsEcho) close() {
	_ = w.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = w.c.Close()
}

// centrifugoEcho is Centrifugo's counterpart of an echo, over its
// bidirectional WebSocket (JSON protocol). With rpc, the client calls an
// RPC that Centrifugo's proxy sends to an HTTP backend, which answers with
// the request's data: a message to a backend and its answer, as the
// bridge's echo. Without, the client subscribes to a channel of its own
// and publishes to it; the publication comes back as a push (with the
// publish reply): no backend.
type centrifugoEcho struct {
	c       *websocket.Conn
	cc      *coalesceConn
	rpc     bool
	channel string
	id      int
	answers int // answers read but not yet taken by recv
}

func dialCentrifugoEcho(ctx context.Context, addr string, rpc bool) (*centrifugoEcho, error) {
	d, cc := coalescingDialer()
	c, _, err := d.DialContext(ctx, "ws://"+addr+"/connection/websocket", nil)
	if err != nil {
		return nil, err
	}
	e := &centrifugoEcho{c: c, cc: cc, rpc: rpc, channel: fmt.Sprintf("echo%d", os.Getpid())}
	cmds := []string{`"connect":{"name":"bench"}`}
	if !rpc {
		cmds = append(cmds, fmt.Sprintf(`"subscribe":{"channel":%q}`, e.channel))
	}
	for _, cmd := range cmds {
		e.id++
		if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%d,%s}`, e.id, cmd)); err != nil {
			c.Close()
			return nil, err
		}
		_, b, err := c.ReadMessage()
		if err != nil || bytes.Contains(b, []byte(`"error"`)) {
			c.Close()
			return nil, fmt.Errorf("centrifugo %s: %s %v", cmd, b, err)
		}
	}
	return e, nil
}

func (e *centrifugoEcho) send(payload []byte) error {
	e.id++
	data := base64.StdEncoding.EncodeToString(payload)
	var b []byte
	if e.rpc {
		b = fmt.Appendf(nil, `{"id":%d,"rpc":{"method":"echo","data":{"payload":%q}}}`, e.id, data)
	} else {
		b = fmt.Appendf(nil, `{"id":%d,"publish":{"channel":%q,"data":{"payload":%q}}}`, e.id, e.channel, data)
	}
	return e.c.WriteMessage(websocket.TextMessage, b)
}

func (e *centrifugoEcho) sendN(payload []byte, n int) error {
	return e.cc.batch(func() error { return sendEach(e.send, payload, n) })
}

// recv reads up to the next answer (an RPC reply, or a push); a frame may
// hold several replies and pushes, one a line.
func (e *centrifugoEcho) recv() error {
	answer := []byte(`"push"`)
	if e.rpc {
		answer = []byte(`"rpc"`)
	}
	for e.answers == 0 {
		_, b, err := e.c.ReadMessage()
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(`"error"`)) {
			return fmt.Errorf("centrifugo: %s", b)
		}
		e.answers += bytes.Count(b, answer)
	}
	e.answers--
	return nil
}

func (e *centrifugoEcho) close() {
	_ = e.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = e.c.Close()
}

// rpcEcho is the HTTP backend of Centrifugo's RPC proxy in make
// bench-peers: it answers every RPC with the request's data.
func rpcEcho(args []string) error {
	fs := flag.NewFlagSet("rpc-echo", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen on this loopback address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"result": map[string]json.RawMessage{"data": req.Data}})
	})}
	return srv.ListenAndServe()
}

type grpcEcho struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	s      grpc.BidiStreamingClient[demov1.EchoRequest, demov1.EchoResponse]
	resp   demov1.EchoResponse
}

func dialGRPCEcho(ctx context.Context, addr string) (*grpcEcho, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := demov1.NewEchoServiceClient(conn).Echo(ctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, err
	}
	return &grpcEcho{conn: conn, cancel: cancel, s: s}, nil
}

func (g *grpcEcho) send(payload []byte) error {
	return g.s.Send(&demov1.EchoRequest{Text: "x", Payload: payload})
}

func (g *grpcEcho) sendN(payload []byte, n int) error { return sendEach(g.send, payload, n) }

func (g *grpcEcho) recv() error { return g.s.RecvMsg(&g.resp) }
func (g *grpcEcho) close()      { g.cancel(); g.conn.Close() }

// openSSE opens one event stream over a raw HTTP/1.1 connection and, with
// firstMessage, reads up to its first message event. It returns the
// connection and a reader of the body after what it read.
func openSSE(ctx context.Context, addr, path string, bufSize int, firstMessage, gzipped bool) (net.Conn, *bufio.Reader, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	acceptEncoding := ""
	if gzipped {
		acceptEncoding = "Accept-Encoding: gzip\r\n"
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n", path, addr, acceptEncoding); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, bufSize)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		conn.Close()
		return nil, nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	var raw io.Reader = resp.Body
	if gzipped {
		if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
			conn.Close()
			return nil, nil, fmt.Errorf("GET %s: Content-Encoding %q, want gzip", path, ce)
		}
		if raw, err = gzip.NewReader(resp.Body); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("GET %s: %w", path, err)
		}
	}
	body := bufio.NewReaderSize(raw, bufSize)
	if err := skipToFirstMessage(body, firstMessage); err != nil {
		conn.Close()
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, body, nil
}

// h2cClients are the HTTP/2 load generators' clients: one per TCP
// connection, each speaking cleartext HTTP/2 with prior knowledge (or,
// with roots, HTTP/2 over TLS), so that every stream of client i goes
// over connection i (net/http keeps one HTTP/2 connection per host while
// the server's stream limit allows).
type h2cClients struct {
	clients []*http.Client
	scheme  string
	dials   atomic.Int64 // connections dialed: the check that it is one per client
}

func newH2CClients(conns int, roots *x509.CertPool) *h2cClients {
	h := &h2cClients{clients: make([]*http.Client, conns), scheme: "http"}
	for i := range h.clients {
		var p http.Protocols
		tr := &http.Transport{
			Protocols:          &p,
			DisableCompression: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				h.dials.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}
		if roots != nil {
			h.scheme = "https"
			p.SetHTTP2(true) // ALPN h2 only: a server that falls back to HTTP/1.1 fails the check below
			tr.TLSClientConfig = &tls.Config{RootCAs: roots}
			tr.ForceAttemptHTTP2 = true
		} else {
			p.SetUnencryptedHTTP2(true)
		}
		h.clients[i] = &http.Client{Transport: tr}
	}
	return h
}

// h2Flags registers load-idle's and load-fanout's HTTP/2 flags and returns
// what makes their clients after the flags are parsed (nil: HTTP/1.1).
func h2Flags(fs *flag.FlagSet, what string) func() (*h2cClients, error) {
	conns := fs.Int("h2c", 0, "0: HTTP/1.1, a connection per "+what+"; N: cleartext HTTP/2 over N connections, the "+what+"s spread evenly")
	ca := fs.String("tls-ca", "", "with -h2c: HTTP/2 over TLS instead, trusting the PEM certificate in this `file`")
	return func() (*h2cClients, error) {
		if *conns <= 0 {
			return nil, nil
		}
		var roots *x509.CertPool
		if *ca != "" {
			pem, err := os.ReadFile(*ca)
			if err != nil {
				return nil, err
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: no PEM certificate", *ca)
			}
		}
		return newH2CClients(*conns, roots), nil
	}
}

func (h *h2cClients) close() {
	for _, c := range h.clients {
		c.CloseIdleConnections()
	}
}

// openSSEH2 opens one event stream with client (over HTTP/2) and, with
// firstMessage, reads up to its first message event. It returns the body,
// to close, and a reader of it after what it read.
func openSSEH2(ctx context.Context, client *http.Client, url string, bufSize int, firstMessage bool) (io.Closer, *bufio.Reader, error) {
	// The stream outlives ctx's opening deadline: its own context never ends.
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, nil, fmt.Errorf("GET %s: %s %s: %s", url, resp.Proto, resp.Status, b)
	}
	body := bufio.NewReaderSize(resp.Body, bufSize)
	if err := skipToFirstMessage(body, firstMessage); err != nil {
		resp.Body.Close()
		return nil, nil, err
	}
	return resp.Body, body, nil
}

// plainSSE tells that the server names no event type (Centrifugo's uni_sse
// writes data lines only): every data line is a message. The bridge's
// streams say "event: message".
var plainSSE bool

// skipToFirstMessage reads, when first is set, up to the end of the first
// line of the first message event.
func skipToFirstMessage(body *bufio.Reader, first bool) error {
	for first {
		line, err := body.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("before the first message: %w", err)
		}
		if bytes.HasPrefix(line, []byte("event: message")) || plainSSE && bytes.HasPrefix(line, []byte("data:")) {
			first = false
		}
	}
	return nil
}

// openStreams opens n event streams, over HTTP/1.1 (a raw connection each)
// or, with h2 set, over HTTP/2 spread evenly over h2's connections: first
// one stream per connection, so that each client dials once, then the rest.
// It returns what closes each stream and each stream's reader.
func openStreams(ctx context.Context, n, conc int, addr, path string, bufSize int, firstMessage, gzipped bool, h2 *h2cClients,
	opened func(i int, c io.Closer, body *bufio.Reader)) error {
	open := func(ctx context.Context, i int) error {
		var c io.Closer
		var body *bufio.Reader
		var err error
		if h2 != nil {
			c, body, err = openSSEH2(ctx, h2.clients[i%len(h2.clients)], h2.scheme+"://"+addr+path, bufSize, firstMessage)
		} else {
			c, body, err = openSSE(ctx, addr, path, bufSize, firstMessage, gzipped)
		}
		if err != nil {
			return err
		}
		opened(i, c, body)
		return nil
	}
	if h2 == nil {
		return openMany(ctx, n, conc, open)
	}
	first := min(n, len(h2.clients))
	if err := openMany(ctx, first, conc, open); err != nil {
		return err
	}
	err := openMany(ctx, n-first, conc, func(ctx context.Context, i int) error { return open(ctx, first+i) })
	if err == nil && h2.dials.Load() != int64(first) {
		err = fmt.Errorf("%d HTTP/2 connections dialed for %d clients", h2.dials.Load(), first)
	}
	return err
}

// openMany opens n streams with conc dialers, calling keep for each.
func openMany(ctx context.Context, n, conc int, open func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				if err := open(ctx, int(i)); err != nil {
					errs <- fmt.Errorf("stream %d: %w", i, err)
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// loadIdle holds n idle event streams open until told to close them.
// Protocol: it prints "open <seconds>" when all are open, then waits for a
// line "close" (or "hold <duration>", or the end of stdin), closes them and
// prints "closed".
func loadIdle(args []string) error {
	fs := flag.NewFlagSet("load-idle", flag.ContinueOnError)
	addr := fs.String("addr", "", "bridge address")
	path := fs.String("path", "", "URL path and query of the stream")
	n := fs.Int("n", 10000, "streams")
	conc := fs.Int("conc", 100, "streams being opened at once")
	gz := fs.Bool("gzip", false, "ask for gzip (Accept-Encoding) and insist on it")
	newH2 := h2Flags(fs, "stream")
	fs.BoolVar(&plainSSE, "plain", false, "the server names no event type: every data line is a message (Centrifugo)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h2, err := newH2()
	if err != nil {
		return err
	}
	if h2 != nil {
		defer h2.close()
	}
	conns := make([]io.Closer, *n)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err = openStreams(ctx, *n, *conc, *addr, *path, 1024, true, *gz, h2, func(i int, c io.Closer, _ *bufio.Reader) { conns[i] = c })
	closeAll := func() {
		for i, c := range conns {
			if c != nil {
				c.Close()
				conns[i] = nil
			}
		}
		if h2 != nil {
			h2.close() // the connections go with their last stream
		}
	}
	defer closeAll()
	if err != nil {
		return err
	}
	fmt.Printf("open %.3f\n", time.Since(start).Seconds())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() && sc.Text() != "close" {
		// "hold D": a burst; every stream closes D after the first began
		// to open (at once if opening took longer).
		if v, ok := strings.CutPrefix(sc.Text(), "hold "); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			time.Sleep(time.Until(start.Add(d)))
			break
		}
	}
	closeAll()
	fmt.Println("closed")
	return nil
}

// fanoutResult is what load-fanout reports.
type fanoutResult struct {
	Latency  latencySummary `json:"latency"`
	Messages int64          `json:"messages"`
	Dropped  int            `json:"dropped"` // streams that ended while measured
}

// loadFanout holds n event streams of a ticker open and measures each
// tick's delivery latency: receive time minus the tick's time field.
// Protocol: "open <seconds>" when all are open; on "start" it records, on
// "stop" it prints "result <json>" and exits.
func loadFanout(args []string) error {
	fs := flag.NewFlagSet("load-fanout", flag.ContinueOnError)
	addr := fs.String("addr", "", "bridge address")
	path := fs.String("path", "", "URL path and query of the stream")
	n := fs.Int("n", 10000, "subscribers")
	conc := fs.Int("conc", 200, "streams being opened at once")
	newH2 := h2Flags(fs, "subscriber")
	fs.BoolVar(&plainSSE, "plain", false, "the server names no event type: every data line is a message (Centrifugo)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h2, err := newH2()
	if err != nil {
		return err
	}
	if h2 != nil {
		defer h2.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		recording atomic.Bool
		mu        sync.Mutex
		all       []time.Duration
		dropped   int
		readers   sync.WaitGroup
	)
	conns := make([]io.Closer, *n)
	var connsMu sync.Mutex // closeAll may run while streams still open
	start := time.Now()
	// A subscriber joining a shared stream gets its first tick only at the
	// next tick: the 200 is enough.
	err = openStreams(ctx, *n, *conc, *addr, *path, 4096, false, false, h2, func(i int, c io.Closer, body *bufio.Reader) {
		connsMu.Lock()
		conns[i] = c
		connsMu.Unlock()
		readers.Go(func() {
			var mine []time.Duration
			inMessage := plainSSE
			for {
				line, err := body.ReadSlice('\n')
				if err != nil {
					break
				}
				now := time.Now()
				switch {
				case bytes.HasPrefix(line, []byte("event: ")):
					inMessage = bytes.HasPrefix(line, []byte("event: message\n"))
				case inMessage && bytes.HasPrefix(line, []byte("data: ")):
					if t, ok := tickTime(line); ok && recording.Load() {
						mine = append(mine, now.Sub(t))
					}
				}
			}
			mu.Lock()
			all = append(all, mine...)
			if recording.Load() {
				dropped++
			}
			mu.Unlock()
		})
	})
	closeAll := func() {
		connsMu.Lock()
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		connsMu.Unlock()
		readers.Wait()
	}
	if err != nil {
		closeAll()
		return err
	}
	fmt.Printf("open %.3f\n", time.Since(start).Seconds())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "start":
			recording.Store(true)
			fmt.Println("started")
		case "stop":
			// Closing every connection ends the readers, which hand over
			// their samples; a stream ending now is not a drop.
			mu.Lock()
			d := dropped
			mu.Unlock()
			recording.Store(false)
			closeAll()
			res := fanoutResult{Messages: int64(len(all)), Dropped: d}
			res.Latency = summarize(all)
			b, _ := json.Marshal(res)
			fmt.Printf("result %s\n", b)
			return nil
		}
	}
	closeAll()
	return errors.New("stdin ended before stop")
}

// tickTime finds the time field of a Tick's JSON.
func tickTime(data []byte) (time.Time, bool) {
	const key = `"time":"`
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return time.Time{}, false
	}
	rest := data[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return t, err == nil
}

func printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", b)
	return err
}
