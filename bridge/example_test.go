package bridge_test

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// The bridge as one more handler of an application's own [http.ServeMux]:
// the mux keeps its routes, and the bridge serves the exposed methods at
// their gRPC paths. Here the backend is the demo services on a loopback
// port; an application dials its own service instead.
func ExampleNewHandler_serveMux() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	backend := demo.NewServer()
	go func() { _ = backend.Serve(lis) }()
	defer backend.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	h, err := bridge.NewHandler(
		bridge.WithBackend(conn),
		bridge.WithExpose("demo.v1.TickerService"),
	)
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "hello") })
	// One prefix per exposed service; mux.Handle("/", h) would give the
	// bridge every path the mux's other patterns leave.
	mux.Handle("/demo.v1.TickerService/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Three ticks as Server-Sent Events, as an EventSource reads them.
	resp, err := http.Get(srv.URL + "/demo.v1.TickerService/Watch?symbol=ACME&limit=3&interval_ms=1")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status, resp.Header.Get("Content-Type"))
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		// The data lines hold each tick as JSON, with the time it was made.
		if line := lines.Text(); strings.HasPrefix(line, "id:") || strings.HasPrefix(line, "event:") {
			fmt.Println(line)
		}
	}
	// Output:
	// 200 OK text/event-stream; charset=utf-8
	// event: headers
	// id: 1
	// event: message
	// id: 2
	// event: message
	// id: 3
	// event: message
	// event: end
}

// A schema from a descriptor set instead of the descriptors compiled into
// the program: what `buf build -o services.binpb` writes, for services
// that the program has no generated code for.
func ExampleLoadDescriptorSet() {
	// Here the file is made from the demo's compiled-in descriptors.
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "services.binpb")
	if err := os.WriteFile(path, demoDescriptorSet("demo/v1/ticker.proto", "demo/v1/echo.proto"), 0o600); err != nil {
		log.Fatal(err)
	}

	files, err := bridge.LoadDescriptorSet(path)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(serviceNames(files))

	// NewClient connects when the first call needs it.
	conn, err := grpc.NewClient("dns:///orders.internal:9000", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	h, err := bridge.NewHandler(
		bridge.WithFiles(files),
		bridge.WithBackend(conn),
		bridge.WithExpose("demo.v1.EchoService"),
	)
	if err != nil {
		log.Fatal(err)
	}
	_ = h // serve it: http.ListenAndServe(addr, h)
	// Output:
	// [demo.v1.EchoService demo.v1.TickerService]
}

// A schema from a FileDescriptorSet already in memory, such as one embedded
// with go:embed. Imports that the set leaves out (buf build
// --exclude-imports) resolve against the descriptors compiled into the
// program, but their services are not added: only the set's own can be
// exposed.
func ExampleNewFiles() {
	var set descriptorpb.FileDescriptorSet
	// The resolver parses the bridge's options in the set, rather than
	// keeping them as unknown fields.
	if err := (proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(demoDescriptorSet("demo/v1/chat.proto"), &set); err != nil {
		log.Fatal(err)
	}
	files, err := bridge.NewFiles(&set)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(files.NumFiles(), serviceNames(files))
	// Output:
	// 1 [demo.v1.ChatService]
}

// demoDescriptorSet encodes the named compiled-in files, without their
// imports, as `buf build --exclude-imports -o` does.
func demoDescriptorSet(paths ...string) []byte {
	set := &descriptorpb.FileDescriptorSet{}
	for _, path := range paths {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
		if err != nil {
			log.Fatal(err)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	b, err := proto.Marshal(set)
	if err != nil {
		log.Fatal(err)
	}
	return b
}

// serviceNames lists the services of files, sorted.
func serviceNames(files *protoregistry.Files) []protoreflect.FullName {
	var names []protoreflect.FullName
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			names = append(names, fd.Services().Get(i).FullName())
		}
		return true
	})
	slices.Sort(names)
	return names
}
