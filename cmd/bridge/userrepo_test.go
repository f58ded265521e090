package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUserRepoGenerates is what the README tells a team that bridges its
// own services: a repository of its own (testdata/userrepo) whose proto
// imports bridge/v1/options.proto, vendored with buf export, generates Go
// with its own buf.gen.yaml (managed mode on), and the generated code
// builds, vets and reads the options against this module's gen/bridge/v1.
// It fails when options.proto has no go_package: protoc-gen-go then cannot
// tell the import's Go package.
func TestUserRepoGenerates(t *testing.T) {
	if testing.Short() {
		t.Skip("builds protoc plugins and a scratch module; runs without -short")
	}
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	buf := filepath.Join(root, "tools", "node_modules", ".bin", "buf")
	if _, err := os.Stat(buf); err != nil {
		t.Skipf("the pinned buf is not installed (%v): make generate installs it", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	run := func(dir string, env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), append([]string{"GOWORK=off"}, env...)...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("%s %s: %v", filepath.Base(name), args[0], time.Since(start).Round(time.Millisecond))
		if err != nil {
			t.Fatalf("%s %s (in %s): %v\n%s", filepath.Base(name), strings.Join(args, " "), dir, err, out)
		}
		return string(out)
	}

	repo := t.TempDir()
	if err := os.CopyFS(repo, os.DirFS(filepath.Join("testdata", "userrepo"))); err != nil {
		t.Fatal(err)
	}
	// The README's vendoring step, from this checkout rather than GitHub.
	run(root, nil, buf, "export", ".", "--path", "proto/bridge/v1/options.proto", "-o", filepath.Join(repo, "third_party", "grpcbridge"))
	// The plugins at the versions make generate uses, on PATH as a user
	// installs them.
	bin := t.TempDir()
	run(root, nil, "go", "build", "-modfile=tools/go.mod", "-o", bin+string(filepath.Separator),
		"google.golang.org/protobuf/cmd/protoc-gen-go", "google.golang.org/grpc/cmd/protoc-gen-go-grpc")
	run(repo, []string{"PATH=" + bin + string(filepath.ListSeparator) + os.Getenv("PATH")}, buf, "generate")
	for _, f := range []string{"gen/acme/feed/v1/feed.pb.go", "gen/acme/feed/v1/feed_grpc.pb.go"} {
		if _, err := os.Stat(filepath.Join(repo, f)); err != nil {
			t.Fatalf("buf generate wrote no %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(repo, "gen", "bridge")); err == nil {
		t.Fatal("buf generate wrote Go for the vendored bridge/v1: it would register bridge/v1/options.proto a second time")
	}

	// The user's module takes this one through a replace; go.sum starts
	// from this module's, so that tidy needs nothing this module lacks.
	gomod := "module example.com/acme\n\nrequire github.com/grpcbridge/grpcbridge v0.0.0\n\nreplace github.com/grpcbridge/grpcbridge => " + root + "\n"
	if err := os.WriteFile(filepath.Join(repo, "go.mod"), []byte(gomod), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "go.sum"), sum, 0o600); err != nil {
		t.Fatal(err)
	}
	run(repo, nil, "go", "mod", "tidy")
	run(repo, nil, "go", "vet", "./...")
	got := run(repo, nil, "go", "run", "./cmd/feedcheck")
	want := `acme.feed.v1.FeedService.Watch cursor_field="seq" resume_field="after_seq"
acme.feed.v1.FeedService.Edit cursor_field="" resume_field=""
`
	if got != want {
		t.Fatalf("feedcheck printed\n%s\nwant\n%s", got, want)
	}
}
