package e2e

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// sniffed is what went out on the connections of one path: the bytes of
// the first writes (the response head and the start of the body) and how
// many bytes in all.
type sniffed struct {
	mu             sync.Mutex
	acceptEncoding []string
	head           []byte
	written        int
}

// sniff records the Accept-Encoding of the requests for path, and what
// the bridge writes to their connections once it has taken them over (an
// event stream over HTTP/1.1, a WebSocket).
func sniff(path string, s *sniffed) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				next.ServeHTTP(w, r)
				return
			}
			s.mu.Lock()
			s.acceptEncoding = append(s.acceptEncoding, r.Header.Get("Accept-Encoding"))
			s.mu.Unlock()
			next.ServeHTTP(&sniffWriter{ResponseWriter: w, s: s}, r)
		})
	}
}

type sniffWriter struct {
	http.ResponseWriter
	s *sniffed
}

func (w *sniffWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands out the connection with its writes recorded.
func (w *sniffWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &sniffConn{Conn: conn, s: w.s}, brw, nil
}

type sniffConn struct {
	net.Conn
	s *sniffed
}

func (c *sniffConn) Write(p []byte) (int, error) {
	c.s.mu.Lock()
	if len(c.s.head) < 1024 {
		c.s.head = append(c.s.head, p[:min(len(p), 1024-len(c.s.head))]...)
	}
	c.s.written += len(p)
	c.s.mu.Unlock()
	return c.Conn.Write(p)
}

// TestCompressedStreamsInChromium opens an EventSource and a WebSocket in
// Chromium to methods that opted in to compression. The event stream is
// gzip (the browser asked for it, and the response head says so), and
// EventSource gets every message, each when the backend produced it (300
// ms apart, not all at once at the end), then the end event: Chromium
// inflates the one gzip member write by write. The WebSocket negotiates
// permessage-deflate with no context takeover, and a 4 KB echo comes back
// whole in far fewer bytes on the wire.
func TestCompressedStreamsInChromium(t *testing.T) {
	var sse, ws sniffed
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	srv := newBridgeWith(t, conn, func(h http.Handler) http.Handler {
		return sniff(tickerPath, &sse)(sniff("/demo.v1.EchoService/Echo", &ws)(h))
	},
		bridge.WithCompression("demo.v1.TickerService/Watch", bridge.CompressionOptions{SSE: true}),
		bridge.WithCompression("demo.v1.EchoService/Echo", bridge.CompressionOptions{WebSocket: true}))
	page := newTab(t, newBrowser(t), srv.URL+"/")

	page.eval(`(() => {
		const r = window.gz = {times: [], seqs: [], end: null, error: null};
		const es = new EventSource('`+tickerPath+`?symbol=GZ&interval_ms=300&limit=4');
		es.onmessage = e => { r.times.push(performance.now()); r.seqs.push(Number(JSON.parse(e.data).seq)); };
		es.addEventListener('end', e => { r.end = e.data; es.close(); });
		es.onerror = () => { r.error = 'error event, readyState ' + es.readyState; };
	})()`, nil)
	page.wait(`window.gz.end !== null || window.gz.error !== null`)
	var got struct {
		Times []float64
		Seqs  []int
		End   *string
		Error *string
	}
	page.eval(`window.gz`, &got)
	if got.Error != nil || got.End == nil || !isContiguous(got.Seqs) || len(got.Seqs) != 4 {
		t.Fatalf("EventSource: seqs %v, end %v, error %v; want 1 to 4 and the end event", got.Seqs, got.End, got.Error)
	}
	for i := 1; i < len(got.Times); i++ {
		if gap := got.Times[i] - got.Times[i-1]; gap < 150 {
			t.Errorf("messages %d and %d arrived %.0f ms apart; want about 300 (each when produced)", i, i+1, gap)
		}
	}
	sse.mu.Lock()
	if len(sse.acceptEncoding) == 0 || !bytes.Contains([]byte(sse.acceptEncoding[0]), []byte("gzip")) {
		t.Errorf("Chromium's Accept-Encoding %q: want gzip in it", sse.acceptEncoding)
	}
	head, body, _ := bytes.Cut(sse.head, []byte("\r\n\r\n"))
	if !bytes.Contains(head, []byte("\r\nContent-Encoding: gzip\r\n")) || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		t.Errorf("the stream went out as\n%s\n\n%q...\nwant Content-Encoding: gzip and a gzip body", head, body[:min(len(body), 16)])
	}
	sse.mu.Unlock()

	// EchoRequest{text: "x", payload: 4000 x "a"}, encoded by hand: the
	// page has no protobuf library.
	page.eval(`(() => {
		const r = window.wsz = {ext: null, len: null, status: null};
		const msg = new Uint8Array(3 + 3 + 4000);
		msg.set([0x0a, 0x01, 0x78, 0x12, 0xa0, 0x1f]);
		msg.fill(0x61, 6);
		const ws = new WebSocket('ws://' + location.host + '/demo.v1.EchoService/Echo', 'grpc-ws.v1');
		ws.binaryType = 'arraybuffer';
		ws.onopen = () => { r.ext = ws.extensions; ws.send(msg); };
		ws.onmessage = e => {
			if (typeof e.data !== 'string') { r.len = e.data.byteLength; ws.send('{"end":true}'); }
			else if (e.data.includes('"status"')) { r.status = e.data; }
		};
	})()`, nil)
	page.wait(`window.wsz.status !== null`)
	var wsGot struct {
		Ext    string
		Len    int
		Status string
	}
	page.eval(`window.wsz`, &wsGot)
	if !bytes.Contains([]byte(wsGot.Ext), []byte("permessage-deflate")) || !bytes.Contains([]byte(wsGot.Ext), []byte("server_no_context_takeover")) {
		t.Errorf("WebSocket extensions %q: want permessage-deflate with no context takeover", wsGot.Ext)
	}
	// EchoResponse{text: "x", payload, seq: 1}: 3 + 4003 + 2 bytes.
	if wsGot.Len != 4008 || !bytes.Contains([]byte(wsGot.Status), []byte(`"code":0`)) {
		t.Errorf("echo of %d bytes, status %s; want 4008 bytes and code 0", wsGot.Len, wsGot.Status)
	}
	ws.mu.Lock()
	if ws.written >= 2000 {
		t.Errorf("the bridge wrote %d bytes on the WebSocket for a 4008-byte echo: want it compressed", ws.written)
	}
	ws.mu.Unlock()
}
