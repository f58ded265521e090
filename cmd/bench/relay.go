package main

import (
	"errors"
	"flag"
	"io"
	"net"
	"sync"
	"time"
)

// tcpRelay is `bench relay`: a process that forwards every TCP connection
// it accepts to one address, byte for byte in both directions, and does
// nothing else. Scenarios 1 and 2 run direct gRPC through it to measure what any
// third process on the path costs on this machine (its wake-ups, system
// calls and loopback hops), with no protocol work at all: between two
// *net.TCPConn, io.Copy splices, so not even a copy in user space. Whatever
// a bridge adds beyond that is its own.
func tcpRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen on this loopback address")
	to := fs.String("to", "", "forward each connection to this address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *to == "" {
		return errors.New("-addr and -to are required")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	for {
		in, err := ln.Accept()
		if err != nil {
			return err
		}
		go relayConn(in, *to)
	}
}

// relayConn pipes in to a new connection to addr, each direction until
// its sender closes (passing the half-close on), then closes both.
func relayConn(in net.Conn, addr string) {
	defer in.Close()
	out, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer out.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(out, in)
		_ = out.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(in, out)
	_ = in.(*net.TCPConn).CloseWrite()
	wg.Wait()
}

// startRelay starts `bench relay` in front of backend and returns its
// address and process.
func (h *harness) startRelay(backend string) (string, *proc, error) {
	addr, p, err := h.startSelf("relay", nil, "-to", backend)
	if err != nil {
		return "", nil, err
	}
	return addr, p, p.waitReady(30*time.Second, tcpReady(addr))
}
