package bridge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The OpenAPI document of the exposed methods (docs/api-docs.md): built
// from the handler's current routes, so it follows UpdateFiles, and it
// describes exactly what the routes serve. OpenAPI 3.2 because it is the
// first version that can describe an event stream item by item
// (itemSchema on text/event-stream, OAS 3.2 section 4.14.4) and methods
// beyond the fixed eight (additionalOperations, for google.api.http custom
// verbs); a maintained validator reads it (tools/apidocs).

const (
	openAPIVersion = "3.2.0"
	// schemaRef prefixes the component schemas in both documents: OpenAPI
	// and AsyncAPI keep them under the same name.
	schemaRef = "#/components/schemas/"

	// Component names of the bridge's own JSON shapes. Proto full names
	// fill the rest of components.schemas; no proto package is
	// "grpcbridge", so they do not collide.
	schemaStatus      = "google.rpc.Status"
	schemaFinalStatus = "grpcbridge.FinalStatus"
	schemaMetadata    = "grpcbridge.Metadata"

	mediaTypeJSONDoc = "application/json"
)

// jsonObject is one object of a generated document. encoding/json writes
// its keys sorted, so the same schema always gives the same bytes.
type jsonObject = map[string]any

// schemaSet builds the JSON Schemas of messages in their proto3 JSON
// mapping, as the codec reads and writes them: lowerCamelCase names, 64-bit
// integers as strings, enums by name, bytes in base64, the well-known
// types in their special forms. Each message and enum is one component,
// by full name, so a message used twice is described once and a
// recursive message refers to itself. The schemas use only what both
// OpenAPI 3.2 (JSON Schema 2020-12) and AsyncAPI 3.1 (draft 07) read:
// nothing sits beside a $ref.
type schemaSet struct {
	schemas map[string]any
}

func newSchemaSet() *schemaSet {
	return &schemaSet{schemas: map[string]any{
		schemaStatus: jsonObject{
			"type":        "object",
			"description": "A gRPC status: every error and every final outcome (docs/protocol.md, Status).",
			"properties": jsonObject{
				"code":    jsonObject{"type": "integer", "minimum": 0, "maximum": 16, "description": "The numeric gRPC code: 0 OK to 16 UNAUTHENTICATED."},
				"message": jsonObject{"type": "string", "description": "For developers; may be empty."},
				"details": jsonObject{"type": "array", "items": anySchema(), "description": "google.protobuf.Any values in proto3 JSON."},
			},
			"required": []string{"code", "message", "details"},
		},
		schemaMetadata: jsonObject{
			"type":                 "object",
			"description":          "gRPC metadata on the allow-list: keys in lower case, values of -bin keys in base64.",
			"additionalProperties": jsonObject{"type": "array", "items": jsonObject{"type": "string"}},
		},
		schemaFinalStatus: jsonObject{
			"description": "The call's final status, with the allow-listed trailers.",
			"allOf": []any{
				ref(schemaStatus),
				jsonObject{"type": "object", "properties": jsonObject{"trailers": ref(schemaMetadata)}},
			},
		},
	}}
}

func ref(name string) jsonObject { return jsonObject{"$ref": schemaRef + name} }

// describe gives schema a description, wrapping a $ref, which may have no
// siblings in AsyncAPI's draft-07 schemas.
func describe(schema jsonObject, description string) jsonObject {
	if description == "" {
		return schema
	}
	if _, ok := schema["$ref"]; ok {
		return jsonObject{"allOf": []any{schema}, "description": description}
	}
	out := maps.Clone(schema)
	out["description"] = description
	return out
}

// message returns the schema of a value of message type md: a well-known
// type's own form, or a $ref to md's component, which it adds.
func (s *schemaSet) message(md protoreflect.MessageDescriptor) jsonObject {
	if wk := s.wellKnown(md); wk != nil {
		return wk
	}
	name := string(md.FullName())
	if _, ok := s.schemas[name]; !ok {
		s.schemas[name] = nil // taken, so that a recursive field refers back
		props := jsonObject{}
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			props[fd.JSONName()] = s.field(fd)
		}
		s.schemas[name] = describe(jsonObject{"type": "object", "properties": props}, comments(md))
	}
	return ref(name)
}

// field returns the schema of fd's value in its message's JSON.
func (s *schemaSet) field(fd protoreflect.FieldDescriptor) jsonObject {
	var schema jsonObject
	switch {
	case fd.IsMap():
		schema = jsonObject{"type": "object", "additionalProperties": s.singular(fd.MapValue())}
	case fd.IsList():
		schema = jsonObject{"type": "array", "items": s.singular(fd)}
	default:
		schema = s.singular(fd)
	}
	desc := comments(fd)
	if of := fd.ContainingOneof(); of != nil && !of.IsSynthetic() {
		desc = strings.TrimSpace(desc + "\n\nMember of oneof " + string(of.Name()) + ": set at most one of its fields.")
	}
	return describe(schema, desc)
}

// singular returns the schema of one value of fd's type.
func (s *schemaSet) singular(fd protoreflect.FieldDescriptor) jsonObject {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return jsonObject{"type": "boolean"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return jsonObject{"type": "integer", "format": "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return jsonObject{"type": "integer", "minimum": 0, "maximum": 4294967295}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		// proto3 JSON writes 64-bit integers as strings: a JavaScript
		// number would lose precision.
		return jsonObject{"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return jsonObject{"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
	case protoreflect.FloatKind:
		return jsonObject{"type": "number", "format": "float"}
	case protoreflect.DoubleKind:
		return jsonObject{"type": "number", "format": "double"}
	case protoreflect.StringKind:
		return jsonObject{"type": "string"}
	case protoreflect.BytesKind:
		return bytesSchema()
	case protoreflect.EnumKind:
		return s.enum(fd.Enum())
	default: // MessageKind, GroupKind
		return s.message(fd.Message())
	}
}

func bytesSchema() jsonObject {
	return jsonObject{"type": "string", "format": "byte", "contentEncoding": "base64"}
}

func anySchema() jsonObject {
	return jsonObject{
		"type":        "object",
		"description": "A google.protobuf.Any: the message's JSON with its type URL in @type.",
		"properties":  jsonObject{"@type": jsonObject{"type": "string"}},
		"required":    []string{"@type"},
	}
}

// enum returns the schema of an enum value: its name, as proto3 JSON
// writes it (requests may also give the number).
func (s *schemaSet) enum(ed protoreflect.EnumDescriptor) jsonObject {
	if ed.FullName() == "google.protobuf.NullValue" {
		return jsonObject{"type": "null"}
	}
	name := string(ed.FullName())
	if _, ok := s.schemas[name]; !ok {
		values := ed.Values()
		names := make([]string, 0, values.Len())
		for i := range values.Len() {
			names = append(names, string(values.Get(i).Name()))
		}
		s.schemas[name] = describe(jsonObject{"type": "string", "enum": names}, comments(ed))
	}
	return ref(name)
}

// wellKnown returns the proto3 JSON form of a well-known type, or nil for
// any other message.
func (s *schemaSet) wellKnown(md protoreflect.MessageDescriptor) jsonObject {
	if wrapperTypes[md.FullName()] {
		return s.singular(md.Fields().ByNumber(1)) // a wrapper is its value
	}
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return jsonObject{"type": "string", "format": "date-time"}
	case "google.protobuf.Duration":
		return jsonObject{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]+)?s$`, "description": "A duration in seconds with an s suffix: 1.5s."}
	case "google.protobuf.FieldMask":
		return jsonObject{"type": "string", "description": "Field paths in lowerCamelCase, separated by commas."}
	case "google.protobuf.Struct":
		return jsonObject{"type": "object"}
	case "google.protobuf.Value":
		return jsonObject{"description": "Any JSON value."}
	case "google.protobuf.ListValue":
		return jsonObject{"type": "array"}
	case "google.protobuf.Any":
		return anySchema()
	case "google.protobuf.Empty":
		return jsonObject{"type": "object"}
	}
	return nil
}

// wrapperTypes are the google.protobuf wrappers, which are their value in
// JSON and in a query string.
var wrapperTypes = map[protoreflect.FullName]bool{
	"google.protobuf.DoubleValue": true, "google.protobuf.FloatValue": true,
	"google.protobuf.Int64Value": true, "google.protobuf.UInt64Value": true,
	"google.protobuf.Int32Value": true, "google.protobuf.UInt32Value": true,
	"google.protobuf.BoolValue": true, "google.protobuf.StringValue": true, "google.protobuf.BytesValue": true,
}

// comments returns the leading comments of d in the schema's source info,
// which descriptor sets built with buf keep, or "".
func comments(d protoreflect.Descriptor) string {
	text := d.ParentFile().SourceLocations().ByDescriptor(d).LeadingComments
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, " ")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// sortedMethods returns the methods of rt by path, so that the documents
// do not depend on map order.
func sortedMethods(rt *routes) []*method {
	return slices.SortedFunc(maps.Values(rt.byPath), func(a, b *method) int { return strings.Compare(a.path, b.path) })
}

// openAPIBuilder collects the paths and the components of one document.
type openAPIBuilder struct {
	schemas *schemaSet
	paths   map[string]jsonObject
	tags    map[string]string // service full name -> its comments
}

// buildOpenAPI writes the OpenAPI document of rt's methods.
func buildOpenAPI(rt *routes) ([]byte, error) {
	b := &openAPIBuilder{schemas: newSchemaSet(), paths: map[string]jsonObject{}, tags: map[string]string{}}
	for _, m := range sortedMethods(rt) {
		if m.streamDesc.ClientStreams {
			continue // WebSocket only: the AsyncAPI document has it
		}
		if err := b.addMethod(m); err != nil {
			return nil, err
		}
	}
	tags := make([]jsonObject, 0, len(b.tags))
	for _, name := range slices.Sorted(maps.Keys(b.tags)) {
		tags = append(tags, describe(jsonObject{"name": name}, b.tags[name]))
	}
	doc := jsonObject{
		"openapi": openAPIVersion,
		"info": jsonObject{
			"title": "gRPC bridge: exposed methods",
			"description": "The unary and server-streaming methods that this bridge exposes, as plain JSON and Server-Sent Events " +
				"(docs/protocol.md). Bodies are the proto3 JSON mapping of the messages. Every method also opens as a WebSocket " +
				"(subprotocol grpc-ws.v1) at its gRPC path: see the AsyncAPI document.",
		},
		"tags":  tags,
		"paths": b.paths,
		"components": jsonObject{
			"schemas":   b.schemas.schemas,
			"responses": errorResponses(),
		},
	}
	return withContentVersion(doc)
}

// withContentVersion marshals doc with info.version set to a hash of the
// rest of it: the version changes exactly when what the document
// describes changes, which a cache or a client generator can compare.
func withContentVersion(doc jsonObject) ([]byte, error) {
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("api document: %w", err)
	}
	sum := sha256.Sum256(body)
	doc["info"].(jsonObject)["version"] = hex.EncodeToString(sum[:6])
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("api document: %w", err)
	}
	return buf.Bytes(), nil
}

// addMethod adds the operations of m: GET (where allowed) and POST at its
// gRPC path, and one per google.api.http binding.
func (b *openAPIBuilder) addMethod(m *method) error {
	service := string(m.desc.Parent().FullName())
	b.tags[service] = comments(m.desc.Parent())
	base := strings.ReplaceAll(m.name, "/", ".")
	if m.safeGET {
		b.put(m.path, http.MethodGet, b.operation(m, base+".get", binding{}, nil))
	}
	b.put(m.path, http.MethodPost, b.operation(m, base+".post", binding{body: "*"}, nil))
	bindings, err := httpBindings(m.desc)
	if err != nil {
		return fmt.Errorf("%s: %w", m.name, err)
	}
	for i, hb := range bindings {
		path, params := b.pathTemplate(hb.pattern, m.desc.Input())
		b.put(path, hb.verb, b.operation(m, fmt.Sprintf("%s.http%d.%s", base, i, strings.ToLower(hb.verb)), hb, params))
	}
	return nil
}

// put adds an operation to the path item of path, under its verb's fixed
// field or, for any other verb, in additionalOperations. The first
// operation for a path and verb wins, as no document can hold two.
func (b *openAPIBuilder) put(path, verb string, op jsonObject) {
	item := b.paths[path]
	if item == nil {
		item = jsonObject{}
		b.paths[path] = item
	}
	switch verb {
	case http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch:
		key := strings.ToLower(verb)
		if _, ok := item[key]; !ok {
			item[key] = op
		}
	default:
		extra, _ := item["additionalOperations"].(jsonObject)
		if extra == nil {
			extra = jsonObject{}
			item["additionalOperations"] = extra
		}
		if _, ok := extra[verb]; !ok {
			extra[verb] = op
		}
	}
}

// operation describes one way to call m: the binding's body, path
// parameters and query string, and its answers.
func (b *openAPIBuilder) operation(m *method, id string, hb binding, pathParams []jsonObject) jsonObject {
	in := m.desc.Input()
	op := jsonObject{
		"operationId":   id,
		"tags":          []string{string(m.desc.Parent().FullName())},
		"summary":       m.name,
		"x-grpc-method": m.name,
	}
	if c := comments(m.desc); c != "" {
		op["description"] = c
	}
	params := slices.Clone(pathParams)
	if hb.body != "*" {
		excluded := make([][]string, 0, len(pathParams)+1)
		for _, p := range pathParams {
			excluded = append(excluded, strings.Split(p["name"].(string), "."))
		}
		if hb.body != "" {
			excluded = append(excluded, strings.Split(hb.body, "."))
		}
		params = append(params, b.queryParams(in, excluded)...)
	}
	if !m.isUnary() {
		desc := "The last event id seen, to resume the stream (EventSource sends it on reconnect); forwarded as metadata last-event-id."
		if m.resume != nil {
			desc += " It also sets the request's " + string(m.resume.Name()) + "."
		}
		params = append(params, jsonObject{
			"name": "Last-Event-ID", "in": "header", "schema": jsonObject{"type": "string", "maxLength": 1024}, "description": desc,
		})
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if hb.body != "" {
		body := b.schemas.message(in)
		if hb.body != "*" {
			body = b.schemas.field(fieldAt(in, strings.Split(hb.body, ".")))
		}
		op["requestBody"] = jsonObject{"required": true, "content": jsonObject{contentTypeJSON: jsonObject{"schema": body}}}
	}
	ok := jsonObject{}
	if m.isUnary() {
		answer := b.schemas.message(m.desc.Output())
		if hb.responseBody != nil {
			answer = b.schemas.field(hb.responseBody[len(hb.responseBody)-1])
		}
		ok[contentTypeJSON] = jsonObject{"schema": answer}
		ok[mediaTypeEventStream] = jsonObject{"itemSchema": b.events(m)}
		op["description"] = joinText(op["description"], "Answered as plain JSON, or as an event stream with one message when Accept names text/event-stream.")
	} else {
		ok[mediaTypeEventStream] = jsonObject{"itemSchema": b.events(m)}
		op["description"] = joinText(op["description"], "Answered as Server-Sent Events: a retry: field, at most one headers event, "+
			"a message event per response, then end or error. Comment lines (: ping) keep an idle stream open.")
	}
	responses := jsonObject{"200": jsonObject{"description": "The call's answer.", "content": ok}}
	for _, code := range errorStatuses {
		if (code == http.StatusRequestEntityTooLarge || code == http.StatusUnsupportedMediaType) && hb.body == "" {
			continue
		}
		responses[fmt.Sprint(code)] = jsonObject{"$ref": "#/components/responses/" + errorResponseName(code)}
	}
	op["responses"] = responses
	return op
}

func joinText(a any, b string) string {
	s, _ := a.(string)
	return strings.TrimSpace(s + "\n\n" + b)
}

// fieldAt resolves a dotted field path that the routes have checked.
func fieldAt(md protoreflect.MessageDescriptor, path []string) protoreflect.FieldDescriptor {
	var fd protoreflect.FieldDescriptor
	for _, name := range path {
		if md == nil {
			return nil
		}
		if fd = md.Fields().ByName(protoreflect.Name(name)); fd == nil {
			return nil
		}
		md = fd.Message()
	}
	return fd
}

// events returns the schema of one item of m's event stream, in OpenAPI
// 3.2's form of an event: its event, data, id and retry fields, with data
// as the JSON text of the message or status.
func (b *openAPIBuilder) events(m *method) jsonObject {
	data := func(schema jsonObject) jsonObject {
		return jsonObject{"type": "string", "contentMediaType": contentTypeJSON, "contentSchema": schema}
	}
	event := func(name, description string, props jsonObject) jsonObject {
		props["event"] = jsonObject{"const": name}
		return jsonObject{"title": name, "description": description, "type": "object", "properties": props, "required": []string{"event", "data"}}
	}
	retry := jsonObject{"type": "integer", "minimum": 0, "description": "Reconnection delay in milliseconds."}
	return jsonObject{"oneOf": []any{
		jsonObject{
			"title": "retry", "description": "The first block: the reconnection delay alone.",
			"type": "object", "properties": jsonObject{"retry": retry}, "required": []string{"retry"}, "not": jsonObject{"required": []string{"event"}},
		},
		event("headers", "The backend's allow-listed response headers, at most once, before the first message.",
			jsonObject{"data": data(ref(schemaMetadata))}),
		event("message", "One response message. "+eventIDRule(m),
			jsonObject{"id": jsonObject{"type": "string"}, "data": data(b.schemas.message(m.desc.Output()))}),
		event("end", "The call ended OK; the stream ends.", jsonObject{"data": data(ref(schemaFinalStatus))}),
		event("error", "The call failed; the stream ends. A transient code (UNAVAILABLE, ABORTED) comes with retry, and EventSource reconnects.",
			jsonObject{"retry": retry, "data": data(ref(schemaFinalStatus))}),
	}}
}

// eventIDRule says what the id of m's message events is.
func eventIDRule(m *method) string {
	if m.cursor != nil {
		return "Its id is the response's " + string(m.cursor.Name()) + " field (the method's cursor)."
	}
	return "Its id is a sequence number from 1 (after a numeric Last-Event-ID n, from n + 1)."
}

// pathTemplate turns a google.api.http path template into an OpenAPI path
// and its parameters: {field.path} and {field.path=pattern} become
// {field.path}, typed as the request field they set.
func (b *openAPIBuilder) pathTemplate(pattern string, in protoreflect.MessageDescriptor) (string, []jsonObject) {
	var (
		out    strings.Builder
		params []jsonObject
	)
	for {
		open := strings.IndexByte(pattern, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(pattern[open:], '}')
		if end < 0 {
			break
		}
		out.WriteString(pattern[:open])
		name, segments, hasSegments := strings.Cut(pattern[open+1:open+end], "=")
		out.WriteString("{" + name + "}")
		schema := jsonObject{"type": "string"}
		desc := ""
		if fd := fieldAt(in, strings.Split(name, ".")); fd != nil {
			schema, desc = b.queryValue(fd), comments(fd)
		}
		if hasSegments {
			desc = joinText(desc, "Matches the path segments "+segments+", slashes included.")
			schema = jsonObject{"type": "string", "pattern": segmentsPattern(segments)}
		}
		params = append(params, describe(jsonObject{"name": name, "in": "path", "required": true, "schema": schema}, desc))
		pattern = pattern[open+end+1:]
	}
	out.WriteString(pattern)
	return out.String(), params
}

// segmentsPattern is the regular expression of a path template's
// segments (google/api/http.proto): * is one segment, ** any number of
// them, anything else literal.
func segmentsPattern(segments string) string {
	parts := strings.Split(segments, "/")
	for i, p := range parts {
		switch p {
		case "*":
			parts[i] = "[^/]+"
		case "**":
			parts[i] = ".*"
		default:
			parts[i] = regexp.QuoteMeta(p)
		}
	}
	return "^" + strings.Join(parts, "/") + "$"
}

// queryParams returns the query parameters of a request of type in: every
// field that the path or the body does not set (excluded), nested fields
// as dotted keys, with grpc-gateway's rules as the bridge applies them
// (query.go): repeated fields repeat the key, maps are key[k]=v, and
// fields inside repeated messages or maps cannot be set.
func (b *openAPIBuilder) queryParams(in protoreflect.MessageDescriptor, excluded [][]string) []jsonObject {
	var out []jsonObject
	b.addQueryParams(&out, in, nil, excluded, map[protoreflect.FullName]int{})
	return out
}

// maxRecursion is how many times a message may recur on one branch of
// query keys: a recursive message is followed once (child.name, not
// child.child.name), as the keys would never end otherwise.
const maxRecursion = 2

// addQueryParams adds the parameters of md's fields under prefix; open
// counts the messages on the branch so far.
func (b *openAPIBuilder) addQueryParams(out *[]jsonObject, md protoreflect.MessageDescriptor, prefix []string, excluded [][]string, open map[protoreflect.FullName]int) {
	open[md.FullName()]++
	defer func() { open[md.FullName()]-- }()
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		path := append(slices.Clip(prefix), string(fd.Name()))
		if slices.ContainsFunc(excluded, func(e []string) bool { return hasPathPrefix(path, e) }) {
			continue // set by the path or the body
		}
		name := strings.Join(path, ".")
		param := jsonObject{"name": name, "in": "query"}
		switch {
		case fd.IsMap():
			if !queryable(fd.MapValue()) {
				continue
			}
			param["style"], param["explode"] = "deepObject", true
			param["schema"] = jsonObject{"type": "object", "additionalProperties": b.queryValue(fd.MapValue())}
		case fd.IsList():
			if !queryable(fd) {
				continue
			}
			param["style"], param["explode"] = "form", true
			param["schema"] = jsonObject{"type": "array", "items": b.queryValue(fd)}
		case fd.Message() != nil && b.schemas.wellKnown(fd.Message()) == nil:
			if open[fd.Message().FullName()] < maxRecursion {
				b.addQueryParams(out, fd.Message(), path, excluded, open)
			}
			continue
		case fd.Message() != nil && jsonInQuery(fd.Message()):
			param["content"] = jsonObject{contentTypeJSON: jsonObject{"schema": b.queryValue(fd)}}
		default:
			if !queryable(fd) {
				continue
			}
			param["schema"] = b.queryValue(fd)
		}
		*out = append(*out, describe(param, comments(fd)))
	}
}

// hasPathPrefix reports whether path is prefix or a field inside it.
func hasPathPrefix(path, prefix []string) bool {
	return len(path) >= len(prefix) && slices.Equal(path[:len(prefix)], prefix)
}

// queryable reports whether one value of fd can come from a query string
// or a path segment: a scalar, an enum, or a well-known type that
// parseWellKnown parses from text (google.protobuf.Empty aside, which
// only says that a field is there).
func queryable(fd protoreflect.FieldDescriptor) bool {
	if fd.Message() == nil {
		return true
	}
	switch name := fd.Message().FullName(); name {
	case "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask":
		return true
	default:
		return wrapperTypes[name] || jsonInQuery(fd.Message())
	}
}

// jsonInQuery reports whether a query value of type md is JSON text.
func jsonInQuery(md protoreflect.MessageDescriptor) bool {
	return md.FullName() == "google.protobuf.Struct" || md.FullName() == "google.protobuf.Value"
}

// queryValue is the schema of one value of fd in a query string or path:
// as in JSON, but a Duration is Go's form (1.5s, 300ms) there.
func (b *openAPIBuilder) queryValue(fd protoreflect.FieldDescriptor) jsonObject {
	if fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Duration" {
		return jsonObject{"type": "string", "description": "A Go duration: 1.5s, 300ms, 1h2m."}
	}
	return b.schemas.singular(fd)
}

// errorStatuses are the HTTP statuses of error answers: those that
// grpc-gateway maps the gRPC codes to, and the bridge's own for bodies.
var errorStatuses = func() []int {
	set := map[int]bool{http.StatusRequestEntityTooLarge: true, http.StatusUnsupportedMediaType: true}
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		set[httpStatusFromCode(c)] = true
	}
	return slices.Sorted(maps.Keys(set))
}()

func errorResponseName(httpStatus int) string { return fmt.Sprintf("Error%d", httpStatus) }

// errorResponses returns components.responses: one per error status,
// naming the gRPC codes it stands for.
func errorResponses() jsonObject {
	byStatus := map[int][]string{
		http.StatusRequestEntityTooLarge: {"RESOURCE_EXHAUSTED (a body over the read limit)"},
		http.StatusUnsupportedMediaType:  {"INVALID_ARGUMENT (a body that is not application/json)"},
	}
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		s := httpStatusFromCode(c)
		byStatus[s] = append(byStatus[s], codeName(c))
	}
	out := jsonObject{}
	for _, s := range errorStatuses {
		out[errorResponseName(s)] = jsonObject{
			"description": fmt.Sprintf("%s: gRPC %s, as a google.rpc.Status.", http.StatusText(s), strings.Join(byStatus[s], ", ")),
			"content":     jsonObject{contentTypeJSON: jsonObject{"schema": ref(schemaStatus)}},
		}
	}
	// 499 has no text in net/http: it is grpc-gateway's (nginx's) "client closed request".
	if r, ok := out[errorResponseName(499)].(jsonObject); ok {
		r["description"] = "Client closed request: gRPC CANCELED, as a google.rpc.Status."
	}
	return out
}

// codeName is a gRPC code as the gRPC spec writes it: INVALID_ARGUMENT.
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// OpenAPI returns the OpenAPI 3.2 document (JSON) of the exposed unary and
// server-streaming methods, from the current schema: each method's gRPC
// path (GET where it may be called from a link, POST with a JSON body) and
// its google.api.http bindings, unary answers as application/json, streams
// as text/event-stream, errors as google.rpc.Status. See docs/api-docs.md.
func (h *Handler) OpenAPI() ([]byte, error) {
	return buildOpenAPI(h.routes.Load())
}

// OpenAPIHandler returns an [http.Handler] that serves [Handler.OpenAPI]
// to GET and HEAD, rebuilt when [Handler.UpdateFiles] changes the schema,
// with an ETag. The document lists exactly the exposed methods, as
// server reflection does; mount it where the operator chooses.
func (h *Handler) OpenAPIHandler() http.Handler {
	return &apiDocHandler{h: h, build: buildOpenAPI}
}

// apiDocHandler serves a document built from the routes, built again only
// when the routes change.
type apiDocHandler struct {
	h     *Handler
	build func(*routes) ([]byte, error)
	last  atomic.Pointer[apiDoc]
}

type apiDoc struct {
	rt   *routes
	body []byte
	etag string
}

func (d *apiDocHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set(headerAllow, "GET, HEAD")
		d.h.writeError(w, http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented, "HTTP method %s is not allowed; use GET", r.Method))
		return
	}
	rt := d.h.routes.Load()
	doc := d.last.Load()
	if doc == nil || doc.rt != rt {
		body, err := d.build(rt)
		if err != nil {
			d.h.log.LogAttrs(r.Context(), slog.LevelError, "api document", slog.String("error", err.Error()))
			d.h.writeError(w, http.StatusInternalServerError, status.New(codes.Internal, "the API document could not be built"))
			return
		}
		sum := sha256.Sum256(body)
		doc = &apiDoc{rt: rt, body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		d.last.Store(doc) // two requests may both build; either result is right
	}
	hdr := w.Header()
	hdr.Set(headerContentType, mediaTypeJSONDoc)
	hdr.Set(headerCacheControl, "no-cache") // revalidate: the schema can change
	hdr.Set(headerContentTypeOptions, contentTypeOptionsNoSniff)
	hdr.Set("ETag", doc.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(doc.body))
}
