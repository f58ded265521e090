package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// The quote form reaches TickerService/Quote as plain JSON three ways (its
// google.api.http GET path, its gRPC path with GET, the client library's
// unary POST) and shows the tick; a refused quote shows its JSON status in
// the error panel.
func TestQuoteReachesPage(t *testing.T) {
	var reqs requestLog
	srv := newBridge(t, logRequests("/v1/tickers/ACME", &reqs))
	browser := newBrowser(t)
	page := newTab(t, browser, srv.URL+"/?watch=0&symbol=ACME")

	for _, via := range []string{"rest", "get", "post"} {
		t.Run(via, func(t *testing.T) {
			before := time.Now().Unix()
			page.eval(`window.demo.quote.tick = undefined`, nil)
			page.setValue("quote-via", via)
			page.click("quote-button")
			page.wait(`window.demo.quote.tick !== undefined`)
			after := time.Now().Unix()
			var tick struct {
				Symbol string  `json:"symbol"`
				Seq    string  `json:"seq"`
				Price  float64 `json:"price"`
				Time   string  `json:"time"`
			}
			page.eval(`window.demo.quote.tick`, &tick)
			seq, err := strconv.ParseUint(tick.Seq, 10, 64)
			if err != nil || seq < uint64(before) || seq > uint64(after) {
				t.Errorf("tick %+v: want seq the Unix seconds of the call, in [%d, %d]", tick, before, after)
			}
			if tick.Symbol != "ACME" || tick.Price != demo.Price("ACME", seq) || tick.Time == "" {
				t.Errorf("tick %+v: want ACME at the ticker's price %v, with a time", tick, demo.Price("ACME", seq))
			}
			if shown := page.text("quote-json"); !strings.Contains(shown, `"seq": "`+tick.Seq+`"`) {
				t.Errorf("page shows %q; want the tick's JSON", shown)
			}
		})
	}
	all := reqs.all()
	if len(all) != 1 || all[0].status != http.StatusOK || all[0].header.Get("Accept") != "application/json" {
		t.Errorf("requests for /v1/tickers/ACME %+v: want one, for JSON, answered 200", all)
	}

	page.setValue("quote-symbol", "")
	page.setValue("quote-via", "get")
	page.eval(`window.demo.errors.status = undefined`, nil)
	page.click("quote-button")
	page.wait(`window.demo.errors.status !== undefined`)
	var st struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	page.eval(`window.demo.errors.status`, &st)
	if st.Code != 3 || st.Message != "symbol is required" {
		t.Errorf("status %+v; want INVALID_ARGUMENT (3) symbol is required", st)
	}
	if shown := page.text("error-status"); !strings.Contains(shown, "(3)") || !strings.Contains(shown, "symbol is required") {
		t.Errorf("error panel shows %q; want the status", shown)
	}
}

// The chat form sends with ChatService/Post at its google.api.http path; the
// message comes back on the page's Chat stream.
func TestChatPostsOverHTTP(t *testing.T) {
	var reqs requestLog
	srv := newBridge(t, logRequests("/v1/rooms/e2e/messages", &reqs))
	browser := newBrowser(t)
	page := newTab(t, browser, srv.URL+"/?watch=0&room=e2e&user=ada")

	page.click("chat-join-button")
	page.wait(`window.demo.chat.joined`)
	page.setValue("chat-text", "posted")
	page.click("chat-send-button")
	page.wait(`window.demo.chat.messages.some(m => m.user === "ada" && m.text === "posted")`)
	page.wait(`document.getElementById("chat-text").value === ""`)
	all := reqs.all()
	if len(all) != 1 || all[0].status != http.StatusOK || all[0].header.Get("Content-Type") != "application/json" {
		t.Errorf("requests for /v1/rooms/e2e/messages %+v: want one JSON POST, answered 200", all)
	}
	if page.text("error-output") != "" {
		t.Errorf("error panel shows %q after a successful post", page.text("error-output"))
	}
}
