package sessionclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/gorilla/websocket"
)

// Subprotocol is the WebSocket subprotocol of sessions.
const Subprotocol = "grpc-session.v1"

// path is where the bridge serves sessions.
const path = "/_bridge/session"

// DialWebSocket opens a session over the WebSocket carrier. base is the
// bridge's "http://host:port" (or https).
func DialWebSocket(ctx context.Context, base string, opts Options) (*Session, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("sessionclient: %w", err)
	}
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path = path
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10}
	conn, resp, err := d.DialContext(ctx, u.String(), opts.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("sessionclient: %w", httpError("WebSocket handshake", resp))
		}
		return nil, fmt.Errorf("sessionclient: WebSocket handshake: %w", err)
	}
	if conn.Subprotocol() != Subprotocol {
		conn.Close()
		return nil, fmt.Errorf("sessionclient: the bridge chose subprotocol %q", conn.Subprotocol())
	}
	c := &wsCarrier{conn: conn}
	first, err := c.read()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("sessionclient: reading HELLO: %w", err)
	}
	return newSession(c, first, opts)
}

// wsCarrier carries a session over a WebSocket: one batch per binary
// message. gorilla/websocket answers pings by itself.
type wsCarrier struct{ conn *websocket.Conn }

func (c *wsCarrier) read() ([]byte, error) {
	typ, b, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != websocket.BinaryMessage {
		return nil, errTextMessage
	}
	return b, nil
}

func (c *wsCarrier) write(batch []byte, _ string) ([]byte, error) {
	return nil, c.conn.WriteMessage(websocket.BinaryMessage, batch)
}

func (c *wsCarrier) close() { _ = c.conn.Close() }

// maxAnswer bounds what this client reads of a POST answer (an ACK
// frame) and of one event.
const (
	maxAnswer = 64 << 10
	maxEvent  = 8 << 20 // a 4 MiB message in base64, with room
)

// DialHTTP opens a session over the HTTP carrier: a POST creates it, a
// GET holds the event stream down, and POSTs carry frames up, one at a
// time. base is the bridge's "http://host:port".
func DialHTTP(ctx context.Context, base string, opts Options) (*Session, error) {
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 2}}
	}
	c := &httpCarrier{client: client, url: strings.TrimSuffix(base, "/") + path, header: opts.Header}
	resp, err := c.do(ctx, http.MethodPost, c.url, nil)
	if err != nil {
		return nil, fmt.Errorf("sessionclient: creating the session: %w", err)
	}
	hello, err := readAnswer(resp, "creating the session")
	if err != nil {
		return nil, fmt.Errorf("sessionclient: %w", err)
	}
	frames, err := DecodeFrames(hello)
	if err != nil || len(frames) != 1 || frames[0].Type != TypeHello {
		return nil, fmt.Errorf("sessionclient: creating the session: want a HELLO, got %d frames (%v)", len(frames), err)
	}
	h, err := DecodeHello(frames[0].Payload)
	if err != nil {
		return nil, fmt.Errorf("sessionclient: %w", err)
	}
	// The event stream: its first event is a HELLO again, which the
	// session takes.
	dctx, cancel := context.WithCancel(context.Background())
	c.ctx, c.cancel = dctx, cancel
	stop := context.AfterFunc(ctx, cancel) // the dial's ctx bounds the handshake only
	resp, err = c.do(dctx, http.MethodGet, c.url+"?sid="+url.QueryEscape(h.Token)+"&ack=0", nil)
	if err == nil && (resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")) {
		err = httpError("event stream", resp)
		resp.Body.Close()
	}
	if err != nil {
		stop()
		cancel()
		return nil, fmt.Errorf("sessionclient: %w", err)
	}
	c.body = resp.Body
	c.events = bufio.NewReaderSize(resp.Body, 64<<10)
	first, err := c.read()
	stop()
	if err != nil {
		c.close()
		return nil, fmt.Errorf("sessionclient: event stream: %w", err)
	}
	return newSession(c, first, opts)
}

// httpCarrier carries a session over the event stream and POSTs.
type httpCarrier struct {
	client *http.Client
	url    string
	header http.Header

	ctx       context.Context    // of the event stream and the POSTs
	cancel    context.CancelFunc // ends them
	body      io.Closer
	events    *bufio.Reader
	data      []byte // the event being read
	closeOnce sync.Once
}

func (c *httpCarrier) do(ctx context.Context, method, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if method == http.MethodGet {
		req.Header.Set("Accept", "text/event-stream")
	} else if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	return c.client.Do(req)
}

// readAnswer reads a 200 answer's body, bounded, and closes it.
func readAnswer(resp *http.Response, what string) ([]byte, error) {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, httpError(what, resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err == nil && len(b) > maxAnswer {
		err = fmt.Errorf("%s: answer over %d bytes", what, maxAnswer)
	}
	return b, err
}

// read returns the frames of the next event that has data: the standard
// base64 of one or more frames. Comments, retry and id lines are skipped.
func (c *httpCarrier) read() ([]byte, error) {
	c.data = c.data[:0]
	for {
		line, err := c.events.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: gather it.
			full := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull && len(full) <= maxEvent {
				line, err = c.events.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if err != nil {
			return nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if len(c.data) == 0 {
				continue
			}
			out := make([]byte, base64.StdEncoding.DecodedLen(len(c.data)))
			n, err := base64.StdEncoding.Decode(out, c.data)
			if err != nil {
				return nil, fmt.Errorf("event data not base64: %w", err)
			}
			return out[:n], nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if len(c.data)+len(v) > maxEvent {
				return nil, fmt.Errorf("event over %d bytes", maxEvent)
			}
			c.data = append(c.data, bytes.TrimPrefix(v, []byte(" "))...)
		}
	}
}

func (c *httpCarrier) write(batch []byte, token string) ([]byte, error) {
	resp, err := c.do(c.ctx, http.MethodPost, c.url+"?sid="+url.QueryEscape(token), batch)
	if err != nil {
		return nil, err
	}
	return readAnswer(resp, "upstream POST")
}

func (c *httpCarrier) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		if c.body != nil {
			c.body.Close()
		}
	})
}
