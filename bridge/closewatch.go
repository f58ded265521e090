package bridge

import (
	"net"
	"time"
)

// maxDiscardBytes bounds what a peer may send after its request before
// the close watcher treats it as gone: more than a stray line break or a
// pipelined request, not so much that one connection keeps the watcher
// busy.
const maxDiscardBytes = 64 << 10

// watchCloseByReading is watchClose with a goroutine per connection,
// blocked in a read that ends when the peer closes the connection. What
// the peer sends meanwhile is discarded, up to maxDiscardBytes, as the
// shared poller does. It serves where the shared poller cannot: other
// systems, connections without a descriptor.
func watchCloseByReading(conn net.Conn, gone func()) (stop func()) {
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 512)
		for n := 0; n <= maxDiscardBytes; {
			m, err := conn.Read(b)
			if err != nil {
				break
			}
			n += m
		}
		select {
		case <-stopped:
		default:
			gone()
		}
	}()
	return func() {
		close(stopped)
		_ = conn.SetReadDeadline(time.Unix(1, 0)) // ends the read now
		<-done
	}
}
