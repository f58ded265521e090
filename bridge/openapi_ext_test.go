package bridge_test

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	testv1 "github.com/grpcbridge/grpcbridge/gen/bridgetest/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// apiDocsHandler is a bridge in front of the demo services and, with
// tests, the bridgetest services whose methods have google.api.http rules
// of every verb and body shape.
func apiDocsHandler(t *testing.T, expose ...string) *bridge.Handler {
	t.Helper()
	return newAPIDocsHandler(t, bridge.WithExpose(expose...))
}

// newAPIDocsHandler is apiDocsHandler with any options.
func newAPIDocsHandler(t *testing.T, opts ...bridge.Option) *bridge.Handler {
	t.Helper()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		demo.Register(s)
		testv1.RegisterRestServiceServer(s, bridgetest.NewRestServer())
	})
	h, err := bridge.NewHandler(append([]bridge.Option{bridge.WithBackend(conn)}, opts...)...)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h
}

// decodeDoc builds a document and parses it.
func decodeDoc(t *testing.T, build func() ([]byte, error)) map[string]any {
	t.Helper()
	b, err := build()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("document is not JSON: %v", err)
	}
	return doc
}

// dig returns the member at keys (object keys, or decimal indexes into
// arrays), failing the test with the path when there is none.
func dig(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for i, k := range keys {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[k]; !ok {
				t.Fatalf("no member %q at %s", k, strings.Join(keys[:i], " > "))
			}
		default:
			t.Fatalf("%s is %T, not an object", strings.Join(keys[:i], " > "), v)
		}
	}
	return v
}

// has reports whether the member at keys exists.
func has(v any, keys ...string) bool {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

// params returns an operation's parameters by "in:name".
func params(t *testing.T, op any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	list, _ := dig(t, op, "parameters").([]any)
	for _, p := range list {
		p := p.(map[string]any)
		key := p["in"].(string) + ":" + p["name"].(string)
		if _, dup := out[key]; dup {
			t.Errorf("parameter %s twice", key)
		}
		out[key] = p
	}
	return out
}

// paramNames returns the sorted keys of params.
func paramNames(ps map[string]map[string]any) []string {
	var names []string
	for k := range ps {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// wantJSON compares a part of a document with its expected JSON.
func wantJSON(t *testing.T, what string, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expectation %s: %v", want, err)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("%s:\n got %s\nwant %s", what, gb, wb)
	}
}

func TestOpenAPIDemo(t *testing.T) {
	t.Parallel()
	h := apiDocsHandler(t, "demo.v1.*")
	doc := decodeDoc(t, h.OpenAPI)
	if doc["openapi"] != "3.2.0" {
		t.Errorf("openapi = %v, want 3.2.0", doc["openapi"])
	}
	if v, _ := dig(t, doc, "info", "version").(string); len(v) != 12 {
		t.Errorf("info.version = %q, want a content hash", v)
	}
	paths := dig(t, doc, "paths").(map[string]any)

	t.Run("Watch is a GET with text/event-stream", func(t *testing.T) {
		t.Parallel()
		get := dig(t, paths, "/demo.v1.TickerService/Watch", "get")
		content := dig(t, get, "responses", "200", "content").(map[string]any)
		if _, ok := content["application/json"]; ok || len(content) != 1 {
			t.Errorf("200 content types %v, want text/event-stream only", content)
		}
		items := dig(t, content, "text/event-stream", "itemSchema", "oneOf").([]any)
		var events []string
		for _, it := range items {
			if has(it, "properties", "event", "const") {
				events = append(events, dig(t, it, "properties", "event", "const").(string))
			}
		}
		if want := []string{"headers", "message", "end", "error"}; !slices.Equal(events, want) {
			t.Errorf("events %v, want %v", events, want)
		}
		if d := dig(t, items[2], "description").(string); !strings.Contains(d, "seq field") {
			t.Errorf("message event: %q does not name the cursor seq", d)
		}
		if d, _ := params(t, get)["header:Last-Event-ID"]["description"].(string); !strings.Contains(d, "after_seq") {
			t.Errorf("Last-Event-ID: %q does not name the resume field after_seq", d)
		}
		wantJSON(t, "message data", dig(t, items[2], "properties", "data"),
			`{"type":"string","contentMediaType":"application/json","contentSchema":{"$ref":"#/components/schemas/demo.v1.Tick"}}`)
		ps := params(t, get)
		if want := []string{"header:Last-Event-ID", "query:after_seq", "query:interval_ms", "query:limit", "query:symbol"}; !slices.Equal(paramNames(ps), want) {
			t.Errorf("parameters %v, want %v", paramNames(ps), want)
		}
		wantJSON(t, "symbol", ps["query:symbol"]["schema"], `{"type":"string"}`)
		wantJSON(t, "interval_ms", ps["query:interval_ms"]["schema"], `{"type":"integer","format":"int32"}`)
		wantJSON(t, "after_seq (uint64 as string)", ps["query:after_seq"]["schema"], `{"type":"string","format":"uint64","pattern":"^[0-9]+$"}`)
		if !has(paths, "/demo.v1.TickerService/Watch", "post", "requestBody") {
			t.Error("Watch has no POST with a JSON body")
		}
		// The annotated path: symbol from the path, the rest from the query.
		annotated := dig(t, paths, "/v1/tickers/{symbol}:watch", "get")
		aps := params(t, annotated)
		if p := aps["path:symbol"]; p == nil || p["required"] != true {
			t.Errorf("annotated Watch: path parameter symbol %v, want required", p)
		}
		if _, ok := aps["query:symbol"]; ok {
			t.Error("annotated Watch: symbol is also a query parameter")
		}
		if !has(annotated, "responses", "200", "content", "text/event-stream", "itemSchema") {
			t.Error("annotated Watch is not an event stream")
		}
	})

	t.Run("Quote is a GET 200 application/json", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/demo.v1.TickerService/Quote", "/v1/tickers/{symbol}"} {
			get := dig(t, paths, path, "get")
			wantJSON(t, path+" 200", dig(t, get, "responses", "200", "content", "application/json", "schema"), `{"$ref":"#/components/schemas/demo.v1.Tick"}`)
			if !has(get, "responses", "200", "content", "text/event-stream", "itemSchema") {
				t.Errorf("%s: no text/event-stream answer for Accept: text/event-stream", path)
			}
			wantJSON(t, path+" 503", dig(t, get, "responses", "503"), `{"$ref":"#/components/responses/Error503"}`)
			if has(get, "responses", "415") || has(get, "requestBody") {
				t.Errorf("%s: a GET with a body", path)
			}
		}
		if d := dig(t, doc, "components", "responses", "Error503", "description").(string); !strings.Contains(d, "UNAVAILABLE") {
			t.Errorf("Error503: %q does not name UNAVAILABLE", d)
		}
		wantJSON(t, "Error400 body", dig(t, doc, "components", "responses", "Error400", "content", "application/json", "schema"), `{"$ref":"#/components/schemas/google.rpc.Status"}`)
	})

	t.Run("Post is a POST with a body", func(t *testing.T) {
		t.Parallel()
		if has(paths, "/demo.v1.ChatService/Post", "get") {
			t.Error("Post, which has side effects, is a GET")
		}
		for _, path := range []string{"/demo.v1.ChatService/Post", "/v1/rooms/{room}/messages"} {
			post := dig(t, paths, path, "post")
			wantJSON(t, path+" body", dig(t, post, "requestBody"), `{"required":true,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/demo.v1.ChatMessage"}}}}`)
			if !has(post, "responses", "415") {
				t.Errorf("%s: no 415 for a body that is not JSON", path)
			}
		}
		// body "*": the query string is ignored, so it has no parameters.
		if ps := params(t, dig(t, paths, "/v1/rooms/{room}/messages", "post")); !slices.Equal(paramNames(ps), []string{"path:room"}) {
			t.Errorf("parameters %v, want the path's room only", paramNames(ps))
		}
	})

	t.Run("bidirectional methods are WebSocket only", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/demo.v1.ChatService/Chat", "/demo.v1.EchoService/Echo"} {
			if _, ok := paths[path]; ok {
				t.Errorf("%s is in the OpenAPI document", path)
			}
		}
	})

	t.Run("proto3 JSON types", func(t *testing.T) {
		t.Parallel()
		wantJSON(t, "demo.v1.Tick", dig(t, doc, "components", "schemas", "demo.v1.Tick"), `{"type":"object","properties":{
			"symbol":{"type":"string"},
			"seq":{"type":"string","format":"uint64","pattern":"^[0-9]+$"},
			"price":{"type":"number","format":"double"},
			"time":{"type":"string","format":"date-time"}}}`)
		wantJSON(t, "bytes", dig(t, doc, "components", "schemas", "demo.v1.EchoResponse", "properties", "payload"), `{"type":"string","format":"byte","contentEncoding":"base64"}`)
		wantJSON(t, "interval_ms (JSON name)", dig(t, doc, "components", "schemas", "demo.v1.StreamRequest", "properties", "intervalMs"), `{"type":"integer","format":"int32"}`)
	})
}

func TestOpenAPIRequestShapes(t *testing.T) {
	t.Parallel()
	h := apiDocsHandler(t, "bridgetest.v1.*")
	doc := decodeDoc(t, h.OpenAPI)
	paths := dig(t, doc, "paths").(map[string]any)

	ps := params(t, dig(t, paths, "/bridgetest.v1.InspectService/InspectOnce", "get"))
	for key, want := range map[string]string{
		"query:color":            `{"in":"query","name":"color","schema":{"$ref":"#/components/schemas/bridgetest.v1.Color"}}`,
		"query:big":              `{"in":"query","name":"big","schema":{"type":"string","format":"int64","pattern":"^-?[0-9]+$"}}`,
		"query:tags":             `{"in":"query","name":"tags","style":"form","explode":true,"schema":{"type":"array","items":{"type":"string"}}}`,
		"query:labels":           `{"in":"query","name":"labels","style":"deepObject","explode":true,"schema":{"type":"object","additionalProperties":{"type":"string"}}}`,
		"query:since":            `{"in":"query","name":"since","schema":{"type":"string","format":"date-time"}}`,
		"query:filter.min_price": `{"in":"query","name":"filter.min_price","schema":{"type":"number","format":"double"}}`,
		"query:filter.region":    `{"in":"query","name":"filter.region","schema":{"type":"string"}}`,
		"query:hold":             `{"in":"query","name":"hold","schema":{"type":"boolean"}}`,
	} {
		wantJSON(t, "InspectOnce "+key, ps[key], want)
	}
	if _, ok := ps["query:filter"]; ok {
		t.Error("the message field filter is a query parameter itself")
	}
	wantJSON(t, "enum by name", dig(t, doc, "components", "schemas", "bridgetest.v1.Color"), `{"type":"string","enum":["COLOR_UNSPECIFIED","COLOR_RED","COLOR_GREEN"]}`)
	wantJSON(t, "enum field", dig(t, doc, "components", "schemas", "bridgetest.v1.InspectRequest", "properties", "color"), `{"$ref":"#/components/schemas/bridgetest.v1.Color"}`)

	t.Run("body field and path", func(t *testing.T) {
		t.Parallel()
		put := dig(t, paths, "/v1/items/{name}", "put")
		wantJSON(t, "Update body", dig(t, put, "requestBody", "content", "application/json", "schema"), `{"$ref":"#/components/schemas/bridgetest.v1.Filter"}`)
		ps := params(t, put)
		for _, k := range []string{"query:name", "query:filter.region", "query:filter.min_price"} {
			if _, ok := ps[k]; ok {
				t.Errorf("Update: %s, which the path or the body sets, is a query parameter", k)
			}
		}
		if _, ok := ps["query:color"]; !ok {
			t.Error("Update: color is not a query parameter")
		}
		// A path parameter inside a message: its siblings stay in the query.
		rps := params(t, dig(t, paths, "/v1/inspect/{name}/regions/{filter.region}", "get"))
		if _, ok := rps["path:filter.region"]; !ok {
			t.Error("no path parameter filter.region")
		}
		if _, ok := rps["query:filter.region"]; ok {
			t.Error("filter.region is a query parameter too")
		}
		if _, ok := rps["query:filter.min_price"]; !ok {
			t.Error("filter.min_price is not a query parameter")
		}
		// body "*": nothing from the query.
		if ps := params(t, dig(t, paths, "/v1/items/{name}/filters/{filter.region}", "patch")); !slices.Equal(paramNames(ps), []string{"path:filter.region", "path:name"}) {
			t.Errorf("Patch parameters %v, want the path's", paramNames(ps))
		}
	})

	t.Run("verbs and response_body", func(t *testing.T) {
		t.Parallel()
		if !has(paths, "/v1/items/{name}:purge", "additionalOperations", "PURGE") {
			t.Error("the custom verb PURGE is not in additionalOperations")
		}
		if !has(paths, "/v1/items/{name}", "delete") || has(paths, "/v1/items/{name}", "delete", "requestBody") {
			t.Error("DELETE without a body is missing or has a body")
		}
		wantJSON(t, "response_body seq", dig(t, paths, "/v1/items/{name}/seq", "get", "responses", "200", "content", "application/json", "schema"),
			`{"type":"string","format":"uint64","pattern":"^[0-9]+$"}`)
		wantJSON(t, "response_body request.tags", dig(t, paths, "/v1/items/{name}/tags", "get", "responses", "200", "content", "application/json", "schema"),
			`{"type":"array","items":{"type":"string"}}`)
		// Event streams carry whole messages whatever the response_body.
		wantJSON(t, "response_body's event stream", dig(t, paths, "/v1/items/{name}/seq", "get", "responses", "200", "content", "text/event-stream", "itemSchema", "oneOf").([]any)[2].(map[string]any)["properties"].(map[string]any)["data"].(map[string]any)["contentSchema"],
			`{"$ref":"#/components/schemas/bridgetest.v1.InspectResponse"}`)
		if has(paths, "/bridgetest.v1.RestService/Touch", "get") {
			t.Error("Touch, which may have side effects, is a GET")
		}
		if !has(paths, "/bridgetest.v1.RestService/Peek", "get") {
			t.Error("Peek, marked NO_SIDE_EFFECTS, is not a GET")
		}
	})

	t.Run("operation ids are unique", func(t *testing.T) {
		t.Parallel()
		seen := map[string]bool{}
		for path, item := range paths {
			ops := map[string]any{}
			for k, v := range item.(map[string]any) {
				ops[k] = v
			}
			if extra, ok := ops["additionalOperations"].(map[string]any); ok {
				delete(ops, "additionalOperations")
				for k, v := range extra {
					ops[k] = v
				}
			}
			for verb, op := range ops {
				id := dig(t, op, "operationId").(string)
				if seen[id] {
					t.Errorf("%s %s: operationId %s twice", verb, path, id)
				}
				seen[id] = true
			}
		}
	})
}

// shapesSchema is a schema with what the demo lacks: a recursive message,
// wrappers, a Duration, a oneof, a map of messages, a path variable over
// several segments, comments, and a bidirectional method.
func shapesSchema(t *testing.T) *bridge.Handler {
	t.Helper()
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	repeated := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	field := func(name string, n int32, typ descriptorpb.FieldDescriptorProto_Type, label *descriptorpb.FieldDescriptorProto_Label, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: typ.Enum(), Label: label}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	getOpts := &descriptorpb.MethodOptions{}
	proto.SetExtension(getOpts, annotations.E_Http, &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/v1/{name=trees/*}"}})
	choice := int32(0)
	node := &descriptorpb.DescriptorProto{
		Name: proto.String("Node"),
		Field: []*descriptorpb.FieldDescriptorProto{
			field("name", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, optional, ""),
			field("child", 2, *msg, optional, ".shapes.v1.Node"),
			field("children", 3, *msg, repeated, ".shapes.v1.Node"),
			field("weight", 4, *msg, optional, ".google.protobuf.Int64Value"),
			field("ttl", 5, *msg, optional, ".google.protobuf.Duration"),
			{Name: proto.String("a"), Number: proto.Int32(6), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: optional, OneofIndex: &choice},
			{Name: proto.String("b"), Number: proto.Int32(7), Type: descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum(), Label: optional, OneofIndex: &choice},
			field("by_name", 8, *msg, repeated, ".shapes.v1.Node.ByNameEntry"),
		},
		OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("choice")}},
		NestedType: []*descriptorpb.DescriptorProto{{
			Name:    proto.String("ByNameEntry"),
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
			Field: []*descriptorpb.FieldDescriptorProto{
				field("key", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, optional, ""),
				field("value", 2, *msg, optional, ".shapes.v1.Node"),
			},
		}},
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:        proto.String("shapes/v1/shapes.proto"),
		Package:     proto.String("shapes.v1"),
		Syntax:      proto.String("proto3"),
		Dependency:  []string{"google/api/annotations.proto", "google/protobuf/wrappers.proto", "google/protobuf/duration.proto"},
		MessageType: []*descriptorpb.DescriptorProto{node},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Trees"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Get"), InputType: proto.String(".shapes.v1.Node"), OutputType: proto.String(".shapes.v1.Node"), Options: getOpts},
				{Name: proto.String("Grow"), InputType: proto.String(".shapes.v1.Node"), OutputType: proto.String(".shapes.v1.Node"), ClientStreaming: proto.Bool(true), ServerStreaming: proto.Bool(true)},
			},
		}},
		SourceCodeInfo: &descriptorpb.SourceCodeInfo{Location: []*descriptorpb.SourceCodeInfo_Location{
			{Path: []int32{4, 0}, Span: []int32{0, 0, 1}, LeadingComments: proto.String(" Node is a tree.\n It has children.\n")},
			{Path: []int32{4, 0, 2, 0}, Span: []int32{0, 0, 1}, LeadingComments: proto.String(" The node's name.\n")},
		}},
	}
	files, err := bridge.NewFiles(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{fdp}})
	if err != nil {
		t.Fatal(err)
	}
	conn := bridgetest.NewBackend(t, func(*grpc.Server) {})
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("shapes.v1.*"), bridge.WithFiles(files))
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h
}

func TestOpenAPISchemaShapes(t *testing.T) {
	t.Parallel()
	doc := decodeDoc(t, shapesSchema(t).OpenAPI)
	node := dig(t, doc, "components", "schemas", "shapes.v1.Node")
	wantJSON(t, "recursive field", dig(t, node, "properties", "child"), `{"$ref":"#/components/schemas/shapes.v1.Node"}`)
	wantJSON(t, "repeated message", dig(t, node, "properties", "children"), `{"type":"array","items":{"$ref":"#/components/schemas/shapes.v1.Node"}}`)
	wantJSON(t, "map of messages", dig(t, node, "properties", "byName"), `{"type":"object","additionalProperties":{"$ref":"#/components/schemas/shapes.v1.Node"}}`)
	wantJSON(t, "Int64Value wrapper", dig(t, node, "properties", "weight"), `{"type":"string","format":"int64","pattern":"^-?[0-9]+$"}`)
	if p, _ := dig(t, node, "properties", "ttl", "pattern").(string); !strings.HasSuffix(p, "s$") {
		t.Errorf("Duration pattern %q", p)
	}
	if d, _ := dig(t, node, "properties", "a", "description").(string); !strings.Contains(d, "oneof choice") {
		t.Errorf("oneof member description %q", d)
	}
	if d := dig(t, node, "description"); d != "Node is a tree.\nIt has children." {
		t.Errorf("message description %q", d)
	}
	if d := dig(t, node, "properties", "name", "description"); d != "The node's name." {
		t.Errorf("field description %q", d)
	}
	if has(doc, "components", "schemas", "shapes.v1.Node.ByNameEntry") {
		t.Error("a map entry is a component")
	}

	paths := dig(t, doc, "paths").(map[string]any)
	get := dig(t, paths, "/v1/{name}", "get")
	ps := params(t, get)
	if d, _ := ps["path:name"]["description"].(string); !strings.Contains(d, "trees/*") {
		t.Errorf("path parameter name: description %q does not name its segments", d)
	}
	wantJSON(t, "segments", ps["path:name"]["schema"], `{"type":"string","pattern":"^trees/[^/]+$"}`)
	// Through singular messages only, and a recursive message once.
	want := []string{"path:name", "query:a", "query:b", "query:child.a", "query:child.b", "query:child.name", "query:child.ttl", "query:child.weight", "query:ttl", "query:weight"}
	if got := paramNames(ps); !slices.Equal(got, want) {
		t.Errorf("query parameters\n got %v\nwant %v", got, want)
	}
	wantJSON(t, "Duration in a query", ps["query:ttl"]["schema"].(map[string]any)["type"], `"string"`)
	if _, ok := paths["/shapes.v1.Trees/Grow"]; ok {
		t.Error("the bidirectional Grow is in the OpenAPI document")
	}
}

func TestAPIDocsHandlerFollowsUpdateFiles(t *testing.T) {
	t.Parallel()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*"),
		bridge.WithFiles(schemaOf(t, "demo/v1/ticker.proto")))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.OpenAPIHandler())
	t.Cleanup(srv.Close)
	get := func(header http.Header) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
				t.Fatal(err)
			}
		}
		return resp, doc
	}
	resp, doc := get(nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	etag := resp.Header.Get("ETag")
	if !has(doc, "paths", "/demo.v1.TickerService/Watch") || has(doc, "paths", "/demo.v1.EchoService/Stream") {
		t.Fatalf("paths before the update: %v", doc["paths"])
	}
	if resp, _ := get(http.Header{"If-None-Match": {etag}}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d, want 304", resp.StatusCode)
	}

	if err := h.UpdateFiles(schemaOf(t, "demo/v1/ticker.proto", "demo/v1/echo.proto")); err != nil {
		t.Fatal(err)
	}
	resp, doc = get(http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
		t.Fatalf("after UpdateFiles: %d, ETag %s (was %s)", resp.StatusCode, resp.Header.Get("ETag"), etag)
	}
	if !has(doc, "paths", "/demo.v1.EchoService/Stream") {
		t.Errorf("the new schema's Stream is not in the document")
	}

	post, err := http.Post(srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed || post.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q; want 405 with GET, HEAD", post.StatusCode, post.Header.Get("Allow"))
	}
}

// TestWriteAPIDocs writes the documents of the demo services (openapi.json,
// asyncapi.json) and of the test services and sessions too
// (openapi-all.json, asyncapi-all.json), whose rules cover every verb and
// body shape and the session channel, into
// $APIDOCS_DIR, for make apidocs-check to validate with the npm validators
// (tools/apidocs). Without APIDOCS_DIR it only builds them.
func TestWriteAPIDocs(t *testing.T) {
	t.Parallel()
	dir := os.Getenv("APIDOCS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for suffix, h := range map[string]*bridge.Handler{
		"":     apiDocsHandler(t, "demo.v1.*"),
		"-all": newAPIDocsHandler(t, bridge.WithExpose("demo.v1.*", "bridgetest.v1.*"), bridge.WithSessions(testSessionOptions)),
	} {
		for name, build := range map[string]func() ([]byte, error){"openapi": h.OpenAPI, "asyncapi": h.AsyncAPI} {
			decodeDoc(t, build)
			doc, _ := build()
			if err := os.WriteFile(filepath.Join(dir, name+suffix+".json"), doc, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// conforms checks value against the subset of JSON Schema the documents
// use (type, properties, items, additionalProperties, enum, const, allOf,
// $ref into components.schemas), and reports every mismatch with its path.
// It is stricter than JSON Schema in one way: an object member that no
// property names is an error, so that a JSON name the codec writes and
// the document lacks is caught.
func conforms(t *testing.T, doc map[string]any, schema, value any, at string) {
	t.Helper()
	conformsTo(t, doc, schema, value, at, true)
}

// resolve follows a $ref.
func resolve(t *testing.T, doc map[string]any, schema any) map[string]any {
	t.Helper()
	s, ok := schema.(map[string]any)
	if !ok {
		t.Fatalf("schema %v is not an object", schema)
	}
	if r, ok := s["$ref"].(string); ok {
		return resolve(t, doc, dig(t, doc, "components", "schemas", strings.TrimPrefix(r, "#/components/schemas/")))
	}
	return s
}

// propertiesOf returns the property names of schema and its allOf parts.
func propertiesOf(t *testing.T, doc map[string]any, schema any) map[string]bool {
	t.Helper()
	s := resolve(t, doc, schema)
	out := map[string]bool{}
	props, _ := s["properties"].(map[string]any)
	for k := range props {
		out[k] = true
	}
	for _, sub := range asList(s["allOf"]) {
		maps.Copy(out, propertiesOf(t, doc, sub))
	}
	return out
}

func conformsTo(t *testing.T, doc map[string]any, schema, value any, at string, strict bool) {
	t.Helper()
	s := resolve(t, doc, schema)
	for _, sub := range asList(s["allOf"]) {
		conformsTo(t, doc, sub, value, at, false) // the members are checked against all parts below
	}
	if c, ok := s["const"]; ok && c != value {
		t.Errorf("%s: %v, want the const %v", at, value, c)
	}
	if e, ok := s["enum"]; ok && !slices.Contains(asList(e), value) {
		t.Errorf("%s: %v is not one of %v", at, value, e)
	}
	typ, _ := s["type"].(string)
	switch v := value.(type) {
	case map[string]any:
		if typ != "" && typ != "object" {
			t.Errorf("%s: an object, the schema says %s", at, typ)
			return
		}
		props, _ := s["properties"].(map[string]any)
		for k, member := range v {
			switch {
			case props[k] != nil:
				conformsTo(t, doc, props[k], member, at+"."+k, true)
			case s["additionalProperties"] != nil:
				conformsTo(t, doc, s["additionalProperties"], member, at+"."+k, true)
			case strict && !propertiesOf(t, doc, s)[k]:
				t.Errorf("%s: member %q is not in the schema", at, k)
			}
		}
		for _, req := range asList(s["required"]) {
			if _, ok := v[req.(string)]; !ok {
				t.Errorf("%s: required member %v missing", at, req)
			}
		}
	case []any:
		if typ != "array" {
			t.Errorf("%s: an array, the schema says %q", at, typ)
			return
		}
		for i, item := range v {
			conformsTo(t, doc, s["items"], item, at+"["+strconv.Itoa(i)+"]", true)
		}
	case string:
		if typ != "string" {
			t.Errorf("%s: the string %q, the schema says %q", at, v, typ)
		}
	case float64:
		if typ != "number" && typ != "integer" {
			t.Errorf("%s: the number %v, the schema says %q", at, v, typ)
		}
	case bool:
		if typ != "boolean" {
			t.Errorf("%s: a boolean, the schema says %q", at, typ)
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestOpenAPIDescribesTheAnswers checks real answers of the demo services
// against the document: a unary JSON answer, an error answer, and the
// events of a stream.
func TestOpenAPIDescribesTheAnswers(t *testing.T) {
	t.Parallel()
	h := apiDocsHandler(t, "demo.v1.*")
	doc := decodeDoc(t, h.OpenAPI)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	fetch := func(path string, header http.Header) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		maps.Copy(req.Header, header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	parse := func(b []byte) any {
		t.Helper()
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("not JSON: %s", b)
		}
		return v
	}
	quote := dig(t, doc, "paths", "/v1/tickers/{symbol}", "get", "responses")

	resp, body := fetch("/v1/tickers/ACME", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Quote: %d %s", resp.StatusCode, body)
	}
	conforms(t, doc, dig(t, quote, "200", "content", "application/json", "schema"), parse(body), "Quote")

	resp, body = fetch("/demo.v1.TickerService/Quote", nil) // no symbol: INVALID_ARGUMENT
	code := strconv.Itoa(resp.StatusCode)
	if !has(quote, code) {
		t.Fatalf("Quote without a symbol: %s is not among the documented answers", code)
	}
	ref := strings.TrimPrefix(dig(t, quote, code, "$ref").(string), "#/components/responses/")
	conforms(t, doc, dig(t, doc, "components", "responses", ref, "content", "application/json", "schema"), parse(body), "error")

	resp, body = fetch("/v1/tickers/ACME:watch?limit=2&interval_ms=1", http.Header{"Accept": {"text/event-stream"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Watch: %d %s", resp.StatusCode, body)
	}
	items := asList(dig(t, doc, "paths", "/v1/tickers/{symbol}:watch", "get", "responses", "200", "content", "text/event-stream", "itemSchema", "oneOf"))
	byEvent := map[string]any{}
	for _, it := range items {
		if has(it, "properties", "event", "const") {
			byEvent[dig(t, it, "properties", "event", "const").(string)] = dig(t, it, "properties", "data", "contentSchema")
		}
	}
	r := bridgetest.NewSSEReader(bytes.NewReader(body))
	var seen []string
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "" {
			continue // the retry block
		}
		schema, ok := byEvent[ev.Type]
		if !ok {
			t.Errorf("event %q is not in the itemSchema", ev.Type)
			continue
		}
		seen = append(seen, ev.Type)
		conforms(t, doc, schema, parse([]byte(ev.Data)), "event "+ev.Type)
	}
	if want := []string{"headers", "message", "message", "end"}; !slices.Equal(seen, want) {
		t.Errorf("events %v, want %v", seen, want)
	}
}
