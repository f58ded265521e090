//go:build !linux

package bridge

import "net"

// watchClose calls gone, once and on another goroutine, when the peer
// closes or resets conn, until stop is called. stop must be called before
// conn is closed.
func watchClose(conn net.Conn, gone func()) (stop func()) {
	return watchCloseByReading(conn, gone)
}
