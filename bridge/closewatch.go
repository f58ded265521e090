package bridge

import (
	"net"
	"time"
)

// watchCloseByReading is watchClose with a goroutine per connection,
// blocked in a read that ends when the peer closes the connection (or
// sends anything, which a browser does not do on an event stream's
// connection). It serves where the shared poller cannot: other systems,
// connections without a descriptor.
func watchCloseByReading(conn net.Conn, gone func()) (stop func()) {
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		_, _ = conn.Read(b[:])
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
