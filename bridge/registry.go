package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	bridgev1 "github.com/grpcbridge/grpcbridge/gen/bridge/v1"
	"github.com/grpcbridge/grpcbridge/internal/wirejson"
)

// method is one exposed gRPC method with everything a request needs,
// resolved once when the routes are built and read-only after.
type method struct {
	name       string // "pkg.Service/Method": logs and metrics labels
	path       string // "/pkg.Service/Method": the URL and the gRPC :path
	desc       protoreflect.MethodDescriptor
	input      protoreflect.MessageType // request messages: see messageType
	output     protoreflect.MessageType // response messages
	streamDesc grpc.StreamDesc
	conn       grpc.ClientConnInterface
	cursor     protoreflect.FieldDescriptor // response field for SSE ids, or nil
	resume     protoreflect.FieldDescriptor // request field set from Last-Event-ID, or nil
	shared     *sharedHub                   // the method's shared calls, or nil when it is not shared
	compress   CompressionOptions           // which transports compress responses (compress.go)
	json       *wirejson.Encoder            // SSE responses' JSON from their wire bytes, or nil for protojson only
	inputJSON  *wirejson.Encoder            // checkRequest's fast path for request frames, or nil
	log        *slog.Logger                 // the handler's, for failures the browser must not see in full
	// safeGET: GET without Upgrade may call the method. Every method but a
	// unary one may be opened with GET; a unary method only when it is
	// safe to call from a link (idempotency_level = NO_SIDE_EFFECTS, or a
	// google.api.http get rule), so that a cross-site <img> cannot run a
	// mutation.
	safeGET bool
}

// binding is one google.api.http rule of a method.
type binding struct {
	verb    string
	pattern string
	body    string // "", "*" or a request field path
	// responseBody is the path to the response field whose value is the
	// body of a unary JSON answer (response_body), or nil for the whole
	// response.
	responseBody []protoreflect.FieldDescriptor
}

// routes maps URLs to exposed methods. It is built once per schema and
// read-only after, so requests read it without locks; a new schema gets new
// routes, swapped in whole.
type routes struct {
	byPath map[string]*method
	// annotated serves the google.api.http paths with grpc-gateway's router,
	// so that path templates match exactly as grpc-gateway matches them.
	annotated *runtime.ServeMux
}

// buildRoutes resolves the exposed methods of the schema files.
func buildRoutes(c *config, files *protoregistry.Files, h *Handler) (*routes, error) {
	for _, p := range c.expose {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("expose pattern %q: %w", p, err)
		}
	}
	for _, b := range c.serviceBackends {
		if _, err := path.Match(b.pattern, ""); err != nil {
			return nil, fmt.Errorf("backend pattern %q: %w", b.pattern, err)
		}
	}
	rt := &routes{
		byPath: make(map[string]*method),
		annotated: runtime.NewServeMux(
			runtime.WithRoutingErrorHandler(h.routingError),
			runtime.WithDisableHTTPMethodOverride(),
		),
	}
	used := make(map[string]bool)
	var (
		errs      []error
		annotated []annotatedRoute
	)
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		services := fd.Services()
		for i := range services.Len() {
			sd := services.Get(i)
			methods := sd.Methods()
			for j := range methods.Len() {
				md := methods.Get(j)
				pattern, ok := exposedBy(c.expose, md)
				if !ok {
					continue
				}
				used[pattern] = true
				m, bindings, err := newMethod(c, md)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				rt.byPath[m.path] = m
				for _, b := range bindings {
					annotated = append(annotated, annotatedRoute{m: m, b: b})
				}
			}
		}
		return true
	})
	// grpc-gateway's router tries the routes of a verb from the last
	// registered to the first, and a variable matches a custom verb too
	// ({symbol} takes "ACME:watch"): routes with a custom verb go last, so
	// that they are tried before the verb-less routes they would lose to.
	slices.SortStableFunc(annotated, func(a, b annotatedRoute) int {
		return cmpBool(hasCustomVerb(a.b.pattern), hasCustomVerb(b.b.pattern))
	})
	var preflights annotatedPreflights
	for _, a := range annotated {
		if err := rt.annotated.HandlePath(a.b.verb, a.b.pattern, h.annotatedHandler(a.m, a.b)); err != nil {
			errs = append(errs, fmt.Errorf("%s: google.api.http %s %s: %w", a.m.name, a.b.verb, a.b.pattern, err))
			continue
		}
		preflights.add(a.b.pattern, a.m.name, a.b.verb)
	}
	preflights.register(h, rt.annotated)
	for _, p := range c.expose {
		if !used[p] {
			errs = append(errs, fmt.Errorf("expose pattern %q matches no method of the schema", p))
		}
	}
	for name := range c.sseOverrides {
		if rt.byPath["/"+name] == nil {
			errs = append(errs, fmt.Errorf("SSE options for %q: no such exposed method", name))
		}
	}
	for name := range c.compressOverrides {
		if rt.byPath["/"+name] == nil {
			errs = append(errs, fmt.Errorf("compression options for %q: no such exposed method", name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return rt, nil
}

// annotatedRoute is one google.api.http binding of an exposed method.
type annotatedRoute struct {
	m *method
	b binding
}

// hasCustomVerb reports whether a path template ends in a custom verb
// (":watch" in "/v1/{name=tickers/*}:watch"): a colon after the last '/'
// and outside braces.
func hasCustomVerb(pattern string) bool {
	tail := pattern[strings.LastIndexByte(pattern, '/')+1:]
	if i := strings.LastIndexByte(tail, '}'); i >= 0 {
		tail = tail[i+1:]
	}
	return strings.Contains(tail, ":")
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// exposedBy returns the first expose pattern that matches md.
func exposedBy(patterns []string, md protoreflect.MethodDescriptor) (string, bool) {
	for _, p := range patterns {
		if svc, method, ok := strings.Cut(p, "/"); ok {
			if matchService(svc, md.Parent().(protoreflect.ServiceDescriptor)) {
				if ok, _ := path.Match(method, string(md.Name())); ok {
					return p, true
				}
			}
			continue
		}
		if matchService(p, md.Parent().(protoreflect.ServiceDescriptor)) {
			return p, true
		}
	}
	return "", false
}

// matchService reports whether a service pattern matches sd. "pkg.*" means
// the services of package pkg and not those of its sub-packages (path.Match's
// "*" would also match the dots of pkg.internal.Debug): a pattern exposes
// only what it plainly names. Other patterns use [path.Match] on the
// service's full name.
func matchService(pattern string, sd protoreflect.ServiceDescriptor) bool {
	if pkg, ok := strings.CutSuffix(pattern, ".*"); ok && !strings.ContainsAny(pkg, `*?[\`) {
		return string(sd.ParentFile().Package()) == pkg
	}
	ok, _ := path.Match(pattern, string(sd.FullName()))
	return ok
}

func newMethod(c *config, md protoreflect.MethodDescriptor) (*method, []binding, error) {
	service := string(md.Parent().FullName())
	m := &method{
		name: service + "/" + string(md.Name()),
		path: "/" + service + "/" + string(md.Name()),
		desc: md,
		streamDesc: grpc.StreamDesc{
			StreamName:    string(md.Name()),
			ServerStreams: md.IsStreamingServer(),
			ClientStreams: md.IsStreamingClient(),
		},
		conn:   c.defaultBackend,
		input:  messageType(md.Input()),
		output: messageType(md.Output()),
		log:    c.logger,
	}
	if enc := wirejson.New(md.Output()); enc.Supported() {
		m.json = enc
	}
	if enc := wirejson.New(md.Input()); enc.Supported() {
		m.inputJSON = enc
	}
	for _, b := range c.serviceBackends {
		if matchService(b.pattern, md.Parent().(protoreflect.ServiceDescriptor)) {
			m.conn = b.conn
			break
		}
	}
	if m.conn == nil {
		return nil, nil, fmt.Errorf("%s: no backend: use WithBackend or a WithServiceBackend pattern that matches %s", m.name, service)
	}
	opts := methodOptions(md)
	sse := SSEOptions{
		CursorField: opts.GetSse().GetCursorField(),
		ResumeField: opts.GetSse().GetResumeField(),
		Shared:      opts.GetSse().GetShared(),
	}
	if o, ok := c.sseOverrides[m.name]; ok {
		sse = o
	}
	m.compress = CompressionOptions{
		SSE:       opts.GetCompression().GetSse(),
		WebSocket: opts.GetCompression().GetWebsocket(),
		JSON:      opts.GetCompression().GetJson(),
	}
	if o, ok := c.compressOverrides[m.name]; ok {
		m.compress = o
	}
	var err error
	if m.cursor, err = scalarField(md.Output(), sse.CursorField); err != nil {
		return nil, nil, fmt.Errorf("%s: cursor field: %w", m.name, err)
	}
	if m.resume, err = scalarField(md.Input(), sse.ResumeField); err != nil {
		return nil, nil, fmt.Errorf("%s: resume field: %w", m.name, err)
	}
	if sse.Shared {
		// A shared call has one request and many readers: only a method
		// that takes one request and streams its responses fits.
		if !md.IsStreamingServer() || md.IsStreamingClient() {
			return nil, nil, fmt.Errorf("%s: shared: only server-streaming methods can be shared, and this one is %s", m.name, methodKind(md))
		}
		m.shared = newSharedHub(c)
	}
	bindings, err := httpBindings(md)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", m.name, err)
	}
	m.safeGET = !m.isUnary() || hasNoSideEffects(md) ||
		slices.ContainsFunc(bindings, func(b binding) bool { return b.verb == http.MethodGet })
	return m, bindings, nil
}

// messageType returns the type that builds messages of d: the generated
// Go type when d is the very descriptor compiled into the program (the
// schema is the compiled-in registry), whose generated fast paths decode
// several times faster; otherwise a dynamic type, so that any schema works
// without code.
func messageType(d protoreflect.MessageDescriptor) protoreflect.MessageType {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName()); err == nil && mt.Descriptor() == d {
		return mt
	}
	return dynamicpb.NewMessageType(d)
}

// methodOptions returns the (bridge.v1.method) options of md, or nil.
func methodOptions(md protoreflect.MethodDescriptor) *bridgev1.MethodOptions {
	opts, _ := proto.GetExtension(parsedOptions(md), bridgev1.E_Method).(*bridgev1.MethodOptions)
	return opts
}

// parsedOptions returns md's options with every extension known to the
// program parsed. Descriptors loaded from a file may hold the bridge's and
// google.api's options as unknown fields, depending on how the file was
// read; a round trip through the wire format resolves them either way.
func parsedOptions(md protoreflect.MethodDescriptor) *descriptorpb.MethodOptions {
	raw, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || raw == nil {
		return nil
	}
	b, err := proto.Marshal(raw)
	if err != nil {
		return raw
	}
	parsed := &descriptorpb.MethodOptions{}
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(b, parsed); err != nil {
		return raw
	}
	return parsed
}

// scalarField resolves a top-level string or integer field by name; an
// empty name is no field.
func scalarField(msg protoreflect.MessageDescriptor, name string) (protoreflect.FieldDescriptor, error) {
	if name == "" {
		return nil, nil
	}
	fd := msg.Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		return nil, fmt.Errorf("%s has no field %q", msg.FullName(), name)
	}
	if fd.IsList() || fd.IsMap() {
		return nil, fmt.Errorf("%s.%s is repeated; want a string or integer field", msg.FullName(), name)
	}
	switch fd.Kind() {
	case protoreflect.StringKind,
		protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return fd, nil
	default:
		return nil, fmt.Errorf("%s.%s is a %s; want a string or integer field", msg.FullName(), name, fd.Kind())
	}
}

// httpBindings returns the google.api.http rules of md, the additional
// bindings included.
func httpBindings(md protoreflect.MethodDescriptor) ([]binding, error) {
	rule, _ := proto.GetExtension(parsedOptions(md), annotations.E_Http).(*annotations.HttpRule)
	if rule == nil {
		return nil, nil
	}
	rules := append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...)
	bindings := make([]binding, 0, len(rules))
	for _, r := range rules {
		var b binding
		switch p := r.GetPattern().(type) {
		case *annotations.HttpRule_Get:
			b = binding{verb: http.MethodGet, pattern: p.Get}
		case *annotations.HttpRule_Post:
			b = binding{verb: http.MethodPost, pattern: p.Post}
		case *annotations.HttpRule_Put:
			b = binding{verb: http.MethodPut, pattern: p.Put}
		case *annotations.HttpRule_Patch:
			b = binding{verb: http.MethodPatch, pattern: p.Patch}
		case *annotations.HttpRule_Delete:
			b = binding{verb: http.MethodDelete, pattern: p.Delete}
		case *annotations.HttpRule_Custom:
			b = binding{verb: p.Custom.GetKind(), pattern: p.Custom.GetPath()}
		default:
			return nil, errors.New("google.api.http rule without a pattern")
		}
		b.body = r.GetBody()
		if b.body != "" && b.body != "*" {
			if err := checkBodyField(md.Input(), b.body); err != nil {
				return nil, fmt.Errorf("google.api.http body %q: %w", b.body, err)
			}
		}
		if rb := r.GetResponseBody(); rb != "" {
			var err error
			if b.responseBody, err = responseBodyPath(md.Output(), rb); err != nil {
				return nil, fmt.Errorf("google.api.http response_body %q: %w", rb, err)
			}
		}
		bindings = append(bindings, b)
	}
	return bindings, nil
}

// checkBodyField checks that a dotted field path names a singular message
// field of msg through singular message fields: the bridge decodes a body
// field with the proto3 JSON mapping, which needs a message.
func checkBodyField(msg protoreflect.MessageDescriptor, fieldPath string) error {
	for _, p := range strings.Split(fieldPath, ".") {
		fd := msg.Fields().ByName(protoreflect.Name(p))
		if fd == nil {
			return fmt.Errorf("%s has no field %q", msg.FullName(), p)
		}
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return fmt.Errorf("%s.%s is not a singular message field", msg.FullName(), p)
		}
		msg = fd.Message()
	}
	return nil
}

// queryFilter lists the field paths that the query string must not set
// because the path or the body already does, in grpc-gateway's form.
func queryFilter(pathParams map[string]string, body string) *utilities.DoubleArray {
	seqs := make([][]string, 0, len(pathParams)+1)
	for p := range pathParams {
		seqs = append(seqs, strings.Split(p, "."))
	}
	if body != "" && body != "*" {
		seqs = append(seqs, strings.Split(body, "."))
	}
	slices.SortFunc(seqs, func(a, b []string) int { return slices.Compare(a, b) })
	return utilities.NewDoubleArray(seqs)
}
