package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

const tickerPath = "/demo.v1.TickerService/Watch"

// The ticker delivers events in the page; when the server cuts the
// connection in the middle of an event, EventSource reconnects with
// Last-Event-ID and the stream continues with no gap and no duplicate.
func TestTickerResumesAfterServerCut(t *testing.T) {
	const cutAfter = 5
	var (
		mu      sync.Mutex
		lastIDs []string // Last-Event-ID of each ticker request
		cuts    int
	)
	cutFirst := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != tickerPath {
				next.ServeHTTP(w, r)
				return
			}
			mu.Lock()
			lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
			first := len(lastIDs) == 1
			mu.Unlock()
			if first {
				w = &cutWriter{ResponseWriter: w, after: cutAfter, onCut: func() {
					mu.Lock()
					cuts++
					mu.Unlock()
				}}
			}
			next.ServeHTTP(w, r)
		})
	}
	srv := newBridge(t, cutFirst)
	browser := newBrowser(t)
	page := newTab(t, browser, srv.URL+"/?symbol=ACME&interval_ms=40")

	const want = 3 * cutAfter
	page.wait(fmt.Sprintf(`window.demo.ticker.seqs.length >= %d`, want))
	var seqs []int
	page.eval(`window.demo.ticker.seqs`, &seqs)
	if !isContiguous(seqs) {
		t.Errorf("page received seqs %v; want 1, 2, 3, ... with no gap and no duplicate", seqs)
	}
	var log []string
	page.eval(`window.demo.ticker.log`, &log)
	if !contains(log, fmt.Sprintf("reconnected: resuming after #%d", cutAfter)) {
		t.Errorf("ticker log %q: want a visible resume after #%d", log, cutAfter)
	}
	mu.Lock()
	defer mu.Unlock()
	if cuts != 1 || len(lastIDs) < 2 || lastIDs[0] != "" || lastIDs[1] != fmt.Sprint(cutAfter) {
		t.Errorf("cuts %d, Last-Event-ID of the ticker requests %q; want 1 cut, then \"\" and %q", cuts, lastIDs, fmt.Sprint(cutAfter))
	}
}

// The drop connection button closes the stream and opens a new one from the
// last id: over EventSource with the resume field in the query, over fetch
// with the Last-Event-ID header.
func TestTickerDropButtonResumes(t *testing.T) {
	for _, tc := range []struct {
		transport string
		resumed   func(r loggedRequest, after string) bool
	}{
		{"eventsource", func(r loggedRequest, after string) bool {
			return strings.Contains(r.query, "after_seq="+after)
		}},
		{"fetch", func(r loggedRequest, after string) bool {
			return r.header.Get("Last-Event-ID") == after
		}},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			var reqs requestLog
			srv := newBridge(t, logRequests(tickerPath, &reqs))
			browser := newBrowser(t)
			page := newTab(t, browser, srv.URL+"/?symbol=DROP&interval_ms=40&transport="+tc.transport)

			page.wait(`window.demo.ticker.seqs.length >= 4`)
			// Read the last id and drop in one task, so that no tick comes
			// in between.
			var after string
			page.eval(`(() => {
				const last = document.getElementById("ticker-last").textContent;
				document.getElementById("ticker-drop").click();
				return last;
			})()`, &after)
			page.wait(`window.demo.ticker.seqs.length >= 12`)

			var seqs []int
			page.eval(`window.demo.ticker.seqs`, &seqs)
			if !isContiguous(seqs) {
				t.Errorf("page received seqs %v; want 1, 2, 3, ... with no gap and no duplicate", seqs)
			}
			all := reqs.all()
			if len(all) != 2 || !tc.resumed(all[1], after) {
				t.Errorf("ticker requests %+v: want two, the second resuming after %s", all, after)
			}
		})
	}
}

// Two pages chat through the bridge over WebSockets.
func TestChatBetweenTwoPages(t *testing.T) {
	srv := newBridge(t, nil)
	browser := newBrowser(t)
	alice := newTab(t, browser, srv.URL+"/?watch=0&room=e2e&user=alice")
	bob := newTab(t, browser, srv.URL+"/?watch=0&room=e2e&user=bob")

	alice.click("chat-join-button")
	alice.wait(`window.demo.chat.joined`)
	bob.click("chat-join-button")
	bob.wait(`window.demo.chat.joined`)
	alice.wait(`window.demo.chat.messages.some(m => m.user === "bob" && m.text === "joined the room")`)

	alice.setValue("chat-text", "hello bob")
	alice.click("chat-send-button")
	bob.wait(`window.demo.chat.messages.some(m => m.user === "alice" && m.text === "hello bob")`)
	bob.setValue("chat-text", "hi alice")
	bob.click("chat-send-button")
	alice.wait(`window.demo.chat.messages.some(m => m.user === "bob" && m.text === "hi alice")`)

	if got := bob.text("chat-messages"); !strings.Contains(got, "alicehello bob") {
		t.Errorf("bob's chat shows %q; want alice's message", got)
	}
	// Leaving closes the socket; alice's call ends as canceled, and bob's
	// goes on.
	alice.click("chat-leave")
	alice.wait(`window.demo.chat.status !== undefined`)
	if state := alice.text("chat-state"); state != "left" {
		t.Errorf("alice's chat state %q after leaving; want left", state)
	}
	if state := bob.text("chat-state"); state != "in room e2e" {
		t.Errorf("bob's chat state %q; want in room e2e", state)
	}
}

// A page from another origin cannot open a WebSocket to the bridge: the
// handshake is refused with 403 and the page sees the call fail.
func TestWebSocketFromOtherOriginRefused(t *testing.T) {
	var reqs requestLog
	bridgeSrv := newBridge(t, logRequests("/demo.v1.ChatService/Chat", &reqs))
	other := newPageServer(t)
	browser := newBrowser(t)
	page := newTab(t, browser, other.URL+"/?watch=0&room=e2e&user=mallory&bridge="+bridgeSrv.URL)

	page.click("chat-join-button")
	page.wait(`window.demo.chat.status !== undefined`)
	var st struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	page.eval(`window.demo.chat.status`, &st)
	if st.Code != 14 {
		t.Errorf("page status %+v: want UNAVAILABLE (14), the outcome of a refused handshake", st)
	}
	if joined := page.text("chat-state"); !strings.Contains(joined, "closed") {
		t.Errorf("chat state %q; want closed", joined)
	}
	all := reqs.all()
	if len(all) != 1 || all[0].status != http.StatusForbidden || all[0].header.Get("Origin") != other.URL {
		t.Errorf("chat requests %+v: want one, from origin %s, refused with 403", all, other.URL)
	}
}

// The client library's error path shows the backend's status: an error
// event in the middle of a stream, over EventSource and over fetch, and a
// request refused before the stream starts.
func TestErrorStatusReachesPage(t *testing.T) {
	srv := newBridge(t, nil)
	browser := newBrowser(t)
	page := newTab(t, browser, srv.URL+"/?watch=0")

	type status struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	for _, tc := range []struct {
		button   string
		code     string
		message  string
		want     status
		messages []string
	}{
		{"error-eventsource", "9", "boom over EventSource", status{9, "boom over EventSource"}, []string{"1", "2"}},
		{"error-fetch", "16", "who are you", status{16, "who are you"}, []string{"1", "2"}},
		{"error-refused", "", "", status{Code: 3}, []string{}},
	} {
		t.Run(tc.button, func(t *testing.T) {
			if tc.code != "" {
				page.setValue("error-code", tc.code)
				page.setValue("error-message", tc.message)
			}
			page.eval(`window.demo.errors.status = undefined`, nil)
			page.click(tc.button)
			page.wait(`window.demo.errors.status !== undefined`)
			var got status
			page.eval(`window.demo.errors.status`, &got)
			var messages []string
			page.eval(`window.demo.errors.messages`, &messages)
			if got.Code != tc.want.Code || (tc.want.Message != "" && got.Message != tc.want.Message) || got.Message == "" {
				t.Errorf("status %+v; want %+v", got, tc.want)
			}
			if !slices.Equal(messages, tc.messages) {
				t.Errorf("messages before the error %q; want %q", messages, tc.messages)
			}
			shown := page.text("error-status")
			if !strings.Contains(shown, fmt.Sprintf("(%d)", tc.want.Code)) || !strings.Contains(shown, got.Message) {
				t.Errorf("page shows status %q; want code %d and %q", shown, tc.want.Code, got.Message)
			}
		})
	}
}

// newPageServer serves the demo page alone, on an origin of its own.
func newPageServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(pageMux())
	t.Cleanup(srv.Close)
	return srv
}
