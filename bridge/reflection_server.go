package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The bridge's own server reflection, grpc.reflection.v1 and v1alpha, on
// the native gRPC server (design, "Trust boundary": reflection shows what is
// exposed). grpc-go's implementation answers, from a schema the bridge
// builds: the listed services are the exposed ones plus those the bridge
// serves itself on native gRPC (grpc.health.v1.Health and the two
// reflection services, as any grpc-go server lists them), and the file
// descriptors are filtered copies of the schema's files, in which services
// are cut to the exposed ones and their methods to the exposed methods,
// source comments follow, and imports that only the cut methods needed are
// dropped. So a lookup of an unexposed service or method, or of a file that
// only they use, answers NOT_FOUND, as for a name the schema lacks.
//
// Being registered on the server, these services win over the pass-through:
// a backend's reflection exposed with WithExpose is never reached over
// native gRPC, and its answers, which list what the backend serves, never
// pass. Like the health service, reflection is served to every caller that
// serveGRPC lets reach the server (browsers are refused there), whatever
// WithNativeGRPCNetworks says: it describes only what the browser
// transports already serve.
//
// The filtered schema is built once per routes, on the first lookup after
// the routes changed, and read-only after.

// Field numbers in google/protobuf/descriptor.proto, for the paths of
// source code locations.
const (
	fileDependencyField = 3 // FileDescriptorProto.dependency
	fileServiceField    = 6 // FileDescriptorProto.service
	serviceMethodField  = 2 // ServiceDescriptorProto.method
)

// errReflectionEnded is what the reflection implementation's Send gets
// once the call is over.
var errReflectionEnded = errors.New("bridge: reflection call ended")

// reflectionServer is the schema behind the bridge's reflection services:
// their ServiceInfoProvider, DescriptorResolver and ExtensionResolver. It
// is safe for concurrent use.
type reflectionServer struct {
	h      *Handler
	server *grpc.Server // the native server, for the services it serves itself

	buildMu sync.Mutex // one build per routes
	current atomic.Pointer[reflectionSchema]
}

var (
	_ reflection.ServiceInfoProvider = (*reflectionServer)(nil)
	_ protodesc.Resolver             = (*reflectionServer)(nil)
	_ reflection.ExtensionResolver   = (*reflectionServer)(nil)
)

// registerReflection registers grpc.reflection.v1 and v1alpha on the native
// server s of h. Their calls end with UNAVAILABLE when drained is done, as
// health watches do, so that an idle reflection client does not hold the
// HTTP server's shutdown.
func registerReflection(s *grpc.Server, h *Handler, drained context.Context) {
	r := &reflectionServer{h: h, server: s}
	opts := reflection.ServerOptions{Services: r, DescriptorResolver: r, ExtensionResolver: r}
	reflectionv1.RegisterServerReflectionServer(s, &drainingReflection[reflectionv1.ServerReflectionRequest, reflectionv1.ServerReflectionResponse]{
		inner: reflection.NewServerV1(opts), drained: drained,
		h: h, method: reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName[1:],
	})
	reflectionv1alpha.RegisterServerReflectionServer(s, &drainingReflection[reflectionv1alpha.ServerReflectionRequest, reflectionv1alpha.ServerReflectionResponse]{
		inner: reflection.NewServer(opts), drained: drained,
		h: h, method: reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName[1:],
	})
}

// schema returns the filtered schema of the current routes.
func (r *reflectionServer) schema() *reflectionSchema {
	rt := r.h.routes.Load()
	if s := r.current.Load(); s != nil && s.rt == rt {
		return s
	}
	r.buildMu.Lock()
	defer r.buildMu.Unlock()
	if s := r.current.Load(); s != nil && s.rt == rt {
		return s
	}
	s := buildReflectionSchema(rt, r.server.GetServiceInfo(), r.h.log)
	r.current.Store(s)
	return s
}

// GetServiceInfo lists the services that reflection names. Only the keys
// are read.
func (r *reflectionServer) GetServiceInfo() map[string]grpc.ServiceInfo {
	return r.schema().services
}

// FindFileByPath returns the filtered file at path.
func (r *reflectionServer) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	return r.schema().files.FindFileByPath(path)
}

// FindDescriptorByName returns the descriptor of name in the filtered files.
func (r *reflectionServer) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	return r.schema().files.FindDescriptorByName(name)
}

// FindExtensionByName returns an extension declared in the filtered files.
func (r *reflectionServer) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return r.schema().extensions.FindExtensionByName(field)
}

// FindExtensionByNumber returns an extension declared in the filtered files.
func (r *reflectionServer) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return r.schema().extensions.FindExtensionByNumber(message, field)
}

// RangeExtensionsByMessage calls f for the extensions of message declared
// in the filtered files.
func (r *reflectionServer) RangeExtensionsByMessage(message protoreflect.FullName, f func(protoreflect.ExtensionType) bool) {
	r.schema().extensions.RangeExtensionsByMessage(message, f)
}

// reflectionSchema is what reflection describes for one routes: built by
// [buildReflectionSchema], read-only after.
type reflectionSchema struct {
	rt         *routes
	services   map[string]grpc.ServiceInfo
	files      *protoregistry.Files // the filtered files
	extensions *protoregistry.Types // the extensions they declare
}

// buildReflectionSchema builds the filtered schema of rt. own is what the
// native server serves itself; its services are described whole, from the
// program's compiled-in files, which take the place of a schema file at
// the same path. A file that cannot be built is left out and logged (with
// the files that import it): its lookups answer NOT_FOUND.
func buildReflectionSchema(rt *routes, own map[string]grpc.ServiceInfo, log *slog.Logger) *reflectionSchema {
	b := &reflectionBuilder{
		served:   make(map[protoreflect.FullName]map[protoreflect.Name]bool),
		own:      make(map[string]protoreflect.FileDescriptor),
		built:    make(map[string]error),
		files:    new(protoregistry.Files),
		services: make(map[string]grpc.ServiceInfo),
	}
	var roots []protoreflect.FileDescriptor
	for _, m := range rt.byPath {
		sd := m.desc.Parent().(protoreflect.ServiceDescriptor)
		if b.served[sd.FullName()] == nil {
			b.served[sd.FullName()] = make(map[protoreflect.Name]bool)
			roots = append(roots, sd.ParentFile())
		}
		b.served[sd.FullName()][m.desc.Name()] = true
	}
	for name := range own {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if err != nil || !ok {
			// Unreachable: the bridge registers generated services only.
			log.LogAttrs(context.Background(), slog.LevelWarn, "reflection: own service without a compiled-in descriptor", slog.String("service", name))
			continue
		}
		all := make(map[protoreflect.Name]bool)
		for i := range sd.Methods().Len() {
			all[sd.Methods().Get(i).Name()] = true
		}
		b.served[sd.FullName()] = all // served by the bridge, whatever the routes say
		b.addOwn(sd.ParentFile())
		roots = append(roots, sd.ParentFile())
	}
	for name := range b.served {
		b.services[string(name)] = grpc.ServiceInfo{}
	}
	// In path order, so that which file loses a conflict does not depend
	// on map order.
	slices.SortFunc(roots, func(a, c protoreflect.FileDescriptor) int { return cmp.Compare(a.Path(), c.Path()) })
	for _, fd := range roots {
		_ = b.build(fd)
	}
	for path, err := range b.built {
		if err != nil {
			log.LogAttrs(context.Background(), slog.LevelWarn, "reflection: file left out", slog.String("file", path), slog.String("error", err.Error()))
		}
	}
	return &reflectionSchema{rt: rt, services: b.services, files: b.files, extensions: b.extensions()}
}

// reflectionBuilder builds one [reflectionSchema]. Used by one goroutine.
type reflectionBuilder struct {
	served   map[protoreflect.FullName]map[protoreflect.Name]bool // service: its served methods
	own      map[string]protoreflect.FileDescriptor               // compiled-in files of the bridge's own services
	built    map[string]error                                     // path: nil once registered in files
	files    *protoregistry.Files
	services map[string]grpc.ServiceInfo
}

// addOwn adds fd and its imports to the bridge's own files.
func (b *reflectionBuilder) addOwn(fd protoreflect.FileDescriptor) {
	if _, ok := b.own[fd.Path()]; ok || fd.IsPlaceholder() {
		return
	}
	b.own[fd.Path()] = fd
	for i := range fd.Imports().Len() {
		b.addOwn(fd.Imports().Get(i).FileDescriptor)
	}
}

// errImportCycle marks a file whose build is under way; meeting it again
// is an import cycle, which a valid schema cannot have.
var errImportCycle = errors.New("import cycle")

// build registers the filtered copy of fd, and of the imports it keeps,
// first, in b.files.
func (b *reflectionBuilder) build(fd protoreflect.FileDescriptor) error {
	if own, ok := b.own[fd.Path()]; ok {
		fd = own
	}
	if err, ok := b.built[fd.Path()]; ok {
		return err
	}
	if fd.IsPlaceholder() {
		return fmt.Errorf("%s: not in the schema", fd.Path())
	}
	b.built[fd.Path()] = errImportCycle
	err := b.buildFile(fd)
	b.built[fd.Path()] = err
	return err
}

func (b *reflectionBuilder) buildFile(fd protoreflect.FileDescriptor) error {
	fdp := protodesc.ToFileDescriptorProto(fd)

	// Services and methods: only the served ones, with their index in the
	// new lists (-1: cut), for the source locations.
	svcIdx := make([]int, len(fdp.Service))
	methodIdx := make([][]int, len(fdp.Service))
	var services []*descriptorpb.ServiceDescriptorProto
	for i, sp := range fdp.Service {
		svcIdx[i] = -1
		methods, ok := b.served[fd.Services().Get(i).FullName()]
		if !ok {
			continue
		}
		methodIdx[i] = make([]int, len(sp.Method))
		var kept []*descriptorpb.MethodDescriptorProto
		for j, mp := range sp.Method {
			methodIdx[i][j] = -1
			if methods[protoreflect.Name(mp.GetName())] {
				methodIdx[i][j] = len(kept)
				kept = append(kept, mp)
			}
		}
		sp.Method = kept
		svcIdx[i] = len(services)
		services = append(services, sp)
	}
	fdp.Service = services

	// Imports: those that what is left uses, public and weak ones (part of
	// the file's own interface) and those that re-export a used file.
	need := b.usedFiles(fd)
	depIdx := make([]int, fd.Imports().Len())
	fdp.Dependency, fdp.PublicDependency, fdp.WeakDependency = nil, nil, nil
	for i := range fd.Imports().Len() {
		imp := fd.Imports().Get(i)
		depIdx[i] = -1
		if !imp.IsPublic && !imp.IsWeak && !need[imp.Path()] && !reexports(imp.FileDescriptor, need) {
			continue
		}
		if err := b.build(imp.FileDescriptor); err != nil {
			return fmt.Errorf("import %s: %w", imp.Path(), err)
		}
		n := int32(len(fdp.Dependency))
		depIdx[i] = int(n)
		if imp.IsPublic {
			fdp.PublicDependency = append(fdp.PublicDependency, n)
		}
		if imp.IsWeak {
			fdp.WeakDependency = append(fdp.WeakDependency, n)
		}
		fdp.Dependency = append(fdp.Dependency, imp.Path())
	}
	if sci := fdp.GetSourceCodeInfo(); sci != nil {
		sci.Location = remapLocations(sci.Location, depIdx, svcIdx, methodIdx)
	}

	f, err := protodesc.NewFile(fdp, b.files)
	if err != nil {
		return err
	}
	return b.files.RegisterFile(f)
}

// remapLocations renumbers the paths of source locations after the cut of
// imports, services and methods, and drops the locations of what was cut,
// so that no comment of an unexposed service is served, nor attached to
// another.
func remapLocations(locs []*descriptorpb.SourceCodeInfo_Location, deps, svcs []int, methods [][]int) []*descriptorpb.SourceCodeInfo_Location {
	kept := locs[:0]
	for _, loc := range locs {
		p := loc.GetPath()
		if len(p) >= 2 {
			i := int(p[1])
			switch p[0] {
			case fileDependencyField:
				if i >= len(deps) || deps[i] < 0 {
					continue
				}
				p[1] = int32(deps[i])
			case fileServiceField:
				if i >= len(svcs) || svcs[i] < 0 {
					continue
				}
				if len(p) >= 4 && p[2] == serviceMethodField {
					j := int(p[3])
					if j >= len(methods[i]) || methods[i][j] < 0 {
						continue
					}
					p[3] = int32(methods[i][j])
				}
				p[1] = int32(svcs[i])
			}
		}
		kept = append(kept, loc)
	}
	return kept
}

// usedFiles returns the paths of the files whose declarations fd's
// messages, enums, extensions, served methods and options use.
func (b *reflectionBuilder) usedFiles(fd protoreflect.FileDescriptor) map[string]bool {
	need := make(map[string]bool)
	use := func(d protoreflect.Descriptor) {
		if d != nil {
			need[d.ParentFile().Path()] = true
		}
	}
	field := func(f protoreflect.FieldDescriptor) {
		if f.Message() != nil {
			use(f.Message())
		}
		if f.Enum() != nil {
			use(f.Enum())
		}
		if f.IsExtension() {
			use(f.ContainingMessage())
		}
		optionFiles(f.Options(), need)
	}
	enums := func(es protoreflect.EnumDescriptors) {
		for i := range es.Len() {
			e := es.Get(i)
			optionFiles(e.Options(), need)
			for j := range e.Values().Len() {
				optionFiles(e.Values().Get(j).Options(), need)
			}
		}
	}
	extensions := func(xs protoreflect.ExtensionDescriptors) {
		for i := range xs.Len() {
			field(xs.Get(i))
		}
	}
	var messages func(protoreflect.MessageDescriptors)
	messages = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			m := ms.Get(i)
			optionFiles(m.Options(), need)
			for j := range m.Fields().Len() {
				field(m.Fields().Get(j))
			}
			for j := range m.Oneofs().Len() {
				optionFiles(m.Oneofs().Get(j).Options(), need)
			}
			enums(m.Enums())
			extensions(m.Extensions())
			messages(m.Messages())
		}
	}
	optionFiles(fd.Options(), need)
	messages(fd.Messages())
	enums(fd.Enums())
	extensions(fd.Extensions())
	for i := range fd.Services().Len() {
		sd := fd.Services().Get(i)
		methods, ok := b.served[sd.FullName()]
		if !ok {
			continue
		}
		optionFiles(sd.Options(), need)
		for j := range sd.Methods().Len() {
			md := sd.Methods().Get(j)
			if methods[md.Name()] {
				use(md.Input())
				use(md.Output())
				optionFiles(md.Options(), need)
			}
		}
	}
	return need
}

// optionFiles adds to need the files that declare the extensions set in an
// options message, nested messages (such as features) included. Options
// read without their extension's type hold it as unknown fields, which
// need no file.
func optionFiles(opts proto.Message, need map[string]bool) {
	if opts == nil {
		return
	}
	var walk func(protoreflect.Message)
	walk = func(m protoreflect.Message) {
		m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if f.IsExtension() {
				need[f.ParentFile().Path()] = true
			}
			switch {
			case f.IsMap():
				if f.MapValue().Message() != nil {
					v.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
						walk(v.Message())
						return true
					})
				}
			case f.Message() == nil:
			case f.IsList():
				for i := range v.List().Len() {
					walk(v.List().Get(i).Message())
				}
			default:
				walk(v.Message())
			}
			return true
		})
	}
	walk(opts.ProtoReflect())
}

// reexports reports whether fd makes a needed file visible through its
// public imports, directly or by a chain of them.
func reexports(fd protoreflect.FileDescriptor, need map[string]bool) bool {
	for i := range fd.Imports().Len() {
		imp := fd.Imports().Get(i)
		if imp.IsPublic && (need[imp.Path()] || reexports(imp.FileDescriptor, need)) {
			return true
		}
	}
	return false
}

// extensions returns the extensions declared in the built files.
func (b *reflectionBuilder) extensions() *protoregistry.Types {
	types := new(protoregistry.Types)
	var add func(protoreflect.ExtensionDescriptors)
	add = func(xs protoreflect.ExtensionDescriptors) {
		for i := range xs.Len() {
			_ = types.RegisterExtension(dynamicpb.NewExtensionType(xs.Get(i)))
		}
	}
	var messages func(protoreflect.MessageDescriptors)
	messages = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			add(ms.Get(i).Extensions())
			messages(ms.Get(i).Messages())
		}
	}
	b.files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		add(fd.Extensions())
		messages(fd.Messages())
		return true
	})
	return types
}

// drainingReflection serves one version of the reflection service with
// inner, grpc-go's, and ends its calls with UNAVAILABLE at the drain.
//
// inner blocks in Recv between requests, which only the end of the call
// unblocks, so it runs on a goroutine of its own, the only one that
// receives; the stream handler's goroutine is the only one that sends,
// and returns at the drain. serveGRPC waits for both through the
// request's [grpcExchange].
type drainingReflection[Req, Resp any] struct {
	inner interface {
		ServerReflectionInfo(grpc.BidiStreamingServer[Req, Resp]) error
	}
	drained context.Context //nolint:containedctx // a signal, not a call's context
	h       *Handler
	method  string // for a panic's log and metric (recoverStream)
}

func (d *drainingReflection[Req, Resp]) ServerReflectionInfo(stream grpc.BidiStreamingServer[Req, Resp]) error {
	x, _ := stream.Context().Value(grpcExchangeKey{}).(*grpcExchange)
	if x == nil {
		// Unreachable: only serveGRPC calls the server.
		return status.Error(codes.Internal, "bridge: gRPC request without an exchange")
	}
	if !x.enter() {
		return status.Error(codes.Canceled, "the request has ended")
	}
	defer x.wg.Done()
	errDrained := status.Error(codes.Unavailable, "the bridge is shutting down")
	if d.drained.Err() != nil {
		return errDrained
	}
	out, ended := make(chan *Resp), make(chan struct{})
	defer close(ended)
	hs := &handoffStream[Req, Resp]{BidiStreamingServer: stream, out: out, ended: ended}
	done := make(chan error, 1)
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer d.h.recoverStream(d.method, TransportGRPC, func(st *status.Status) { done <- st.Err() })
		done <- d.inner.ServerReflectionInfo(hs)
	}()
	for {
		select {
		case resp := <-out:
			if err := stream.Send(resp); err != nil {
				return err // the caller is gone
			}
		case err := <-done:
			return err
		case <-d.drained.Done():
			return errDrained
		}
	}
}

// handoffStream is the stream that grpc-go's reflection runs on: Recv
// reads the call's stream, Send hands each response to the stream
// handler's goroutine, which sends it, until the call ends.
type handoffStream[Req, Resp any] struct {
	grpc.BidiStreamingServer[Req, Resp]
	out   chan<- *Resp
	ended <-chan struct{}
}

func (s *handoffStream[Req, Resp]) Send(resp *Resp) error {
	select {
	case s.out <- resp:
		return nil
	case <-s.ended:
		return errReflectionEnded
	}
}
