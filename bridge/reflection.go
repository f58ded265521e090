package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// ErrNoReflection means that a backend implements neither version of gRPC
// server reflection, so its schema has to come from somewhere else.
var ErrNoReflection = errors.New("bridge: the backend does not implement server reflection (grpc.reflection.v1 or grpc.reflection.v1alpha)")

// FetchReflection asks a backend for its schema with gRPC server reflection:
// the services it lists, the files that define them and every file those
// import, in the form [MergeFiles] and [NewFiles] take. It speaks
// grpc.reflection.v1 and falls back to grpc.reflection.v1alpha when the
// backend does not implement v1; when it implements neither, the error
// wraps [ErrNoReflection].
//
// Every listed service is fetched, the reflection and health services
// included: which methods browsers reach is up to [WithExpose]. A listed
// service that the backend cannot describe (it answers NOT_FOUND, as
// grpc-go does for a service missing from its descriptor registry) is left
// out, and so is an import it cannot describe; [NewFiles] then resolves such
// an import against the descriptors compiled into the program, or fails
// naming it.
//
// Options that the program knows (the bridge's and google.api's) are parsed
// with [protoregistry.GlobalTypes], as [LoadDescriptorSet] does.
//
// The fetch uses one reflection stream (two when it falls back), which ends
// before FetchReflection returns. ctx bounds the whole fetch; without a
// deadline, a backend that never answers blocks it.
func FetchReflection(ctx context.Context, conn grpc.ClientConnInterface) ([]*descriptorpb.FileDescriptorProto, error) {
	var lastErr error
	for _, open := range reflectionVersions {
		files, err := fetchReflection(ctx, conn, open)
		if status.Code(err) != codes.Unimplemented {
			return files, err
		}
		lastErr = err
	}
	// The backend's own words can tell a proxy's refusal from the backend's.
	return nil, fmt.Errorf("%w: %v", ErrNoReflection, lastErr)
}

// reflectionVersions are the versions of server reflection that the bridge
// speaks, in the order it tries them.
var reflectionVersions = []func(context.Context, grpc.ClientConnInterface) (reflectionStream, error){
	func(ctx context.Context, conn grpc.ClientConnInterface) (reflectionStream, error) {
		return reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	},
	func(ctx context.Context, conn grpc.ClientConnInterface) (reflectionStream, error) {
		s, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		return v1alphaStream{s}, nil
	},
}

// reflectionStream is one ServerReflectionInfo call, in grpc.reflection.v1
// messages whichever version the backend speaks. Requests and answers
// alternate, one Send then one Recv, so neither side can stall the other
// on a full flow-control window.
type reflectionStream interface {
	Send(*reflectionv1.ServerReflectionRequest) error
	Recv() (*reflectionv1.ServerReflectionResponse, error)
	CloseSend() error
}

// fetchReflection fetches the schema on one stream that open starts. When
// the backend does not implement that version, the error is its
// UNIMPLEMENTED status, unwrapped.
func fetchReflection(ctx context.Context, conn grpc.ClientConnInterface, open func(context.Context, grpc.ClientConnInterface) (reflectionStream, error)) ([]*descriptorpb.FileDescriptorProto, error) {
	// Cancelling ends the stream on every path, the error paths included
	// (grpc.ClientConn.NewStream: a stream leaks unless its context is
	// cancelled or RecvMsg returns an error).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := open(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("bridge: server reflection: %w", err)
	}
	resp, err := roundTrip(s, &reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{ListServices: "*"},
	})
	if status.Code(err) == codes.Unimplemented {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: server reflection: list services: %w", err)
	}
	if e := resp.GetErrorResponse(); e != nil {
		return nil, fmt.Errorf("bridge: server reflection: list services: %s", answerError(e))
	}
	list := resp.GetListServicesResponse()
	if list == nil {
		return nil, fmt.Errorf("bridge: server reflection: list services: unexpected answer %T", resp.GetMessageResponse())
	}

	f := &reflectionFetch{stream: s, byName: make(map[string]*descriptorpb.FileDescriptorProto)}
	for _, svc := range list.GetService() {
		if err := f.fetch(&reflectionv1.ServerReflectionRequest{
			MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svc.GetName()},
		}, "service "+svc.GetName()); err != nil {
			return nil, err
		}
	}
	// The backend sends each file once per stream, with the first answer
	// that needs it, so the imports are normally all here already. Ask for
	// any that is not: a backend may answer with the file alone.
	requested := make(map[string]bool)
	for missing := f.missingImports(requested); len(missing) > 0; missing = f.missingImports(requested) {
		for _, name := range missing {
			requested[name] = true
			if err := f.fetch(&reflectionv1.ServerReflectionRequest{
				MessageRequest: &reflectionv1.ServerReflectionRequest_FileByFilename{FileByFilename: name},
			}, "file "+name); err != nil {
				return nil, err
			}
		}
	}
	// Half-close and wait for the backend's status, so that it sees a
	// clean end rather than a cancellation. The status no longer matters.
	_ = s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
	return f.files, nil
}

// roundTrip sends one request and receives its answer.
func roundTrip(s reflectionStream, req *reflectionv1.ServerReflectionRequest) (*reflectionv1.ServerReflectionResponse, error) {
	// Send returns io.EOF when the stream has already ended; Recv then
	// returns the status it ended with.
	if err := s.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := s.Recv()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the backend ended the reflection stream without an answer")
	}
	return resp, err
}

// reflectionFetch collects the files that a reflection stream answers.
type reflectionFetch struct {
	stream reflectionStream
	files  []*descriptorpb.FileDescriptorProto // in the order received
	byName map[string]*descriptorpb.FileDescriptorProto
}

// fetch sends one file request and keeps the files of the answer. what
// names the request in errors.
func (f *reflectionFetch) fetch(req *reflectionv1.ServerReflectionRequest, what string) error {
	resp, err := roundTrip(f.stream, req)
	if err != nil {
		return fmt.Errorf("bridge: server reflection: %s: %w", what, err)
	}
	if e := resp.GetErrorResponse(); e != nil {
		if codes.Code(e.GetErrorCode()) == codes.NotFound {
			return nil // see FetchReflection: left out
		}
		return fmt.Errorf("bridge: server reflection: %s: %s", what, answerError(e))
	}
	answer := resp.GetFileDescriptorResponse()
	if answer == nil {
		return fmt.Errorf("bridge: server reflection: %s: unexpected answer %T", what, resp.GetMessageResponse())
	}
	for _, b := range answer.GetFileDescriptorProto() {
		fdp := &descriptorpb.FileDescriptorProto{}
		// GlobalTypes knows the bridge's and google.api's options: the
		// backend sends them as bytes, whatever types it compiled them as.
		if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(b, fdp); err != nil {
			return fmt.Errorf("bridge: server reflection: %s: not a FileDescriptorProto: %w", what, err)
		}
		if _, ok := f.byName[fdp.GetName()]; ok {
			continue // one stream describes one backend: the same file twice is the same file
		}
		f.byName[fdp.GetName()] = fdp
		f.files = append(f.files, fdp)
	}
	return nil
}

// missingImports returns the imports of the collected files that are
// neither collected nor requested already, sorted.
func (f *reflectionFetch) missingImports(requested map[string]bool) []string {
	var missing []string
	for _, fdp := range f.files {
		for _, dep := range fdp.GetDependency() {
			if f.byName[dep] == nil && !requested[dep] && !slices.Contains(missing, dep) {
				missing = append(missing, dep)
			}
		}
	}
	slices.Sort(missing)
	return missing
}

// answerError formats an error answer of the reflection service.
func answerError(e *reflectionv1.ErrorResponse) string {
	return fmt.Sprintf("backend answered %s: %s", codes.Code(e.GetErrorCode()), e.GetErrorMessage())
}

// v1alphaStream speaks grpc.reflection.v1alpha in v1 messages. v1 is v1alpha
// under a new package name, field for field, so the messages convert
// through the wire format.
type v1alphaStream struct {
	s grpc.BidiStreamingClient[reflectionv1alpha.ServerReflectionRequest, reflectionv1alpha.ServerReflectionResponse]
}

func (a v1alphaStream) Send(req *reflectionv1.ServerReflectionRequest) error {
	out := &reflectionv1alpha.ServerReflectionRequest{}
	if err := convertMessage(req, out); err != nil {
		return err
	}
	return a.s.Send(out)
}

func (a v1alphaStream) Recv() (*reflectionv1.ServerReflectionResponse, error) {
	in, err := a.s.Recv()
	if err != nil {
		return nil, err
	}
	out := &reflectionv1.ServerReflectionResponse{}
	if err := convertMessage(in, out); err != nil {
		return nil, err
	}
	return out, nil
}

func (a v1alphaStream) CloseSend() error { return a.s.CloseSend() }

// convertMessage copies src into dst, a message with the same fields.
func convertMessage(src, dst proto.Message) error {
	b, err := proto.Marshal(src)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, dst)
}

// MergeFiles builds one schema for [WithFiles] from several sets of files,
// such as the answers of [FetchReflection] from several backends. A file
// that more than one set holds must be the same in each (compared with
// [proto.Equal]); two different definitions of one file are an error that
// names the file and the two sets (counted from 1, in argument order). One
// case is let through: a differing file that defines no service and is
// also compiled into the program (the well-known types, google.api, the
// bridge's options) is left out of the schema, which then uses the
// compiled-in copy, as [NewFiles] does for any import missing from a set.
// Backends built with different protobuf releases send such files, and
// refusing them would refuse the backends.
func MergeFiles(sets ...[]*descriptorpb.FileDescriptorProto) (*protoregistry.Files, error) {
	type entry struct {
		fdp     *descriptorpb.FileDescriptorProto
		set     int  // the first set that holds the file, from 1
		dropped bool // differs between sets; the compiled-in copy stands in
	}
	var order []string
	byName := make(map[string]*entry)
	for i, set := range sets {
		for _, fdp := range set {
			name := fdp.GetName()
			e, ok := byName[name]
			if !ok {
				byName[name] = &entry{fdp: fdp, set: i + 1}
				order = append(order, name)
				continue
			}
			if e.dropped || proto.Equal(e.fdp, fdp) {
				continue
			}
			if len(e.fdp.GetService()) == 0 && len(fdp.GetService()) == 0 {
				if _, err := protoregistry.GlobalFiles.FindFileByPath(name); err == nil {
					e.dropped = true
					continue
				}
			}
			return nil, fmt.Errorf("bridge: merge schemas: %s differs between sets %d and %d", name, e.set, i+1)
		}
	}
	merged := &descriptorpb.FileDescriptorSet{}
	for _, name := range order {
		if e := byName[name]; !e.dropped {
			merged.File = append(merged.File, e.fdp)
		}
	}
	files, err := NewFiles(merged)
	if err != nil {
		return nil, fmt.Errorf("bridge: merge schemas: %w", err)
	}
	return files, nil
}
