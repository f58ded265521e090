package bridgetest

import (
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	bridgev1 "github.com/grpcbridge/grpcbridge/gen/bridge/v1"
)

// The dyn.v1 services are compiled into no program: a bridge can learn of
// them only from server reflection or a descriptor set, which is what the
// tests of those schema sources need. dyn/v1/dyn.proto is
//
//	syntax = "proto3";
//	package dyn.v1;
//	import "bridge/v1/options.proto";
//	import "google/api/annotations.proto";
//
//	message Count { int32 count = 1; }
//	message Tick { int64 n = 1; }
//
//	service Clock {
//	  rpc Ticks(Count) returns (stream Tick) {
//	    option (google.api.http) = {get: "/v1/clock:ticks"};
//	    option (bridge.v1.method) = {sse: {cursor_field: "n"}};
//	  }
//	}
//	service Calendar { rpc Days(Count) returns (stream Tick); } // DynFile(true) only
//
// Both methods send count ticks with n = 10, 20, 30, ...: SSE event ids
// equal to n show that the cursor option reached the bridge.
var dynFiles = [2]protoreflect.FileDescriptor{newDynFile(false), newDynFile(true)}

// DynFile returns dyn/v1/dyn.proto, with the Calendar service when
// withCalendar is set: two versions of one file, as a backend's schema
// before and after a release that adds a service.
func DynFile(withCalendar bool) protoreflect.FileDescriptor {
	if withCalendar {
		return dynFiles[1]
	}
	return dynFiles[0]
}

func newDynFile(withCalendar bool) protoreflect.FileDescriptor {
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	ticksOpts := &descriptorpb.MethodOptions{}
	proto.SetExtension(ticksOpts, annotations.E_Http, &annotations.HttpRule{
		Pattern: &annotations.HttpRule_Get{Get: "/v1/clock:ticks"},
	})
	proto.SetExtension(ticksOpts, bridgev1.E_Method, &bridgev1.MethodOptions{
		Sse: &bridgev1.SSEOptions{CursorField: "n"},
	})
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("dyn/v1/dyn.proto"),
		Package:    proto.String("dyn.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"bridge/v1/options.proto", "google/api/annotations.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Count"), Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("count"), JsonName: proto.String("count"), Number: proto.Int32(1),
				Type: descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum(), Label: optional,
			}}},
			{Name: proto.String("Tick"), Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("n"), JsonName: proto.String("n"), Number: proto.Int32(1),
				Type: descriptorpb.FieldDescriptorProto_TYPE_INT64.Enum(), Label: optional,
			}}},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Clock"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("Ticks"), InputType: proto.String(".dyn.v1.Count"), OutputType: proto.String(".dyn.v1.Tick"),
				ServerStreaming: proto.Bool(true), Options: ticksOpts,
			}},
		}},
	}
	if withCalendar {
		fdp.Service = append(fdp.Service, &descriptorpb.ServiceDescriptorProto{
			Name: proto.String("Calendar"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("Days"), InputType: proto.String(".dyn.v1.Count"), OutputType: proto.String(".dyn.v1.Tick"),
				ServerStreaming: proto.Bool(true),
			}},
		})
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic("bridgetest: dyn/v1/dyn.proto: " + err.Error())
	}
	return fd
}

// RegisterDyn registers dyn.v1.Clock and dyn.v1.Calendar on s, served with
// dynamic messages. Which of them a bridge sees is up to the schema that
// the server's reflection describes.
func RegisterDyn(s grpc.ServiceRegistrar) {
	for _, svc := range []struct{ service, method string }{{"dyn.v1.Clock", "Ticks"}, {"dyn.v1.Calendar", "Days"}} {
		s.RegisterService(&grpc.ServiceDesc{
			ServiceName: svc.service,
			HandlerType: (*any)(nil),
			Streams: []grpc.StreamDesc{{
				StreamName:    svc.method,
				ServerStreams: true,
				Handler:       dynTicks,
			}},
		}, struct{}{})
	}
}

// dynTicks sends count ticks, n = 10, 20, 30, ...
func dynTicks(_ any, ss grpc.ServerStream) error {
	msgs := DynFile(true).Messages()
	count, tick := msgs.ByName("Count"), msgs.ByName("Tick")
	in := dynamicpb.NewMessage(count)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	n := in.Get(count.Fields().ByName("count")).Int()
	for i := range n {
		out := dynamicpb.NewMessage(tick)
		out.Set(tick.Fields().ByName("n"), protoreflect.ValueOfInt64(10*(i+1)))
		if err := ss.SendMsg(out); err != nil {
			return err
		}
	}
	return nil
}
