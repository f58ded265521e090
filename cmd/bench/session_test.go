package main

import (
	"strings"
	"testing"
	"time"
)

// A target that cannot carry the workload is refused by name, before any
// connection: SSE has no client stream for echo round trips.
func TestLoadSessionRefusesATargetWithoutTheWorkload(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-target", "separate-sse", "-workload", "echo"},
		{"-target", "separate-ws", "-workload", "stream"},
		{"-target", "session-ws", "-workload", "unary"},
	} {
		err := loadSession(append(args, "-addr", "127.0.0.1:1"))
		if err == nil || !strings.Contains(err.Error(), "does not carry") {
			t.Errorf("%v: %v, want an error saying the target does not carry the workload", args, err)
		}
	}
	if err := loadSession([]string{"-target", "nope"}); err == nil || !strings.Contains(err.Error(), `unknown target "nope"`) {
		t.Errorf("unknown target: %v", err)
	}
}

// The measured window counts its bounds and nothing outside them.
func TestSessionWindow(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	w := sessionWindow{from: t0, until: t0.Add(time.Second)}
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{{-time.Nanosecond, false}, {0, true}, {time.Second, true}, {time.Second + time.Nanosecond, false}} {
		if got := w.in(t0.Add(c.at)); got != c.want {
			t.Errorf("in(from%+v) = %v, want %v", c.at, got, c.want)
		}
	}
}
