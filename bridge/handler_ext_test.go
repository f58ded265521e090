package bridge_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// schemaOf builds a schema from compiled-in files, as a descriptor set or
// server reflection would deliver them.
func schemaOf(t *testing.T, paths ...string) *protoregistry.Files {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	for _, p := range paths {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(p)
		if err != nil {
			t.Fatal(err)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	files, err := bridge.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestUpdateFilesSwapsSchemaWithoutDroppingStreams(t *testing.T) {
	t.Parallel()
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*"),
		bridge.WithFiles(schemaOf(t, "demo/v1/ticker.proto")))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	live, err := http.Get(srv.URL + "/demo.v1.TickerService/Watch?symbol=A&interval_ms=2&limit=40")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	stream := bridgetest.NewSSEReader(live.Body)
	if ev, err := stream.Next(); err != nil || ev.Retry == 0 {
		t.Fatalf("first block %+v %v", ev, err)
	}

	before, err := http.Get(srv.URL + "/demo.v1.EchoService/Stream?count=1")
	if err != nil {
		t.Fatal(err)
	}
	_ = before.Body.Close()
	if before.StatusCode != http.StatusNotFound {
		t.Fatalf("EchoService before the update: %d, want 404", before.StatusCode)
	}

	// A schema that exposes nothing is refused; the old one stays.
	if err := h.UpdateFiles(schemaOf(t, "bridge/v1/options.proto")); err == nil || !strings.Contains(err.Error(), `expose pattern "demo.v1.*" matches no method`) {
		t.Fatalf("UpdateFiles with no demo service: %v", err)
	}
	if err := h.UpdateFiles(schemaOf(t, "demo/v1/ticker.proto", "demo/v1/echo.proto")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL + "/demo.v1.EchoService/Stream?count=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := len(messages(events(t, resp))); got != 2 {
		t.Fatalf("EchoService after the update: %d messages, want 2", got)
	}

	// The stream that was open during the swap runs to its end.
	n := 0
	for {
		ev, err := stream.Next()
		if err != nil {
			t.Fatalf("live stream after %d messages: %v", n, err)
		}
		if ev.Type == "message" {
			n++
		}
		if ev.Type == "end" {
			break
		}
	}
	if n != 40 {
		t.Fatalf("live stream delivered %d messages across the swap, want 40", n)
	}
}

func TestExposePackagePatternExcludesSubPackages(t *testing.T) {
	t.Parallel()
	// demo.v1.admin is a sub-package of demo.v1: "demo.v1.*" must not
	// expose it.
	ticker, err := protoregistry.GlobalFiles.FindFileByPath("demo/v1/ticker.proto")
	if err != nil {
		t.Fatal(err)
	}
	admin := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("demo/v1/admin/admin.proto"),
		Package:    proto.String("demo.v1.admin"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"demo/v1/ticker.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("AdminService"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name: proto.String("Wipe"), InputType: proto.String(".demo.v1.WatchRequest"), OutputType: proto.String(".demo.v1.Tick"),
				ServerStreaming: proto.Bool(true),
			}},
		}},
	}
	files, err := bridge.NewFiles(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{protodesc.ToFileDescriptorProto(ticker), admin}})
	if err != nil {
		t.Fatal(err)
	}
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
	h, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.*"), bridge.WithFiles(files))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for path, want := range map[string]int{
		"/demo.v1.admin.AdminService/Wipe?symbol=A":     http.StatusNotFound,
		"/demo.v1.TickerService/Watch?symbol=A&limit=1": http.StatusOK,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	// Named explicitly, the sub-package's service is exposed.
	if _, err := bridge.NewHandler(bridge.WithBackend(conn), bridge.WithExpose("demo.v1.admin.*"), bridge.WithFiles(files)); err != nil {
		t.Fatalf("demo.v1.admin.*: %v", err)
	}
}
