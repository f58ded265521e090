package bridge_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// refltest/v1/refltest.proto holds an exposed and an unexposed service,
// with comments, an import that only the unexposed service uses and an
// extension:
//
//	syntax = "proto2";
//	package refltest.v1;
//	import "google/protobuf/empty.proto";      // used by Private only
//	import "google/protobuf/timestamp.proto";
//
//	message Item {
//	  optional string name = 1;
//	  optional google.protobuf.Timestamp at = 2;
//	  extensions 100 to 199;
//	}
//	extend Item { optional string note = 100; }
//
//	// Public serves items.
//	service Public {
//	  rpc Get(Item) returns (Item);          // exposed
//	  // Set changes an item.
//	  rpc Set(Item) returns (Item);          // not exposed
//	  // Watch streams items.
//	  rpc Watch(Item) returns (stream Item); // exposed
//	}
//	// Private is internal.
//	service Private { rpc Peek(google.protobuf.Empty) returns (google.protobuf.Empty); }
//
// refltest/v1/internal.proto, imported by nothing, holds refltest.v1.Admin,
// which nothing exposes.
var reflTestFiles = func() *protoregistry.Files {
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	item := proto.String(".refltest.v1.Item")
	empty := proto.String(".google.protobuf.Empty")
	comment := func(text string, path ...int32) *descriptorpb.SourceCodeInfo_Location {
		return &descriptorpb.SourceCodeInfo_Location{Path: path, Span: []int32{0, 0, 1}, LeadingComments: proto.String(text)}
	}
	main := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("refltest/v1/refltest.proto"),
		Package:    proto.String("refltest.v1"),
		Dependency: []string{"google/protobuf/empty.proto", "google/protobuf/timestamp.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Item"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("name"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: optional},
				{Name: proto.String("at"), Number: proto.Int32(2), Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String(".google.protobuf.Timestamp"), Label: optional},
			},
			ExtensionRange: []*descriptorpb.DescriptorProto_ExtensionRange{{Start: proto.Int32(100), End: proto.Int32(200)}},
		}},
		Extension: []*descriptorpb.FieldDescriptorProto{{
			Name: proto.String("note"), Number: proto.Int32(100), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: optional, Extendee: item,
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{
			{Name: proto.String("Public"), Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Get"), InputType: item, OutputType: item},
				{Name: proto.String("Set"), InputType: item, OutputType: item},
				{Name: proto.String("Watch"), InputType: item, OutputType: item, ServerStreaming: proto.Bool(true)},
			}},
			{Name: proto.String("Private"), Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Peek"), InputType: empty, OutputType: empty},
			}},
		},
		SourceCodeInfo: &descriptorpb.SourceCodeInfo{Location: []*descriptorpb.SourceCodeInfo_Location{
			comment(" empty.proto, for Private.\n", 3, 0),
			comment(" timestamp.proto, for Item.\n", 3, 1),
			comment(" Public serves items.\n", 6, 0),
			comment(" Set changes an item.\n", 6, 0, 2, 1),
			comment(" Watch streams items.\n", 6, 0, 2, 2),
			comment(" Private is internal.\n", 6, 1),
			comment(" Peek looks inside.\n", 6, 1, 2, 0),
		}},
	}
	internal := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("refltest/v1/internal.proto"),
		Package:    proto.String("refltest.v1"),
		Dependency: []string{"refltest/v1/refltest.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Admin"), Method: []*descriptorpb.MethodDescriptorProto{
			{Name: proto.String("Wipe"), InputType: item, OutputType: item},
		}}},
	}
	files, err := bridge.NewFiles(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(emptypb.File_google_protobuf_empty_proto),
		protodesc.ToFileDescriptorProto(timestamppb.File_google_protobuf_timestamp_proto),
		protodesc.ToFileDescriptorProto(reflectionv1.File_grpc_reflection_v1_reflection_proto),
		main, internal,
	}})
	if err != nil {
		panic(err)
	}
	return files
}()

// reflExpose exposes Public's Get and Watch, and nothing of Private or Admin.
var reflExpose = []string{"refltest.v1.Public/Get", "refltest.v1.Public/Watch"}

// reflOwnServices are the services that the bridge serves itself.
var reflOwnServices = []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}

// newReflEnv starts a bridge with the refltest schema in front of a
// backend that serves its own reflection, and a "refltest.v1.Private"
// that it lists there.
func newReflEnv(t *testing.T, expose []string, opts ...bridge.Option) *ptEnv {
	t.Helper()
	backend := bridgetest.NewBackend(t, func(s *grpc.Server) {
		s.RegisterService(&grpc.ServiceDesc{ServiceName: "refltest.v1.Private", HandlerType: (*any)(nil)}, struct{}{})
		reflection.Register(s)
	})
	return newPTEnv(t, expose, append([]bridge.Option{bridge.WithFiles(reflTestFiles), bridge.WithBackend(backend)}, opts...)...)
}

// reflCall sends each request on one grpc.reflection.v1 call and returns
// the answers.
func reflCall(ctx context.Context, t *testing.T, conn grpc.ClientConnInterface, reqs ...*reflectionv1.ServerReflectionRequest) []*reflectionv1.ServerReflectionResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, ptSafetyTimeout)
	defer cancel()
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*reflectionv1.ServerReflectionResponse
	for _, req := range reqs {
		if err := stream.Send(req); err != nil {
			t.Fatalf("Send: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		out = append(out, resp)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after the half-close: %v, want io.EOF", err)
	}
	return out
}

// reflCallV1Alpha is reflCall in grpc.reflection.v1alpha.
func reflCallV1Alpha(t *testing.T, conn grpc.ClientConnInterface, req *reflectionv1alpha.ServerReflectionRequest) *reflectionv1alpha.ServerReflectionResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ptSafetyTimeout)
	defer cancel()
	stream, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(req); err != nil {
		t.Fatalf("Send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	_ = stream.CloseSend()
	return resp
}

func listRequest() *reflectionv1.ServerReflectionRequest {
	return &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}
}

func symbolRequest(name string) *reflectionv1.ServerReflectionRequest {
	return &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name}}
}

func fileRequest(path string) *reflectionv1.ServerReflectionRequest {
	return &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileByFilename{FileByFilename: path}}
}

// listed returns the names that a list_services answer lists.
func listed(t *testing.T, resp *reflectionv1.ServerReflectionResponse) []string {
	t.Helper()
	if resp.GetListServicesResponse() == nil {
		t.Fatalf("list_services answered %v", resp)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

// describedFiles decodes the files of a file_descriptor_response, by name,
// and their names in the order sent.
func describedFiles(t *testing.T, resp *reflectionv1.ServerReflectionResponse) (map[string]*descriptorpb.FileDescriptorProto, []string) {
	t.Helper()
	if resp.GetFileDescriptorResponse() == nil {
		t.Fatalf("want files, got %v", resp)
	}
	files := make(map[string]*descriptorpb.FileDescriptorProto)
	var names []string
	for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fdp := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fdp); err != nil {
			t.Fatal(err)
		}
		files[fdp.GetName()] = fdp
		names = append(names, fdp.GetName())
	}
	return files, names
}

// wantListed checks that a list names exactly the exposed services and
// the bridge's own.
func wantListed(t *testing.T, got []string, exposed ...string) {
	t.Helper()
	want := append(slices.Clone(reflOwnServices), exposed...)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("listed services (-want +got):\n%s", diff)
	}
}

func TestReflectionListsExposedServices(t *testing.T) {
	t.Parallel()
	env := newReflEnv(t, reflExpose)
	wantListed(t, listed(t, reflCall(t.Context(), t, env.conn, listRequest())[0]), "refltest.v1.Public")

	resp := reflCallV1Alpha(t, env.conn, &reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	wantListed(t, names, "refltest.v1.Public")
}

func TestReflectionDescribesOnlyWhatIsExposed(t *testing.T) {
	t.Parallel()
	env := newReflEnv(t, reflExpose)
	files, names := describedFiles(t, reflCall(t.Context(), t, env.conn, symbolRequest("refltest.v1.Public"))[0])
	// The file first, then the imports that are left: empty.proto served
	// only Private.
	if want := []string{"refltest/v1/refltest.proto", "google/protobuf/timestamp.proto"}; !slices.Equal(names, want) {
		t.Fatalf("files %v, want %v", names, want)
	}
	got := files["refltest/v1/refltest.proto"]
	want := protodesc.ToFileDescriptorProto(mustFile(t, "refltest/v1/refltest.proto"))
	want.Dependency = []string{"google/protobuf/timestamp.proto"}
	want.Service = want.Service[:1]
	want.Service[0].Method = []*descriptorpb.MethodDescriptorProto{want.Service[0].Method[0], want.Service[0].Method[2]}
	// Comments follow their element; those of what was cut are gone.
	loc := want.SourceCodeInfo.Location
	want.SourceCodeInfo.Location = []*descriptorpb.SourceCodeInfo_Location{loc[1], loc[2], loc[4]}
	loc[1].Path = []int32{3, 0}       // timestamp.proto, now the first import
	loc[4].Path = []int32{6, 0, 2, 1} // Watch, now the second method
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("refltest.proto as described (-want +got):\n%s", diff)
	}

	// The bridge's own client takes the described files as a schema of
	// their own: they are complete, and hold nothing unexposed.
	ctx, cancel := context.WithTimeout(t.Context(), ptSafetyTimeout)
	defer cancel()
	fdps, err := bridge.FetchReflection(ctx, env.conn)
	if err != nil {
		t.Fatalf("FetchReflection: %v", err)
	}
	schema, err := bridge.MergeFiles(fdps)
	if err != nil {
		t.Fatalf("MergeFiles: %v", err)
	}
	for _, name := range []protoreflect.FullName{"refltest.v1.Public.Get", "refltest.v1.Public.Watch", "refltest.v1.Item", "grpc.health.v1.Health.Check"} {
		if _, err := schema.FindDescriptorByName(name); err != nil {
			t.Errorf("fetched schema lacks %s: %v", name, err)
		}
	}
	for _, name := range []protoreflect.FullName{"refltest.v1.Private", "refltest.v1.Public.Set", "refltest.v1.Admin"} {
		if _, err := schema.FindDescriptorByName(name); err == nil {
			t.Errorf("fetched schema has %s", name)
		}
	}
}

// mustFile returns a file of the refltest schema.
func mustFile(t *testing.T, path string) protoreflect.FileDescriptor {
	t.Helper()
	fd, err := reflTestFiles.FindFileByPath(path)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestReflectionAnswersNotFoundForWhatIsNotExposed(t *testing.T) {
	t.Parallel()
	env := newReflEnv(t, reflExpose)
	ext := func(typ string, n int32) *reflectionv1.ServerReflectionRequest {
		return &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingExtension{
			FileContainingExtension: &reflectionv1.ExtensionRequest{ContainingType: typ, ExtensionNumber: n},
		}}
	}
	extNumbers := func(typ string) *reflectionv1.ServerReflectionRequest {
		return &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_AllExtensionNumbersOfType{AllExtensionNumbersOfType: typ}}
	}
	tests := []struct {
		name  string
		req   *reflectionv1.ServerReflectionRequest
		found bool
	}{
		{"exposed service", symbolRequest("refltest.v1.Public"), true},
		{"exposed method", symbolRequest("refltest.v1.Public.Watch"), true},
		{"message", symbolRequest("refltest.v1.Item"), true},
		{"own service", symbolRequest("grpc.health.v1.Health"), true},
		{"exposed file", fileRequest("refltest/v1/refltest.proto"), true},
		{"import left", fileRequest("google/protobuf/timestamp.proto"), true},
		{"extension", ext("refltest.v1.Item", 100), true},
		{"extension numbers", extNumbers("refltest.v1.Item"), true},
		{"unexposed service", symbolRequest("refltest.v1.Private"), false},
		{"unexposed service's method", symbolRequest("refltest.v1.Private.Peek"), false},
		{"unexposed method", symbolRequest("refltest.v1.Public.Set"), false},
		{"service of another file", symbolRequest("refltest.v1.Admin"), false},
		{"file of an unexposed service", fileRequest("refltest/v1/internal.proto"), false},
		{"import of an unexposed service only", fileRequest("google/protobuf/empty.proto"), false},
		{"message of an unexposed service only", symbolRequest("google.protobuf.Empty"), false},
		{"unknown extension", ext("refltest.v1.Item", 101), false},
		{"extension numbers of a hidden type", extNumbers("google.protobuf.Empty"), false},
	}
	reqs := make([]*reflectionv1.ServerReflectionRequest, len(tests))
	for i, tt := range tests {
		reqs[i] = tt.req
	}
	// One call for all: answers must not depend on what the call sent before.
	resps := reflCall(t.Context(), t, env.conn, reqs...)
	for i, tt := range tests {
		resp := resps[i]
		if !tt.found {
			if e := resp.GetErrorResponse(); e == nil || codes.Code(e.GetErrorCode()) != codes.NotFound {
				t.Errorf("%s: %v, want NOT_FOUND", tt.name, resp)
			}
			continue
		}
		if resp.GetErrorResponse() != nil {
			t.Errorf("%s: %v, want an answer", tt.name, resp)
		}
		if n := resp.GetAllExtensionNumbersResponse(); n != nil && !slices.Equal(n.GetExtensionNumber(), []int32{100}) {
			t.Errorf("%s: %v, want [100]", tt.name, n.GetExtensionNumber())
		}
		if fds := resp.GetFileDescriptorResponse(); fds != nil {
			files, _ := describedFiles(t, resp)
			if f := files["refltest/v1/refltest.proto"]; f != nil && (len(f.GetService()) != 1 || len(f.GetService()[0].GetMethod()) != 2) {
				t.Errorf("%s: refltest.proto with services %v", tt.name, f.GetService())
			}
		}
	}

	// v1alpha hides the same.
	resp := reflCallV1Alpha(t, env.conn, &reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "refltest.v1.Private"}})
	if e := resp.GetErrorResponse(); e == nil || codes.Code(e.GetErrorCode()) != codes.NotFound {
		t.Errorf("v1alpha refltest.v1.Private: %v, want NOT_FOUND", resp)
	}
	resp = reflCallV1Alpha(t, env.conn, &reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "refltest.v1.Public"}})
	fdps := resp.GetFileDescriptorResponse().GetFileDescriptorProto()
	if len(fdps) == 0 {
		t.Fatalf("v1alpha refltest.v1.Public: %v, want files", resp)
	}
	var fdp descriptorpb.FileDescriptorProto
	if err := proto.Unmarshal(fdps[0], &fdp); err != nil || len(fdp.GetService()) != 1 || len(fdp.GetService()[0].GetMethod()) != 2 {
		t.Errorf("v1alpha refltest.proto: %v %v, want Public with Get and Watch only", fdp.GetService(), err)
	}
}

func TestReflectionFollowsUpdateFiles(t *testing.T) {
	t.Parallel()
	env := newPTEnv(t, []string{"dyn.v1.*"}, bridge.WithFiles(dynOnly(t, false)))
	wantListed(t, listed(t, reflCall(t.Context(), t, env.conn, listRequest())[0]), "dyn.v1.Clock")

	if err := env.handler.UpdateFiles(dynOnly(t, true)); err != nil {
		t.Fatal(err)
	}
	resps := reflCall(t.Context(), t, env.conn, listRequest(), symbolRequest("dyn.v1.Calendar"))
	wantListed(t, listed(t, resps[0]), "dyn.v1.Calendar", "dyn.v1.Clock")
	files, _ := describedFiles(t, resps[1])
	dyn := files["dyn/v1/dyn.proto"]
	if got := len(dyn.GetService()); got != 2 {
		t.Fatalf("dyn.proto after the update has %d services, want 2", got)
	}
	// The imports that only options use stay, so that clients can read
	// the options.
	if want := []string{"bridge/v1/options.proto", "google/api/annotations.proto"}; !slices.Equal(dyn.GetDependency(), want) {
		t.Errorf("dyn.proto imports %v, want %v", dyn.GetDependency(), want)
	}
}

func TestReflectionWinsOverExposedBackendReflection(t *testing.T) {
	t.Parallel()
	// The backend's reflection is exposed, and lists refltest.v1.Private;
	// over native gRPC the bridge answers instead.
	env := newReflEnv(t, append(slices.Clone(reflExpose), "grpc.reflection.v1.*"))
	resps := reflCall(t.Context(), t, env.conn, listRequest(), symbolRequest("refltest.v1.Private"), symbolRequest("grpc.reflection.v1.ServerReflection"))
	wantListed(t, listed(t, resps[0]), "refltest.v1.Public")
	if e := resps[1].GetErrorResponse(); codes.Code(e.GetErrorCode()) != codes.NotFound {
		t.Errorf("refltest.v1.Private: %v, want NOT_FOUND", resps[1])
	}
	files, _ := describedFiles(t, resps[2])
	if diff := cmp.Diff(protodesc.ToFileDescriptorProto(reflectionv1.File_grpc_reflection_v1_reflection_proto), files["grpc/reflection/v1/reflection.proto"], protocmp.Transform()); diff != "" {
		t.Errorf("reflection.proto (-want +got):\n%s", diff)
	}
}

func TestReflectionCallers(t *testing.T) {
	t.Parallel()
	// Reflection describes only what the browser transports serve: callers
	// outside the native gRPC networks may use it, as the health service.
	env := newReflEnv(t, reflExpose, bridge.WithNativeGRPCNetworks(netip.MustParsePrefix("192.0.2.0/24")))
	wantListed(t, listed(t, reflCall(t.Context(), t, env.conn, listRequest())[0]), "refltest.v1.Public")
	err := env.conn.Invoke(t.Context(), "/refltest.v1.Public/Get", &emptypb.Empty{}, &emptypb.Empty{})
	wantStatus(t, err, codes.PermissionDenied, "")

	// Browsers are refused before grpc-go sees the request.
	ctx := metadata.AppendToOutgoingContext(t.Context(), "origin", "https://evil.example")
	stream, err := reflectionv1.NewServerReflectionClient(env.conn).ServerReflectionInfo(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	wantStatus(t, err, codes.PermissionDenied, "")
}

func TestReflectionEndsAtDrain(t *testing.T) {
	t.Parallel()
	env := newReflEnv(t, reflExpose)
	ctx, cancel := context.WithTimeout(t.Context(), ptSafetyTimeout)
	defer cancel()
	stream, err := reflectionv1.NewServerReflectionClient(env.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(listRequest()); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	// The call stays open, idle, as a reflection client's may; the drain
	// ends it rather than wait for it.
	if err := env.handler.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_, err = stream.Recv()
	wantStatus(t, err, codes.Unavailable, "the bridge is shutting down")

	stream, err = reflectionv1.NewServerReflectionClient(env.conn).ServerReflectionInfo(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	wantStatus(t, err, codes.Unavailable, "the bridge is shutting down")
}
