package rehearsal

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The rehearsal's verdict is only as good as its checks: these hold them
// to streams and calls that are known to be wrong. They need no namespace
// and run with the rest of the suite.

// A follower counts a skipped tick as missing and a repeated one as twice,
// resumes with the last id it saw, and fails for good on an end event.
func TestFollowerFindsGapsAndDuplicates(t *testing.T) {
	var mu sync.Mutex
	var lastIDs []string
	conn := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		conn++
		n := conn
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		tick := func(seq int) { fmt.Fprintf(w, "id: %d\ndata: {\"seq\":\"%d\"}\n\n", seq, seq) }
		switch n {
		case 1: // 1, 2, then the stream breaks
			fmt.Fprint(w, "retry: 20\n\n")
			tick(1)
			tick(2)
		case 2: // 3, 3 again, 5 (4 is missing), then a transient error
			tick(3)
			tick(3)
			tick(5)
			fmt.Fprint(w, "event: error\ndata: {\"code\":14,\"message\":\"backend unavailable\"}\n\n")
		default: // the infinite ticker must never end
			fmt.Fprint(w, "event: end\ndata: {}\n\n")
		}
	}))
	defer srv.Close()

	rec := &recorder{}
	p := rec.begin("test", drain|refused|backendX|abrupt)
	f := &follower{id: 1, client: srv.Client(), rec: rec, base: srv.URL}
	done := make(chan struct{})
	go func() { defer close(done); f.run(t.Context()) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the follower did not stop at the end event")
	}
	if p.events != 5 || p.gaps != 1 || p.dups != 1 {
		t.Errorf("events %d, missing %d, twice %d; want 5, 1, 1", p.events, p.gaps, p.dups)
	}
	if p.cuts != 2 || p.reconnects != 2 || len(p.resumes) != 1 {
		t.Errorf("cuts %d, reconnects %d, resumes %v; want 2 cuts (a break, an error event), 2 reconnects, 1 resume", p.cuts, p.reconnects, p.resumes)
	}
	if p.nUnexpl != 3 { // the duplicate, the gap and the end event
		t.Errorf("%d unexplained: %v; want 3", p.nUnexpl, p.unexplained)
	}
	if !f.dead.Load() {
		t.Error("the follower is not failed after the end event")
	}
	if want := []string{"", "2", "5"}; !slices.Equal(lastIDs, want) {
		t.Errorf("Last-Event-ID of each connection: %q, want %q", lastIDs, want)
	}
}

// A phase explains only the endings of its own fault; a call without a
// status frame outside a phase that kills or resets fails the run, and so
// does any status but OK and UNAVAILABLE.
func TestWebSocketEndingsExplainedByPhase(t *testing.T) {
	for _, tc := range []struct {
		explain int
		end     wsEnd
		normal  bool
		fails   bool
	}{
		{0, wsEnd{status: 0, closeCode: websocket.CloseNormalClosure}, true, false},
		{0, wsEnd{status: 0, closeCode: websocket.CloseNormalClosure}, false, true}, // chat never ends by itself
		{drain, wsEnd{status: 14, closeCode: websocket.CloseGoingAway}, false, false},
		{0, wsEnd{status: 14, closeCode: websocket.CloseGoingAway}, false, true},
		{drain, wsEnd{status: -1, closeCode: websocket.CloseAbnormalClosure}, false, true},
		{abrupt, wsEnd{status: -1, closeCode: websocket.CloseAbnormalClosure}, false, false},
		{abrupt, wsEnd{status: -1, closeCode: websocket.CloseGoingAway}, false, false},
		{backendX, wsEnd{status: 14, closeCode: 4014}, false, false},
		{drain, wsEnd{status: 14, closeCode: 4014}, false, true},
		{drain | abrupt | backendX | refused, wsEnd{status: 13, closeCode: 1011}, false, true},
		{drain | abrupt | backendX | refused, wsEnd{status: 0, closeCode: websocket.CloseGoingAway}, true, true},
	} {
		rec := &recorder{}
		p := rec.begin("test", tc.explain)
		c := &wsClient{id: 1, kind: "echo", rec: rec}
		c.record(tc.end, tc.normal)
		if got := p.nUnexpl > 0; got != tc.fails {
			t.Errorf("explain %b, %s (normal end %v): fails %v, want %v", tc.explain, tc.end, tc.normal, got, tc.fails)
		}
	}
}
