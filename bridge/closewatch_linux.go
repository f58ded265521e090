package bridge

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"
)

// On Linux one goroutine watches every hijacked SSE connection for its
// close, with an epoll set of its own: a goroutine per connection blocked
// in Read would cost a stack per idle stream for the one event in its
// life. The descriptors stay registered with the Go runtime's poller too,
// for the writes; epoll allows one descriptor in several sets.
//
// Each watch is known by an id that travels in the event's data, not by
// the descriptor number, which the kernel reuses as soon as a connection
// closes: a late event can then never reach the watch of the next
// connection. The goroutine exits when nothing is watched, so a process
// with no SSE streams has none.
//
// Bytes from the peer wake the watcher too: it reads and discards them
// (see takeover.go for why), up to maxDiscardBytes per connection, and
// watches on.

// closePoller is the shared watcher; its zero value is ready.
type closePoller struct {
	mu      sync.Mutex
	epfd    int // valid while running
	wakefd  int // an eventfd in the set, to wake the loop when the last watch stops
	running bool
	nextID  uint32
	watches map[uint32]closeWatch
	buf     []byte // the loop's, for the bytes it discards
}

// closeWatch is one watched connection.
type closeWatch struct {
	raw       syscall.RawConn
	gone      func()
	discarded int // bytes read from the peer and discarded
}

// watchEvents are the events a watch waits for. One-shot: an event ends
// the watch, and discarding the peer's bytes arms it again. EPOLLHUP and
// EPOLLERR (a reset) are always reported; EPOLLRDHUP is the peer's FIN,
// EPOLLIN its bytes.
const watchEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot

// peerClosed are the events that end a watch with a call of gone.
const peerClosed = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR

var poller closePoller

// wakeID is the id of the wake eventfd; watches never get it.
const wakeID = 0

// watchClose calls gone, once and on another goroutine, when the peer
// closes or resets conn, until stop is called. stop must be called before
// conn is closed.
func watchClose(conn net.Conn, gone func()) (stop func()) {
	raw := rawConnOf(conn)
	if raw == nil {
		return watchCloseByReading(conn, gone)
	}
	p := &poller
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		if err := p.start(); err != nil {
			return watchCloseByReading(conn, gone)
		}
	}
	id := p.newID()
	var ctlErr error
	err := raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: watchEvents, Fd: int32(id)}
		ctlErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || ctlErr != nil {
		p.stopIfIdleLocked()
		return watchCloseByReading(conn, gone)
	}
	p.watches[id] = closeWatch{raw: raw, gone: gone}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if _, ok := p.watches[id]; !ok {
			return // it fired
		}
		delete(p.watches, id)
		_ = raw.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
		p.stopIfIdleLocked()
	}
}

// epollOneShot is EPOLLONESHOT as the unsigned event mask: the syscall
// package declares it as a negative int.
const epollOneShot = 1 << 30

// rawConnOf returns the descriptor access of a TCP or Unix connection,
// under TLS too, or nil.
func rawConnOf(conn net.Conn) syscall.RawConn {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

func (p *closePoller) start() error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	r1, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		_ = syscall.Close(epfd)
		return errno
	}
	wakefd := int(r1)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeID}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = syscall.Close(wakefd)
		_ = syscall.Close(epfd)
		return err
	}
	p.epfd, p.wakefd, p.running = epfd, wakefd, true
	if p.watches == nil {
		p.watches = make(map[uint32]closeWatch)
		p.buf = make([]byte, 4096)
	}
	go p.loop(epfd, wakefd)
	return nil
}

// newID returns an id that no live watch has.
func (p *closePoller) newID() uint32 {
	for {
		p.nextID++
		if _, used := p.watches[p.nextID]; p.nextID != wakeID && !used {
			return p.nextID
		}
	}
}

// stopIfIdleLocked wakes the loop to exit when nothing is watched.
func (p *closePoller) stopIfIdleLocked() {
	if len(p.watches) == 0 && p.running {
		one := [8]byte{1}
		_, _ = syscall.Write(p.wakefd, one[:])
	}
}

// discardLocked reads and discards what the peer of w sent, and arms the
// watch again. It reports false, and the watch ends, when the peer has
// closed the connection, when the read fails, or after maxDiscardBytes.
// The descriptor cannot be closed (nor reused) meanwhile: Control holds
// it, and stop, which comes before the close, waits for p.mu.
func (p *closePoller) discardLocked(id uint32, w *closeWatch) (watching bool) {
	err := w.raw.Control(func(fd uintptr) {
		for w.discarded <= maxDiscardBytes {
			n, err := syscall.Read(int(fd), p.buf)
			switch {
			case n > 0:
				w.discarded += n
				continue
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN: // all read: watch on
				ev := syscall.EpollEvent{Events: watchEvents, Fd: int32(id)}
				watching = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev) == nil
			}
			return // n == 0: the peer's FIN; or a reset
		}
	})
	return err == nil && watching
}

// loop waits for hang-ups and reports them, until nothing is watched.
// It owns epfd and wakefd and closes them when it exits.
func (p *closePoller) loop(epfd, wakefd int) {
	events := make([]syscall.EpollEvent, 128)
	var gone []func()
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err != nil && err != syscall.EINTR {
			n = 0 // cannot happen with a valid set; fall through to the idle check
		}
		p.mu.Lock()
		gone = gone[:0]
		for _, ev := range events[:max(n, 0)] {
			id := uint32(ev.Fd)
			if id == wakeID {
				var b [8]byte
				_, _ = syscall.Read(wakefd, b[:])
				continue
			}
			w, ok := p.watches[id]
			if !ok {
				continue
			}
			if ev.Events&peerClosed == 0 && p.discardLocked(id, &w) {
				p.watches[id] = w // with its count of bytes discarded
				continue
			}
			delete(p.watches, id)
			gone = append(gone, w.gone)
		}
		exit := len(p.watches) == 0
		if exit {
			p.running = false
			_ = syscall.Close(wakefd)
			_ = syscall.Close(epfd)
		}
		p.mu.Unlock()
		for _, f := range gone {
			f()
		}
		if exit {
			return
		}
	}
}
