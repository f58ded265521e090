package bridge_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// fallbackLogs keeps the bridge's "session fell back" log lines.
type fallbackLogs struct {
	mu    sync.Mutex
	lines []fallbackLine
}

type fallbackLine struct {
	Level   string `json:"level"`
	Msg     string `json:"msg"`
	Carrier string `json:"carrier"`
	Reason  string `json:"reason"`
}

func (l *fallbackLogs) Write(p []byte) (int, error) {
	var line fallbackLine
	if err := json.Unmarshal(p, &line); err == nil && line.Msg == "session fell back" {
		l.mu.Lock()
		l.lines = append(l.lines, line)
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *fallbackLogs) take() []fallbackLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// TestSessionFallbackReasons: a creating POST with ?fallback= counts its
// reason once, with an Info log line; a value outside the closed set counts
// as other, never as itself; none counts nothing; the first poll's reason
// counts once however often the client repeats it.
func TestSessionFallbackReasons(t *testing.T) {
	logs := &fallbackLogs{}
	env := newSessionEnv(t, 1, func(addr string) []bridge.Option {
		o := sessionOpts(bridge.SessionOptions{MaxSessionsPerClient: 16, PollTimeout: 10 * time.Millisecond})(addr)
		return append(o, bridge.WithLogger(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	})
	rep := env.replicas[0]
	base := rep.url + "/_bridge/session"
	create := func(query string) string {
		t.Helper()
		b := sessionRequest(t, http.MethodPost, base+query)
		frames, err := decFrames(b)
		if err != nil || len(frames) != 1 || frames[0].typ != tHello {
			t.Fatalf("create%s: want one HELLO, got %v %v", query, frames, err)
		}
		return decHello(frames[0].payload).token
	}
	wantCounts := func(what string, want map[string]int) {
		t.Helper()
		rep.metrics.mu.Lock()
		defer rep.metrics.mu.Unlock()
		for r, n := range rep.metrics.fallbacks {
			if n != want[r] {
				t.Errorf("%s: fallbacks{reason=%q} = %d, want %d", what, r, n, want[r])
			}
		}
		for r, n := range want {
			if rep.metrics.fallbacks[r] != n {
				t.Errorf("%s: fallbacks{reason=%q} = %d, want %d", what, r, rep.metrics.fallbacks[r], n)
			}
		}
	}
	wantLog := func(what, carrier, reason string) {
		t.Helper()
		lines := logs.take()
		if len(lines) != 1 || lines[0].Level != "INFO" || lines[0].Carrier != carrier || lines[0].Reason != reason {
			t.Errorf("%s: log lines %+v, want one at INFO with carrier %s and reason %s", what, lines, carrier, reason)
		}
	}

	want := map[string]int{}
	for _, reason := range []string{bridge.SessionFallbackWSError, bridge.SessionFallbackWSTimeout, bridge.SessionFallbackWSBlocked, bridge.SessionFallbackRemembered} {
		create("?fallback=" + reason)
		want[reason]++
		wantCounts("create with "+reason, want)
		wantLog("create with "+reason, bridge.SessionCarrierHTTP, reason)
	}
	for _, v := range []string{"bogus", "WS-ERROR", "ws-error,ws-timeout", string(bytes.Repeat([]byte{'x'}, 200))} {
		create("?fallback=" + url.QueryEscape(v))
		want[bridge.SessionFallbackOther]++
		wantCounts("create with "+v, want)
		wantLog("create with "+v, bridge.SessionCarrierHTTP, bridge.SessionFallbackOther)
	}
	tok := create("")
	create("?fallback=")
	wantCounts("create without a reason", want)
	if lines := logs.take(); len(lines) != 0 {
		t.Errorf("create without a reason: log lines %+v, want none", lines)
	}

	// The switch to polling, on the session created without a reason:
	// counted on its first poll, not again on the next ones.
	poll := base + "?sid=" + url.QueryEscape(tok) + "&ack=0&poll=1&fallback=" + bridge.SessionFallbackPollNoFirstByte
	for range 3 {
		sessionRequest(t, http.MethodGet, poll)
	}
	want[bridge.SessionFallbackPollNoFirstByte] = 1
	wantCounts("polls", want)
	wantLog("polls", bridge.SessionCarrierPoll, bridge.SessionFallbackPollNoFirstByte)
}

// sessionRequest sends a request without a body and returns the body of
// its 200 answer.
func sessionRequest(t *testing.T, method, u string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d %s", method, u, resp.StatusCode, b)
	}
	return b
}
