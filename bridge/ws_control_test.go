package bridge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// encodeControl is the canonical encoding of a client's control object:
// what a conforming client sends, with keys sorted.
func encodeControl(tb testing.TB, c control) []byte {
	tb.Helper()
	var v any
	if c.end {
		v = map[string]bool{controlKeyEnd: true}
	} else {
		v = map[string]map[string][]string{controlKeyMetadata: jsonMetadata(c.metadata)}
	}
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("encode %+v: %v", c, err)
	}
	return b
}

var cmpControl = cmp.Options{cmp.AllowUnexported(control{}), cmpopts.EquateEmpty()}

func TestDecodeControl(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want control
	}{
		{"end", `{"end":true}`, control{end: true}},
		{"end with spaces", " \t\r\n{ \"end\" : true }\n", control{end: true}},
		{"empty metadata", `{"metadata":{}}`, control{metadata: map[string][]string{}}},
		{"metadata", `{"metadata":{"authorization":["Bearer x"],"x-tags":["a","b"],"x-none":[]}}`,
			control{metadata: map[string][]string{"authorization": {"Bearer x"}, "x-tags": {"a", "b"}, "x-none": {}}}},
		{"keys kept as written", `{"metadata":{"X-Trace":["1"]}}`, control{metadata: map[string][]string{"X-Trace": {"1"}}}},
		{"escapes", `{"metadata":{"k":["\u00e9\n\"\u003c"]}}`, control{metadata: map[string][]string{"k": {"é\n\"<"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeControl([]byte(tt.in))
			if err != nil {
				t.Fatalf("decodeControl(%s): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(control{})); diff != "" {
				t.Errorf("decodeControl(%s) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestDecodeControlErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string // in the error message
	}{
		{"empty", ``, "want a JSON object"},
		{"not JSON", `hello`, "want a JSON object"},
		{"array", `[{"end":true}]`, "want a JSON object"},
		{"string", `"end"`, "want a JSON object"},
		{"null", `null`, "want a JSON object"},
		{"invalid UTF-8", "{\"metadata\":{\"k\":[\"\xff\"]}}", "not valid UTF-8"},
		{"truncated", `{"end":true`, "not valid JSON"},
		{"trailing data", `{"end":true}{}`, "data after the JSON object"},
		{"trailing garbage", `{"end":true} x`, "data after the JSON object"},
		{"neither", `{}`, `want the key "metadata" or "end"`},
		{"both", `{"metadata":{},"end":true}`, "separate frames"},
		{"unknown key", `{"end":true,"stop":true}`, `unknown key "stop"`},
		{"unknown key shortened", `{"` + strings.Repeat("k", 200) + `":1}`, `unknown key "kkkk`},
		{"end false", `{"end":false}`, `"end" must be true`},
		{"end string", `{"end":"true"}`, `"end" must be true`},
		{"end number", `{"end":1}`, `"end" must be true`},
		{"end twice", `{"end":true,"end":true}`, `key "end" appears twice`},
		{"metadata null", `{"metadata":null}`, `"metadata" must be an object`},
		{"metadata array", `{"metadata":[]}`, `"metadata" must be an object`},
		{"metadata twice", `{"metadata":{},"metadata":{}}`, `key "metadata" appears twice`},
		{"metadata string value", `{"metadata":{"k":"v"}}`, `metadata "k" must be an array of strings`},
		{"metadata number value", `{"metadata":{"k":[1]}}`, `metadata "k" must be an array of strings`},
		{"metadata null value", `{"metadata":{"k":[null]}}`, `metadata "k" must be an array of strings`},
		{"metadata nested", `{"metadata":{"k":[["v"]]}}`, `metadata "k" must be an array of strings`},
		{"metadata key twice", `{"metadata":{"k":["a"],"k":["b"]}}`, `metadata key "k" appears twice`},
		{"bad JSON in metadata", `{"metadata":{"k":["a",]}}`, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeControl([]byte(tt.in))
			if err == nil {
				t.Fatalf("decodeControl(%q) = %+v, want an error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decodeControl(%q): error %q does not contain %q", tt.in, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "control frame: ") {
				t.Errorf("error %q does not say it is about a control frame", err)
			}
		})
	}
}

func TestEncodeHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   map[string][]string
		want string
	}{
		{nil, `{"headers":{}}`},
		{map[string][]string{}, `{"headers":{}}`},
		{map[string][]string{"x-b": {"2"}, "x-a": {"1", "<&>"}, "x-nil": nil}, `{"headers":{"x-a":["1","\u003c\u0026\u003e"],"x-b":["2"],"x-nil":[]}}`},
	}
	for _, tt := range tests {
		if got := string(encodeHeaders(tt.in)); got != tt.want {
			t.Errorf("encodeHeaders(%v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestEncodeStatus(t *testing.T) {
	t.Parallel()
	enc := newCodec(protoregistry.GlobalFiles)

	if got, want := string(encodeStatus(enc, status.New(codes.OK, ""), nil)), `{"status":{"code":0,"message":"","details":[]},"trailers":{}}`; got != want {
		t.Errorf("OK status frame = %s, want %s", got, want)
	}

	st, err := status.New(codes.FailedPrecondition, "not yet").WithDetails(&errdetails.ErrorInfo{Reason: "LATE", Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	got := encodeStatus(enc, st, map[string][]string{"x-t": {"1"}})
	want := `{"status":{"code":9,"message":"not yet","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"LATE","domain":"example.com"}]},"trailers":{"x-t":["1"]}}`
	var gotV, wantV any
	if err := json.Unmarshal(got, &gotV); err != nil {
		t.Fatalf("status frame %s is not JSON: %v", got, err)
	}
	_ = json.Unmarshal([]byte(want), &wantV)
	if diff := cmp.Diff(wantV, gotV); diff != "" {
		t.Errorf("status frame (-want +got):\n%s", diff)
	}
}

// controlSeeds are the fuzz seeds added with f.Add; testdata/fuzz holds
// more.
var controlSeeds = []string{
	`{"end":true}`,
	`{"metadata":{}}`,
	`{"metadata":{"authorization":["Bearer t"],"x-a-bin":["AAE="],"x-e":[]}}`,
	`{"metadata":{"k":["\u00e9\ud83d\ude00\u0000"]}}`,
	`{"metadata":{"k":["\ud800"]}}`,
	`{"metadata":{"":[""]}}`,
	`{"end":true,"end":true}`,
	`{"metadata":{},"end":true}`,
	`{"metadata":{"k":"v"}}`,
	`{"end":true} `,
	`[]`,
	"\xff",
}

// FuzzDecodeControl checks that decodeControl never panics, that what it
// accepts survives the canonical encoding (decode(encode(x)) == x), and
// that a decoded metadata map also survives the server's headers encoding.
func FuzzDecodeControl(f *testing.F) {
	for _, s := range controlSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeControl(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("decodeControl(%q): empty error", data)
			}
			return
		}
		if c.end == (c.metadata != nil) {
			t.Fatalf("decodeControl(%q) = %+v: want exactly one of metadata and end", data, c)
		}
		enc := encodeControl(t, c)
		again, err := decodeControl(enc)
		if err != nil {
			t.Fatalf("decodeControl(encode(%+v)) = %s: %v", c, enc, err)
		}
		if diff := cmp.Diff(c, again, cmpControl); diff != "" {
			t.Fatalf("decode(encode(x)) != x for input %q (-x +again):\n%s", data, diff)
		}
		if enc2 := encodeControl(t, again); !bytes.Equal(enc, enc2) {
			t.Fatalf("canonical form not stable: %s then %s", enc, enc2)
		}
		if c.metadata != nil {
			var hf headersFrame
			if err := json.Unmarshal(encodeHeaders(c.metadata), &hf); err != nil {
				t.Fatalf("headers frame of %+v is not JSON: %v", c.metadata, err)
			}
			if diff := cmp.Diff(c.metadata, hf.Headers, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("headers frame round trip (-want +got):\n%s", diff)
			}
		}
	})
}
