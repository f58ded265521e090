package main

import (
	"context"
	"net"
	"sync"

	"github.com/gorilla/websocket"
)

// coalesceConn is the benchmark WebSocket clients' connection. Inside
// batch, the frames written go out in one write, as a browser sends the
// frames a page queued at once (Chromium's WebSocketBasicStream writes
// every pending frame in one write); outside, each write goes out as it
// is. Without it the client would make one system call per message where
// a browser makes one per batch, and the benchmark would measure the
// client.
type coalesceConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

// coalescingDialer returns a WebSocket dialer for one connection, and
// that connection, which it fills in when it dials.
func coalescingDialer() (*websocket.Dialer, *coalesceConn) {
	cc := new(coalesceConn)
	var nd net.Dialer
	return &websocket.Dialer{
		ReadBufferSize:  16 << 10,
		WriteBufferSize: 16 << 10,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cc.Conn = c
			return cc, nil
		},
	}, cc
}

// batch runs write, gathering what it writes, and writes that at once.
func (c *coalesceConn) batch(write func() error) error {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
	err := write()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	if len(c.buf) > 0 {
		_, werr := c.Conn.Write(c.buf)
		c.buf = c.buf[:0]
		if err == nil {
			err = werr
		}
	}
	return err
}

func (c *coalesceConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}
