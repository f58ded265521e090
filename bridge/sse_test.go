package bridge

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// readSSE parses b as a browser would and returns every block it holds.
func readSSE(tb testing.TB, b []byte) []bridgetest.Event {
	tb.Helper()
	r := bridgetest.NewSSEReader(bytes.NewReader(b))
	var out []bridgetest.Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("read %q: %v", b, err)
		}
		out = append(out, ev)
	}
}

// normalizeLineBreaks is what the event-stream format can carry of data:
// every line break comes out as LF.
func normalizeLineBreaks(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

func TestAppendEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		id       string
		event    string
		data     string
		want     string // exact bytes
		wantData string // what the browser dispatches
	}{
		{"id and data", "7", "message", `{"seq":"7"}`,
			"id: 7\nevent: message\ndata: {\"seq\":\"7\"}\n\n", `{"seq":"7"}`},
		{"no id", "", "end", `{"code":0}`,
			"event: end\ndata: {\"code\":0}\n\n", `{"code":0}`},
		{"event name", "1", "headers", "{}",
			"id: 1\nevent: headers\ndata: {}\n\n", "{}"},
		{"LF", "", "message", "a\nb",
			"event: message\ndata: a\ndata: b\n\n", "a\nb"},
		{"CRLF", "", "message", "a\r\nb",
			"event: message\ndata: a\ndata: b\n\n", "a\nb"},
		{"CR", "", "message", "a\rb",
			"event: message\ndata: a\ndata: b\n\n", "a\nb"},
		{"trailing LF", "", "message", "a\n",
			"event: message\ndata: a\ndata: \n\n", "a\n"},
		{"trailing CRLF", "", "message", "a\r\n",
			"event: message\ndata: a\ndata: \n\n", "a\n"},
		{"trailing CR", "", "message", "a\r",
			"event: message\ndata: a\ndata: \n\n", "a\n"},
		{"leading LF", "", "message", "\na",
			"event: message\ndata: \ndata: a\n\n", "\na"},
		{"only a line break", "", "message", "\n",
			"event: message\ndata: \ndata: \n\n", "\n"},
		{"empty data", "3", "message", "",
			"id: 3\nevent: message\ndata: \n\n", ""},
		{"two LF", "", "message", "a\n\nb",
			"event: message\ndata: a\ndata: \ndata: b\n\n", "a\n\nb"},
		{"two CRLF", "", "message", "a\r\n\r\nb",
			"event: message\ndata: a\ndata: \ndata: b\n\n", "a\n\nb"},
		{"two CR", "", "message", "a\r\rb",
			"event: message\ndata: a\ndata: \ndata: b\n\n", "a\n\nb"},
		{"LF then CR is two breaks", "", "message", "a\n\rb",
			"event: message\ndata: a\ndata: \ndata: b\n\n", "a\n\nb"},
		{"CR then CRLF is two breaks", "", "message", "a\r\r\nb",
			"event: message\ndata: a\ndata: \ndata: b\n\n", "a\n\nb"},
		{"leading space kept", "", "message", " a",
			"event: message\ndata:  a\n\n", " a"},
		{"colons kept", "", "message", "data: x\n:y",
			"event: message\ndata: data: x\ndata: :y\n\n", "data: x\n:y"},
		{"blank-line injection", "", "message", "a\n\nid: 666\nevent: end\ndata: x",
			"event: message\ndata: a\ndata: \ndata: id: 666\ndata: event: end\ndata: data: x\n\n",
			"a\n\nid: 666\nevent: end\ndata: x"},
		{"id with spaces", " 5 ", "message", "x",
			"id:  5 \nevent: message\ndata: x\n\n", "x"},
		{"NUL in data", "", "message", "a\x00b",
			"event: message\ndata: a\x00b\n\n", "a\x00b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := appendEvent(nil, tt.id, tt.event, []byte(tt.data))
			if string(got) != tt.want {
				t.Fatalf("appendEvent(%q, %q, %q) = %q, want %q", tt.id, tt.event, tt.data, got, tt.want)
			}
			want := []bridgetest.Event{{ID: tt.id, HasID: tt.id != "", Type: tt.event, Data: tt.wantData}}
			if diff := cmp.Diff(want, readSSE(t, got)); diff != "" {
				t.Errorf("parsed %q (-want +got):\n%s", got, diff)
			}
		})
	}
}

func TestAppendEventAppendsToDst(t *testing.T) {
	t.Parallel()
	dst := []byte("retry: 10\n\n")
	got := appendEvent(dst, "1", "message", []byte("x"))
	if want := "retry: 10\n\nid: 1\nevent: message\ndata: x\n\n"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// An event without id leaves the browser's last event id as it was: that
// is what lets the headers, end and error events carry no id.
func TestAppendEventWithoutIDKeepsLastID(t *testing.T) {
	t.Parallel()
	var b []byte
	b = appendEvent(b, "41", sseEventMessage, []byte("a"))
	b = appendEvent(b, "", sseEventEnd, []byte("b"))
	b = appendEvent(b, "42", sseEventMessage, []byte("c"))
	want := []bridgetest.Event{
		{ID: "41", HasID: true, Type: "message", Data: "a"},
		{ID: "41", HasID: false, Type: "end", Data: "b"},
		{ID: "42", HasID: true, Type: "message", Data: "c"},
	}
	if diff := cmp.Diff(want, readSSE(t, b)); diff != "" {
		t.Fatalf("parsed %q (-want +got):\n%s", b, diff)
	}
}

func TestAppendRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		d         time.Duration
		want      string
		wantRetry time.Duration // as the browser reads it
	}{
		{"seconds", 2 * time.Second, "retry: 2000\n", 2 * time.Second},
		{"milliseconds", 1500 * time.Millisecond, "retry: 1500\n", 1500 * time.Millisecond},
		{"one millisecond", time.Millisecond, "retry: 1\n", time.Millisecond},
		{"sub-millisecond truncates", 1999 * time.Microsecond, "retry: 1\n", time.Millisecond},
		{"zero", 0, "retry: 0\n", 0},
		{"an hour", time.Hour, "retry: 3600000\n", time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := appendRetry([]byte("x"), tt.d)
			if string(got) != "x"+tt.want {
				t.Fatalf("appendRetry(%v) = %q, want %q", tt.d, got, "x"+tt.want)
			}
			// A lone retry field, ended by a blank line as the handler
			// writes it, sets the reconnection time and dispatches nothing.
			evs := readSSE(t, append(appendRetry(nil, tt.d), '\n'))
			want := []bridgetest.Event{{Retry: tt.wantRetry}}
			if diff := cmp.Diff(want, evs); diff != "" {
				t.Errorf("parsed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidEventID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"", true},
		{"1", true},
		{"18446744073709551615", true},
		{"cursor-a:b c", true},
		{" leading and trailing ", true},
		{"é€😀", true},
		{"\t", true},
		{"a\nb", false},
		{"a\rb", false},
		{"a\r\nb", false},
		{"\n", false},
		{"\r", false},
		{"a\x00b", false},
		{"\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			t.Parallel()
			if got := validEventID(tt.id); got != tt.want {
				t.Fatalf("validEventID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

// FuzzAppendEvent checks that whatever the data, an event written by
// appendEvent reaches a browser as exactly that one event: same type, same
// id, same data up to the kind of line break.
func FuzzAppendEvent(f *testing.F) {
	f.Add("1", "message", []byte(`{"seq":"1"}`))
	f.Add("", "end", []byte(`{"code":0,"message":"","details":[]}`))
	f.Add("", "message", []byte(""))
	f.Add("9", "message", []byte("a\nb\r\nc\rd"))
	f.Add("x", "message", []byte("\r\n\r\n"))
	f.Add("x", "message", []byte("\n\r"))
	f.Add(" id ", " spaced ", []byte(" data "))
	f.Add("id:1", "event: x", []byte("data: y\n\nid: 2\n"))
	f.Add("é", "ü", []byte("😀\r"))
	f.Add(":", ":", []byte(":"))
	f.Fuzz(func(t *testing.T, id, event string, data []byte) {
		if !validEventID(id) || event == "" || strings.ContainsAny(event, "\r\n") || !utf8.Valid(data) {
			t.Skip()
		}
		b := appendEvent(nil, id, event, data)
		evs := readSSE(t, b)
		want := []bridgetest.Event{{ID: id, HasID: id != "", Type: event, Data: normalizeLineBreaks(string(data))}}
		if len(evs) != 1 || !reflect.DeepEqual(want[0], evs[0]) {
			t.Fatalf("appendEvent(%q, %q, %q) = %q, parsed (-want +got):\n%s", id, event, data, b, cmp.Diff(want, evs))
		}
	})
}

// BenchmarkAppendEvent: one event of scenario 1's ~100-byte JSON, which
// has no line break (the common case), into a reused buffer.
func BenchmarkAppendEvent(b *testing.B) {
	data := []byte(`{"payload":"` + strings.Repeat("QUJD", 20) + `","seq":"123456"}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEvent(buf[:0], "123456", sseEventMessage, data)
	}
}

// lineBreak finds the first CR or LF, whichever comes first, as
// bytes.IndexAny does.
func TestLineBreak(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "abc", "\n", "\r", "a\r\nb", "a\n\rb", "ab\rc\nd", "ab\nc\rd", "é\u2028x", strings.Repeat("x", 100) + "\r"} {
		if got, want := lineBreak([]byte(in)), bytes.IndexAny([]byte(in), "\r\n"); got != want {
			t.Errorf("lineBreak(%q) = %d, want %d", in, got, want)
		}
	}
}
