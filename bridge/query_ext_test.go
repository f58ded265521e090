package bridge_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	bridgev1 "github.com/grpcbridge/grpcbridge/gen/bridge/v1"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// qdyn/v1/qdyn.proto is compiled into no program, so its enum is in no
// registry but the schema's: what a bridge that loads a descriptor set or
// asks server reflection sees.
//
//	enum Kind { KIND_UNSPECIFIED = 0; KIND_A = 1; KIND_B = 2; }
//	message Inner { Kind kind = 1; }
//	message Item { string name = 1; }
//	message Query {
//	  Kind kind = 1; repeated Kind kinds = 2; Inner inner = 3;
//	  repeated Item items = 4; uint64 after = 5; map<string, Kind> by_name = 6;
//	}
//	service Probe {
//	  // Echo sends its request back, once.
//	  rpc Echo(Query) returns (stream Query) {
//	    option (google.api.http) = {get: "/v1/probes/{kind}" additional_bindings {get: "/v1/probes/inner/{inner.kind}"}};
//	    option (bridge.v1.method) = {sse: {resume_field: "after"}};
//	  }
//	}
var qdynFile = func() protoreflect.FileDescriptor {
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	repeated := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	enumType := descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum()
	msgType := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum()
	field := func(name string, n int32, label *descriptorpb.FieldDescriptorProto_Label, typ *descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Label: label, Type: typ}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	echoOpts := &descriptorpb.MethodOptions{}
	proto.SetExtension(echoOpts, annotations.E_Http, &annotations.HttpRule{
		Pattern:            &annotations.HttpRule_Get{Get: "/v1/probes/{kind}"},
		AdditionalBindings: []*annotations.HttpRule{{Pattern: &annotations.HttpRule_Get{Get: "/v1/probes/inner/{inner.kind}"}}},
	})
	proto.SetExtension(echoOpts, bridgev1.E_Method, &bridgev1.MethodOptions{Sse: &bridgev1.SSEOptions{ResumeField: "after"}})
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("qdyn/v1/qdyn.proto"),
		Package:    proto.String("qdyn.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"bridge/v1/options.proto", "google/api/annotations.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Kind"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("KIND_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("KIND_A"), Number: proto.Int32(1)},
				{Name: proto.String("KIND_B"), Number: proto.Int32(2)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Inner"), Field: []*descriptorpb.FieldDescriptorProto{field("kind", 1, optional, enumType, ".qdyn.v1.Kind")}},
			{Name: proto.String("Item"), Field: []*descriptorpb.FieldDescriptorProto{field("name", 1, optional, descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), "")}},
			{
				Name: proto.String("Query"),
				Field: []*descriptorpb.FieldDescriptorProto{
					field("kind", 1, optional, enumType, ".qdyn.v1.Kind"),
					field("kinds", 2, repeated, enumType, ".qdyn.v1.Kind"),
					field("inner", 3, optional, msgType, ".qdyn.v1.Inner"),
					field("items", 4, repeated, msgType, ".qdyn.v1.Item"),
					field("after", 5, optional, descriptorpb.FieldDescriptorProto_TYPE_UINT64.Enum(), ""),
					field("by_name", 6, repeated, msgType, ".qdyn.v1.Query.ByNameEntry"),
				},
				NestedType: []*descriptorpb.DescriptorProto{{
					Name: proto.String("ByNameEntry"),
					Field: []*descriptorpb.FieldDescriptorProto{
						field("key", 1, optional, descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), ""),
						field("value", 2, optional, enumType, ".qdyn.v1.Kind"),
					},
					Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				}},
			},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Probe"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("Echo"), InputType: proto.String(".qdyn.v1.Query"), OutputType: proto.String(".qdyn.v1.Query"),
				ServerStreaming: proto.Bool(true), Options: echoOpts,
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	return fd
}()

// registerQdyn registers qdyn.v1.Probe, served with dynamic messages.
func registerQdyn(s *grpc.Server) {
	query := qdynFile.Messages().ByName("Query")
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "qdyn.v1.Probe",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Echo",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				in := dynamicpb.NewMessage(query)
				if err := ss.RecvMsg(in); err != nil {
					return err
				}
				return ss.SendMsg(in)
			},
		}},
	}, struct{}{})
}

// Enums in the query string and in path parameters, by name and by
// number, singular, repeated, nested and as map values, with a schema
// that is not compiled into the bridge: from a descriptor set and from
// server reflection.
func TestQueryEnumsWhateverTheSchemaSource(t *testing.T) {
	t.Parallel()
	if _, err := protoregistry.GlobalTypes.FindEnumByName("qdyn.v1.Kind"); !errors.Is(err, protoregistry.NotFound) {
		t.Fatal("qdyn.v1.Kind is registered globally: the test proves nothing")
	}
	sources := map[string]func(t *testing.T) string{
		"descriptor set": func(t *testing.T) string {
			conn := bridgetest.NewBackend(t, registerQdyn)
			files, err := bridge.LoadDescriptorSet(writeSet(t, &descriptorpb.FileDescriptorSet{
				File: []*descriptorpb.FileDescriptorProto{protodesc.ToFileDescriptorProto(qdynFile)},
			}))
			if err != nil {
				t.Fatal(err)
			}
			h, err := bridge.NewHandler(bridge.WithFiles(files), bridge.WithBackend(conn), bridge.WithExpose("qdyn.v1.*"))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			return srv.URL
		},
		"server reflection": func(t *testing.T) string {
			own := new(protoregistry.Files)
			if err := own.RegisterFile(qdynFile); err != nil {
				t.Fatal(err)
			}
			conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
				registerQdyn(s)
				opts := reflection.ServerOptions{Services: s, DescriptorResolver: own}
				reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
			})
			return serveReflected(t, conn, "qdyn.v1.*")
		},
	}
	for name, source := range sources {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			base := source(t)
			for _, tc := range []struct {
				path, lastEventID, want string
			}{
				{"/qdyn.v1.Probe/Echo?kind=KIND_B", "", `{"kind":"KIND_B"}`},
				{"/qdyn.v1.Probe/Echo?kind=2", "", `{"kind":"KIND_B"}`},
				{"/qdyn.v1.Probe/Echo?kinds=KIND_A&kinds=2&kinds=0", "", `{"kinds":["KIND_A","KIND_B","KIND_UNSPECIFIED"]}`},
				{"/qdyn.v1.Probe/Echo?inner.kind=KIND_A", "", `{"inner":{"kind":"KIND_A"}}`},
				{"/qdyn.v1.Probe/Echo?by_name[x]=KIND_B&byName[y]=1", "", `{"byName":{"x":"KIND_B","y":"KIND_A"}}`},
				{"/v1/probes/KIND_A", "", `{"kind":"KIND_A"}`},
				{"/v1/probes/2?kinds=KIND_A", "", `{"kind":"KIND_B","kinds":["KIND_A"]}`},
				{"/v1/probes/inner/KIND_B", "", `{"inner":{"kind":"KIND_B"}}`},
				{"/qdyn.v1.Probe/Echo?kind=1", "7", `{"kind":"KIND_A","after":"7"}`},
			} {
				hdr := http.Header{}
				if tc.lastEventID != "" {
					hdr.Set("Last-Event-ID", tc.lastEventID)
				}
				evs := fetchEvents(t, base+tc.path, hdr)
				msgs := messages(evs)
				if len(msgs) != 1 || msgs[0].Data != tc.want {
					t.Errorf("GET %s: events %+v, want one message %s", tc.path, evs, tc.want)
				}
			}
			for _, tc := range []struct{ path, want string }{
				{"/qdyn.v1.Probe/Echo?kind=KIND_Z", `parsing field "kind": "KIND_Z" is not a valid value`},
				{"/qdyn.v1.Probe/Echo?kind=7", `parsing field "kind": "7" is not a valid value`},
				{"/qdyn.v1.Probe/Echo?kinds=KIND_A&kinds=b", `parsing list "kinds": "b" is not a valid value`},
				{"/v1/probes/KIND_Q", `"KIND_Q" is not a valid value`},
				{"/qdyn.v1.Probe/Echo?items.name=x", `parameter "items.name": repeated message fields cannot be set from the query string`},
				{"/qdyn.v1.Probe/Echo?by_name.x=KIND_A", `parameter "by_name.x": map fields cannot be set with a dotted path from the query string; use by_name[key]=value`},
			} {
				resp, err := http.Get(base + tc.path)
				if err != nil {
					t.Fatal(err)
				}
				st := errorBody(t, resp, http.StatusBadRequest)
				_ = resp.Body.Close()
				if st.Code != codes.InvalidArgument || !strings.Contains(st.Message, tc.want) {
					t.Errorf("GET %s: status %+v, want INVALID_ARGUMENT with %q", tc.path, st, tc.want)
				}
			}
		})
	}
}
