package bridge_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

	"github.com/grpcbridge/grpcbridge/bridge"
	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
	"github.com/grpcbridge/grpcbridge/internal/demo"
)

// reflectionTimeout bounds each fetch of these tests, so that a bug fails a
// test instead of hanging it.
const reflectionTimeout = 10 * time.Second

func fetchReflection(t *testing.T, conn grpc.ClientConnInterface) []*descriptorpb.FileDescriptorProto {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), reflectionTimeout)
	defer cancel()
	fdps, err := bridge.FetchReflection(ctx, conn)
	if err != nil {
		t.Fatalf("FetchReflection: %v", err)
	}
	return fdps
}

// serveReflected serves the schema that conn's reflection describes, with
// the expose patterns, until the test ends, and returns the base URL.
func serveReflected(t *testing.T, conn *grpc.ClientConn, expose ...string) string {
	t.Helper()
	files, err := bridge.MergeFiles(fetchReflection(t, conn))
	if err != nil {
		t.Fatalf("MergeFiles: %v", err)
	}
	h, err := bridge.NewHandler(bridge.WithFiles(files), bridge.WithBackend(conn), bridge.WithExpose(expose...))
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// sseIDs GETs url with the Last-Event-ID header (unless empty) and returns
// the ids and data of the message events, joined with ",".
func sseIDs(t *testing.T, url, lastEventID string) (ids, data string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var is, ds []string
	for _, ev := range messages(events(t, resp)) {
		is = append(is, ev.ID)
		ds = append(ds, ev.Data)
	}
	return strings.Join(is, ","), strings.Join(ds, ",")
}

func fileNames(fdps []*descriptorpb.FileDescriptorProto) []string {
	names := make([]string, 0, len(fdps))
	for _, fdp := range fdps {
		names = append(names, fdp.GetName())
	}
	slices.Sort(names)
	return names
}

func TestFetchReflectionServesDemo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		register func(*grpc.Server)
	}{
		{"v1 and v1alpha", func(s *grpc.Server) { reflection.Register(s) }},
		{"v1 only", func(s *grpc.Server) { reflection.RegisterV1(s) }},
		{"v1alpha only", func(s *grpc.Server) {
			reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(reflection.ServerOptions{Services: s}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
				demo.Register(s)
				tc.register(s)
			})
			names := fileNames(fetchReflection(t, conn))
			for _, want := range []string{
				"demo/v1/ticker.proto", "demo/v1/echo.proto", "bridge/v1/options.proto",
				"google/api/annotations.proto", "google/api/http.proto",
				"google/protobuf/descriptor.proto", "google/protobuf/timestamp.proto",
			} {
				if !slices.Contains(names, want) {
					t.Errorf("fetched files %q lack %s", names, want)
				}
			}

			base := serveReflected(t, conn, "demo.v1.*")
			// The ids are the ticks' seq, so (bridge.v1.method) arrived
			// through reflection: default ids would start at 1. The
			// google.api.http path did too.
			if ids, data := sseIDs(t, base+"/v1/tickers/A:watch?after_seq=10&limit=2&interval_ms=1", ""); ids != "11,12" {
				t.Fatalf("ticker ids %q, want 11,12 (the cursor option); data %s", ids, data)
			}
			// And the resume field: Last-Event-ID sets after_seq.
			if ids, data := sseIDs(t, base+"/demo.v1.TickerService/Watch?symbol=A&limit=2&interval_ms=1", "20"); ids != "21,22" || !strings.Contains(data, `"seq":"21"`) {
				t.Fatalf("resumed ticker: ids %q, data %s; want ticks 21 and 22", ids, data)
			}
		})
	}
}

// dynOnly is a descriptor registry that holds dyn/v1/dyn.proto and nothing
// else, as the reflection of a backend whose registry is its own.
func dynOnly(t *testing.T, withCalendar bool) *protoregistry.Files {
	t.Helper()
	files := new(protoregistry.Files)
	if err := files.RegisterFile(bridgetest.DynFile(withCalendar)); err != nil {
		t.Fatal(err)
	}
	return files
}

func TestFetchReflectionWithoutCompiledInDescriptors(t *testing.T) {
	t.Parallel()
	if _, err := protoregistry.GlobalFiles.FindDescriptorByName("dyn.v1.Clock"); err == nil {
		t.Fatal("dyn.v1.Clock is compiled into the test: the test proves nothing")
	}
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		bridgetest.RegisterDyn(s)
		// The registry describes Clock but neither Calendar (whose handler
		// runs all the same) nor the reflection service itself: the fetch
		// leaves out what the backend lists but cannot describe.
		opts := reflection.ServerOptions{Services: s, DescriptorResolver: dynOnly(t, false)}
		reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	})
	fdps := fetchReflection(t, conn)
	if got, want := fileNames(fdps), []string{
		"bridge/v1/options.proto", "dyn/v1/dyn.proto", "google/api/annotations.proto",
		"google/api/http.proto", "google/protobuf/descriptor.proto",
	}; !slices.Equal(got, want) {
		t.Fatalf("fetched %q, want %q", got, want)
	}

	base := serveReflected(t, conn, "dyn.v1.*")
	if ids, data := sseIDs(t, base+"/v1/clock:ticks?count=3", ""); ids != "10,20,30" || !strings.Contains(data, `{"n":"10"}`) {
		t.Fatalf("dyn.v1.Clock/Ticks: ids %q, data %s; want ticks n = 10, 20, 30 with their n as ids", ids, data)
	}
	resp, err := http.Get(base + "/dyn.v1.Calendar/Days?count=1")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("dyn.v1.Calendar, which reflection does not describe: %d, want 404", resp.StatusCode)
	}
}

// sparseReflection answers every file request with that file alone, not its
// imports, and refuses google/api/http.proto, which the bridge then takes
// from its compiled-in copy.
type sparseReflection struct {
	reflectionv1.UnimplementedServerReflectionServer
	mu    sync.Mutex
	asked []string // FileByFilename requests, in order
}

func (s *sparseReflection) ServerReflectionInfo(stream grpc.BidiStreamingServer[reflectionv1.ServerReflectionRequest, reflectionv1.ServerReflectionResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var fd protoreflect.FileDescriptor
		resp := &reflectionv1.ServerReflectionResponse{}
		switch r := req.GetMessageRequest().(type) {
		case *reflectionv1.ServerReflectionRequest_ListServices:
			resp.MessageResponse = &reflectionv1.ServerReflectionResponse_ListServicesResponse{
				ListServicesResponse: &reflectionv1.ListServiceResponse{Service: []*reflectionv1.ServiceResponse{{Name: "dyn.v1.Clock"}}},
			}
		case *reflectionv1.ServerReflectionRequest_FileContainingSymbol:
			fd = bridgetest.DynFile(false)
		case *reflectionv1.ServerReflectionRequest_FileByFilename:
			s.mu.Lock()
			s.asked = append(s.asked, r.FileByFilename)
			s.mu.Unlock()
			if r.FileByFilename != "google/api/http.proto" {
				fd, _ = protoregistry.GlobalFiles.FindFileByPath(r.FileByFilename)
			}
			if fd == nil {
				resp.MessageResponse = &reflectionv1.ServerReflectionResponse_ErrorResponse{
					ErrorResponse: &reflectionv1.ErrorResponse{ErrorCode: int32(codes.NotFound), ErrorMessage: "no such file"},
				}
			}
		default:
			return status.Error(codes.Unimplemented, "not in this test")
		}
		if fd != nil {
			b, err := proto.Marshal(protodesc.ToFileDescriptorProto(fd))
			if err != nil {
				return err
			}
			resp.MessageResponse = &reflectionv1.ServerReflectionResponse_FileDescriptorResponse{
				FileDescriptorResponse: &reflectionv1.FileDescriptorResponse{FileDescriptorProto: [][]byte{b}},
			}
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func TestFetchReflectionAsksForMissingImports(t *testing.T) {
	t.Parallel()
	refl := &sparseReflection{}
	conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
		bridgetest.RegisterDyn(s)
		reflectionv1.RegisterServerReflectionServer(s, refl)
	})
	if got, want := fileNames(fetchReflection(t, conn)), []string{
		"bridge/v1/options.proto", "dyn/v1/dyn.proto", "google/api/annotations.proto", "google/protobuf/descriptor.proto",
	}; !slices.Equal(got, want) {
		t.Fatalf("fetched %q, want %q", got, want)
	}
	refl.mu.Lock()
	asked := refl.asked
	refl.mu.Unlock()
	// Each import once, level by level; http.proto is refused.
	if want := []string{
		"bridge/v1/options.proto", "google/api/annotations.proto",
		"google/api/http.proto", "google/protobuf/descriptor.proto",
	}; !slices.Equal(asked, want) {
		t.Fatalf("asked for %q, want %q", asked, want)
	}
	base := serveReflected(t, conn, "dyn.v1.Clock")
	if ids, data := sseIDs(t, base+"/v1/clock:ticks?count=2", ""); ids != "10,20" {
		t.Fatalf("ids %q, want 10,20; data %s", ids, data)
	}
}

func TestFetchReflectionErrors(t *testing.T) {
	t.Parallel()
	t.Run("no reflection", func(t *testing.T) {
		t.Parallel()
		conn := bridgetest.NewBackend(t, func(s *grpc.Server) { demo.Register(s) })
		_, err := bridge.FetchReflection(t.Context(), conn)
		if !errors.Is(err, bridge.ErrNoReflection) || !strings.Contains(err.Error(), "grpc.reflection.v1alpha") {
			t.Fatalf("FetchReflection = %v, want ErrNoReflection", err)
		}
	})
	t.Run("backend never answers", func(t *testing.T) {
		t.Parallel()
		conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
			reflectionv1.RegisterServerReflectionServer(s, silentReflection{})
		})
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := bridge.FetchReflection(ctx, conn)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("FetchReflection = %v, want DEADLINE_EXCEEDED", err)
		}
	})
	t.Run("error answer", func(t *testing.T) {
		t.Parallel()
		conn := bridgetest.NewBackend(t, func(s *grpc.Server) {
			reflectionv1.RegisterServerReflectionServer(s, failingReflection{})
		})
		_, err := bridge.FetchReflection(t.Context(), conn)
		if err == nil || !strings.Contains(err.Error(), "list services: backend answered PermissionDenied: not for you") {
			t.Fatalf("FetchReflection = %v, want the backend's error answer", err)
		}
	})
}

// silentReflection reads requests and never answers.
type silentReflection struct {
	reflectionv1.UnimplementedServerReflectionServer
}

func (silentReflection) ServerReflectionInfo(stream grpc.BidiStreamingServer[reflectionv1.ServerReflectionRequest, reflectionv1.ServerReflectionResponse]) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// failingReflection answers every request with an error answer.
type failingReflection struct {
	reflectionv1.UnimplementedServerReflectionServer
}

func (failingReflection) ServerReflectionInfo(stream grpc.BidiStreamingServer[reflectionv1.ServerReflectionRequest, reflectionv1.ServerReflectionResponse]) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
		if err := stream.Send(&reflectionv1.ServerReflectionResponse{
			MessageResponse: &reflectionv1.ServerReflectionResponse_ErrorResponse{
				ErrorResponse: &reflectionv1.ErrorResponse{ErrorCode: int32(codes.PermissionDenied), ErrorMessage: "not for you"},
			},
		}); err != nil {
			return err
		}
	}
}

func fileProto(fd protoreflect.FileDescriptor) *descriptorpb.FileDescriptorProto {
	return protodesc.ToFileDescriptorProto(fd)
}

func compiledIn(t *testing.T, path string) *descriptorpb.FileDescriptorProto {
	t.Helper()
	fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileProto(fd)
}

func TestMergeFiles(t *testing.T) {
	t.Parallel()
	ticker := func() []*descriptorpb.FileDescriptorProto {
		return []*descriptorpb.FileDescriptorProto{compiledIn(t, "demo/v1/ticker.proto"), compiledIn(t, "google/protobuf/timestamp.proto")}
	}

	t.Run("identical duplicates", func(t *testing.T) {
		t.Parallel()
		files, err := bridge.MergeFiles(ticker(), ticker(), []*descriptorpb.FileDescriptorProto{fileProto(bridgetest.DynFile(true))})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []protoreflect.FullName{"demo.v1.TickerService", "dyn.v1.Calendar", "google.protobuf.Timestamp"} {
			if _, err := files.FindDescriptorByName(name); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})

	t.Run("conflicting definitions", func(t *testing.T) {
		t.Parallel()
		_, err := bridge.MergeFiles(
			ticker(),
			[]*descriptorpb.FileDescriptorProto{fileProto(bridgetest.DynFile(false))},
			[]*descriptorpb.FileDescriptorProto{fileProto(bridgetest.DynFile(true))},
		)
		if err == nil || !strings.Contains(err.Error(), "dyn/v1/dyn.proto differs between sets 2 and 3") {
			t.Fatalf("MergeFiles = %v, want the conflict on dyn/v1/dyn.proto", err)
		}
	})

	t.Run("conflict on a compiled-in file", func(t *testing.T) {
		t.Parallel()
		// A backend built with another protobuf release: its timestamp.proto
		// differs from the other backend's. The compiled-in copy stands in.
		other := compiledIn(t, "google/protobuf/timestamp.proto")
		other.MessageType = append(other.MessageType, &descriptorpb.DescriptorProto{Name: proto.String("Newer")})
		files, err := bridge.MergeFiles(ticker(), []*descriptorpb.FileDescriptorProto{other, compiledIn(t, "demo/v1/echo.proto")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := files.FindFileByPath("google/protobuf/timestamp.proto"); !errors.Is(err, protoregistry.NotFound) {
			t.Fatalf("timestamp.proto in the merged schema: %v; want it left to the compiled-in copy", err)
		}
		if _, err := files.FindDescriptorByName("demo.v1.TickerService"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("conflict on a compiled-in file with services", func(t *testing.T) {
		t.Parallel()
		// Its services would vanish with it: a conflict like any other.
		other := compiledIn(t, "demo/v1/echo.proto")
		other.MessageType = append(other.MessageType, &descriptorpb.DescriptorProto{Name: proto.String("Newer")})
		_, err := bridge.MergeFiles([]*descriptorpb.FileDescriptorProto{compiledIn(t, "demo/v1/echo.proto")}, []*descriptorpb.FileDescriptorProto{other})
		if err == nil || !strings.Contains(err.Error(), "demo/v1/echo.proto differs between sets 1 and 2") {
			t.Fatalf("MergeFiles = %v, want the conflict on demo/v1/echo.proto", err)
		}
	})

	t.Run("unresolvable import", func(t *testing.T) {
		t.Parallel()
		broken := fileProto(bridgetest.DynFile(false))
		broken.Dependency = append(broken.Dependency, "nowhere/missing.proto")
		_, err := bridge.MergeFiles([]*descriptorpb.FileDescriptorProto{broken})
		if err == nil || !strings.Contains(err.Error(), "dyn/v1/dyn.proto") || !strings.Contains(err.Error(), "nowhere/missing.proto") {
			t.Fatalf("MergeFiles = %v, want an error naming the file and its missing import", err)
		}
	})
}
