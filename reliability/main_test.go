// Package reliability holds the bridge's reliability and security suite:
// hostile input, backend and client faults, a graceful drain under load,
// a bounded soak and connection floods. Every server listens on a loopback
// address, and every load is bounded in count and time. See
// docs/reliability.md for what it covers and the figures it produced.
package reliability

import (
	"flag"
	"fmt"
	"os"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

var soakDuration = flag.Duration("soak", 0, "run TestSoak at full size (5,000 SSE and 1,000 WebSocket clients) for this long; 0: the short CI version")

// TestMain raises the open-file limit (the drain and soak tests hold
// thousands of sockets), runs the tests, removes the binaries they built,
// and checks that no goroutine is left behind.
func TestMain(m *testing.M) {
	flag.Parse()
	raiseNOFILE()
	code := m.Run()
	removeBinaries()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// raiseNOFILE sets the soft limit of open files to the hard limit.
func raiseNOFILE() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// openFileLimit is the soft limit of open files.
func openFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1024
	}
	return l.Cur
}
