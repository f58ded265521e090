package bridge

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	_ "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	_ "github.com/grpcbridge/grpcbridge/gen/demo/v1"
)

// Fuzz targets for the decoders of untrusted request input besides the
// control frames (control_test.go) and grpc-timeout (metadata_test.go): the
// query string, Last-Event-ID and JSON bodies. Each checks that nothing
// panics, that a rejection is a 4xx with INVALID_ARGUMENT or
// RESOURCE_EXHAUSTED, and a property of what is accepted. Interesting
// inputs live in testdata/fuzz/<target>/.

// fuzzMethods are the methods the targets decode requests for: a demo
// method with a resume field and a cursor, one without either, and one
// whose request has every kind of field (nested, repeated, map, enum,
// Timestamp, 64-bit).
var fuzzMethods = []string{
	"/demo.v1.TickerService/Watch",
	"/demo.v1.EchoService/Stream",
	"/bridgetest.v1.InspectService/Inspect",
}

func newFuzzHandler(tb testing.TB) (*Handler, []*method) {
	tb.Helper()
	h, err := NewHandler(
		WithBackend(noBackend{}),
		WithExpose("demo.v1.*", "bridgetest.v1.*"),
		WithReadMaxBytes(64<<10),
	)
	if err != nil {
		tb.Fatal(err)
	}
	var ms []*method
	for _, p := range fuzzMethods {
		m := h.routes.Load().byPath[p]
		if m == nil {
			tb.Fatalf("%s is not exposed", p)
		}
		ms = append(ms, m)
	}
	return h, ms
}

// checkRejection fails unless a request error is one a browser may get
// for its own input.
func checkRejection(t *testing.T, what string, rerr *requestError) {
	t.Helper()
	switch rerr.httpStatus {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
	default:
		t.Fatalf("%s: HTTP %d (%v), want 400 or 413", what, rerr.httpStatus, rerr.st)
	}
	if rerr.st.Message() == "" {
		t.Fatalf("%s: empty status message", what)
	}
}

func FuzzQueryMapping(f *testing.F) {
	for _, q := range []string{
		"symbol=ACME&interval_ms=500",
		"symbol=ACME&after_seq=18446744073709551615&limit=-1",
		"name=x&filter.min_price=3.5&filter.region=eu&tags=a&tags=b&color=COLOR_RED&since=2026-01-02T03:04:05Z&big=-9223372036854775808&labels[k]=v",
		"color=2&big=9223372036854775808",
		"filter=x",
		"filter.min_price=NaN&filter.min_price=Infinity",
		"%zz=1",
		"a=%ff%fe",
		"since=not-a-time",
		"labels[%00]=%00",
		";;;&&&===",
		"symbol=" + strings.Repeat("A", 300),
	} {
		f.Add(q)
	}
	h, methods := newFuzzHandler(f)
	f.Fuzz(func(t *testing.T, rawQuery string) {
		for _, m := range methods {
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			r.URL.RawQuery = rawQuery
			msg, rerr := h.decodeRequest(r, m, nil, binding{})
			if rerr != nil {
				checkRejection(t, m.name, rerr)
				continue
			}
			// An accepted request is a message the backend can decode:
			// it survives the binary round trip unchanged, and decoding is
			// deterministic.
			again, rerr := h.decodeRequest(r, m, nil, binding{})
			if rerr != nil {
				t.Fatalf("%s: second decode of %q failed: %v", m.name, rawQuery, rerr)
			}
			b, err := proto.Marshal(msg)
			if err != nil {
				t.Fatalf("%s: %q decoded into a message that does not marshal: %v", m.name, rawQuery, err)
			}
			back := dynamicpb.NewMessage(m.desc.Input())
			if err := proto.Unmarshal(b, back); err != nil {
				t.Fatalf("%s: %q: round trip: %v", m.name, rawQuery, err)
			}
			if !proto.Equal(back, again) && !hasNaN(rawQuery) {
				t.Fatalf("%s: %q: round trip changed the message: %v != %v", m.name, rawQuery, back, again)
			}
		}
	})
}

// hasNaN reports whether a query may have set a float field to NaN, which
// compares unequal to itself.
func hasNaN(s string) bool {
	u, err := url.QueryUnescape(s)
	return err != nil || strings.Contains(strings.ToLower(u), "nan")
}

func FuzzLastEventID(f *testing.F) {
	for _, id := range []string{
		"1", "0", "41", "18446744073709551615", "18446744073709551616",
		"9223372036854775807", "9223372036854775808", "-1", "+1", "0x10", "1e3",
		" 1", "1 ", "abc", "\x00", "\xff", "é", strings.Repeat("9", 1024), strings.Repeat("9", 1025),
	} {
		f.Add(id)
	}
	h, methods := newFuzzHandler(f)
	f.Fuzz(func(t *testing.T, id string) {
		for _, m := range methods {
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			r.Header[headerLastEventID] = []string{id}
			req := dynamicpb.NewMessage(m.desc.Input())
			md := metadata.MD{}
			next, rerr := h.resume(r, m, req, md)
			valid := id == "" || len(id) <= maxLastEventIDBytes && isPrintableASCII(id)
			if rerr != nil {
				checkRejection(t, m.name, rerr)
				if valid && m.resume == nil {
					t.Fatalf("%s: Last-Event-ID %q refused without a resume field: %v", m.name, id, rerr)
				}
				continue
			}
			if !valid {
				t.Fatalf("%s: Last-Event-ID %q (%d bytes) accepted", m.name, id, len(id))
			}
			if id == "" {
				if next != 1 || len(md) != 0 {
					t.Fatalf("%s: no Last-Event-ID: next %d, metadata %v", m.name, next, md)
				}
				continue
			}
			if got := md.Get(mdLastEventID); len(got) != 1 || got[0] != id {
				t.Fatalf("%s: last-event-id metadata %q, want %q", m.name, got, id)
			}
			if m.resume != nil {
				// The resume fields of the fuzzed methods are uint64.
				want, err := strconv.ParseUint(id, 10, 64)
				if got := req.Get(m.resume).Uint(); err == nil && got != want {
					t.Fatalf("%s: Last-Event-ID %q set %s to %d", m.name, id, m.resume.Name(), got)
				}
			}
			wantNext := uint64(1)
			if n, err := strconv.ParseUint(id, 10, 64); err == nil && n < 1<<63 && m.cursor == nil {
				wantNext = n + 1
			}
			if next != wantNext {
				t.Fatalf("%s: Last-Event-ID %q: next sequence %d, want %d", m.name, id, next, wantNext)
			}
		}
	})
}

func FuzzJSONBody(f *testing.F) {
	for _, body := range []string{
		`{"symbol":"ACME","intervalMs":500,"afterSeq":"3"}`,
		`{"symbol":"ACME","interval_ms":"500"}`,
		`{"name":"x","filter":{"minPrice":"NaN","region":"eu"},"tags":["a","b"],"color":"COLOR_RED","since":"2026-01-02T03:04:05Z","big":"-9223372036854775808","labels":{"k":"v"}}`,
		`{"unknown":1}`,
		`{"symbol":"\ud800"}`,
		"{\"symbol\":\"\xff\"}",
		`{"symbol":"a","symbol":"b"}`,
		`[]`, `null`, ``, `{`, `{"filter":` + strings.Repeat(`{"filter":`, 200),
		`{"count":1e400}`, `{"count":2147483648}`, `{"big":1.5}`,
	} {
		f.Add([]byte(body))
	}
	h, methods := newFuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, m := range methods {
			r := httptest.NewRequest(http.MethodPost, "/x", bytes.NewReader(body))
			r.Header.Set(headerContentType, contentTypeJSON)
			msg, rerr := h.decodeRequest(r, m, nil, binding{body: "*"})
			if rerr != nil {
				checkRejection(t, m.name, rerr)
				if rerr.httpStatus == http.StatusRequestEntityTooLarge && int64(len(body)) <= h.cfg.readMaxBytes {
					t.Fatalf("%s: %d-byte body refused as too large", m.name, len(body))
				}
				continue
			}
			if int64(len(body)) > h.cfg.readMaxBytes {
				t.Fatalf("%s: %d-byte body accepted over the limit", m.name, len(body))
			}
			// What the bridge accepts, it can write back as proto3 JSON, and
			// reading that gives the same message.
			out, err := h.codec.marshal.Marshal(msg)
			if err != nil {
				t.Fatalf("%s: accepted %q but cannot marshal it: %v", m.name, body, err)
			}
			back := dynamicpb.NewMessage(m.desc.Input())
			if err := (protojson.UnmarshalOptions{}).Unmarshal(out, back); err != nil {
				t.Fatalf("%s: %s does not read back: %v", m.name, out, err)
			}
			if !proto.Equal(back, msg) && !bytes.Contains(bytes.ToLower(body), []byte("nan")) {
				t.Fatalf("%s: %q -> %s -> %v, want %v", m.name, body, out, back, msg)
			}
		}
	})
}

// noBackend is a backend that the decoders never reach.
type noBackend struct{}

func (noBackend) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return status.Error(codes.Unavailable, "no backend")
}

func (noBackend) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unavailable, "no backend")
}
