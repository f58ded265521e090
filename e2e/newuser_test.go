package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/grpcbridge/grpcbridge/internal/bridgetest"
)

// newUserTimeout bounds the whole of TestNewUser: building the user's
// repository (buf, npm, go), the processes and every client.
const newUserTimeout = 8 * time.Minute

// TestNewUser is a new user's first day, done as the README says, from a
// repository outside this module (testdata/newuser, copied to a temporary
// directory): their own acme.feed.v1 proto, with a server-streaming Watch
// (SSE cursor and resume options, a google.api.http get rule) and a bidi
// Chat; options.proto and google/api vendored with buf export; Go and
// TypeScript generated with the buf.yaml and buf.gen.yaml taken from the
// README's code blocks, so that the README cannot drift from what works; a grpc-go backend with
// server reflection built in their own module. The bridge runs with flags
// only (-backend, -expose, -addr; no config file, no -descriptors), takes
// the schema by reflection, and is reached with curl (SSE, resume, the
// annotated path, an unexposed method refused), a Go WebSocket client
// speaking grpc-ws.v1, grpcurl (list and call) and the packed npm client in
// Chromium. It needs npm and its registry, so only make newuser
// (BRIDGE_NEW_USER=1) runs it.
func TestNewUser(t *testing.T) {
	if os.Getenv("BRIDGE_NEW_USER") != "1" {
		t.Skip("needs npm, its registry and the pinned buf: make newuser runs it (BRIDGE_NEW_USER=1)")
	}
	browserCtx := newBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), newUserTimeout)
	defer cancel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	buf := filepath.Join(root, "tools", "node_modules", ".bin", "buf")
	if _, err := os.Stat(buf); err != nil {
		t.Fatalf("the pinned buf is not installed (%v): make newuser installs it", err)
	}
	tmp := t.TempDir()
	repo := filepath.Join(tmp, "acme")
	if err := os.CopyFS(repo, os.DirFS(filepath.Join("testdata", "newuser"))); err != nil {
		t.Fatal(err)
	}

	// The README's buf.yaml and buf.gen.yaml, as they are written there.
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"buf.yaml", "buf.gen.yaml"} {
		writeFile(t, filepath.Join(repo, name), readmeBlock(t, string(readme), "yaml", "# "+name))
	}
	// README, "Per-method options": vendor options.proto, and google/api
	// for the http rule, with buf export (from this checkout, not GitHub).
	run(ctx, t, root, buf, "export", ".", "--path", "proto/bridge/v1/options.proto",
		"--path", "third_party/googleapis/google/api/annotations.proto", "-o", filepath.Join(repo, "third_party", "grpcbridge"))
	// The Go plugins at the versions make generate uses, on PATH as a user
	// installs them; protoc-gen-es from npm in the page's project, next to
	// the packed client.
	plugins := filepath.Join(tmp, "bin")
	run(ctx, t, root, "go", "build", "-modfile=tools/go.mod", "-o", plugins+string(filepath.Separator),
		"google.golang.org/protobuf/cmd/protoc-gen-go", "google.golang.org/grpc/cmd/protoc-gen-go-grpc")
	web := filepath.Join(repo, "web")
	installClient(ctx, t, web, packClient(ctx, t, tmp), "@bufbuild/protoc-gen-es@"+webPins(t).DevDependencies["@bufbuild/protoc-gen-es"])
	runEnv(ctx, t, repo, []string{"PATH=" + plugins + string(filepath.ListSeparator) + os.Getenv("PATH")}, buf, "generate")

	// The backend in the user's module: go mod init, and the bridge's
	// module (for gen/bridge/v1, which the generated Go imports) replaced
	// by this checkout; go.sum starts from this module's, so that tidy
	// needs nothing this module lacks.
	goEnv := []string{"GOWORK=off"}
	runEnv(ctx, t, repo, goEnv, "go", "mod", "init", "example.com/acme")
	runEnv(ctx, t, repo, goEnv, "go", "mod", "edit", "-require=github.com/grpcbridge/grpcbridge@v0.0.0", "-replace=github.com/grpcbridge/grpcbridge="+root)
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(repo, "go.sum"), string(sum))
	runEnv(ctx, t, repo, goEnv, "go", "mod", "tidy")
	backendBin := filepath.Join(tmp, "feed-backend")
	runEnv(ctx, t, repo, goEnv, "go", "build", "-o", backendBin, "./backend")

	// The page: type-checked with the generated types, bundled.
	run(ctx, t, web, filepath.Join(web, "node_modules", ".bin", "tsc"), "-p", "tsconfig.json")
	site := filepath.Join(tmp, "site")
	bundlePage(ctx, t, web, "src/app.ts", site, "app.js")

	// The backend on a port of its choosing, then the bridge, with the
	// README's flags and an -allow-origin for the page's origin.
	backend := startProcess(t, tmp, "backend", backendBin, "-addr", "127.0.0.1:0")
	var backendAddr string
	backend.waitFor(t, 10*time.Second, func() bool {
		line, _, complete := strings.Cut(backend.log(), "\n")
		var found bool
		backendAddr, found = strings.CutPrefix(line, "listening on ")
		return complete && found
	})
	page := httptest.NewServer(http.FileServer(http.Dir(site)))
	t.Cleanup(page.Close)
	addr := freeAddr(ctx, t)
	runBridge(t, buildBridge(ctx, t, tmp), tmp, addr,
		"-backend", backendAddr, "-expose", "acme.feed.v1.*", "-addr", addr, "-allow-origin", page.URL)
	origin := "http://" + addr

	t.Run("curl", func(t *testing.T) { newUserCurl(ctx, t, origin) })
	t.Run("websocket", func(t *testing.T) { newUserWebSocket(ctx, t, addr) })
	t.Run("grpcurl", func(t *testing.T) { newUserGrpcurl(ctx, t, addr, filepath.Join(repo, "proto")) })
	t.Run("browser", func(t *testing.T) {
		tab := newTab(t, browserCtx, page.URL+"/?bridge="+url.QueryEscape(origin))
		tab.wait(`window.demo.done`)
		var got struct {
			Watch struct {
				Seqs   []int    `json:"seqs"`
				IDs    []string `json:"ids"`
				Texts  []string `json:"texts"`
				Status *struct {
					Code int `json:"code"`
				} `json:"status"`
			} `json:"watch"`
			Chat struct {
				Texts  []string `json:"texts"`
				Status *struct {
					Code int `json:"code"`
				} `json:"status"`
			} `json:"chat"`
			Failure string `json:"failure"`
		}
		tab.eval(`window.demo`, &got)
		if got.Failure != "" {
			t.Fatalf("the page failed: %s (watch %+v)", got.Failure, got.Watch)
		}
		if !slices.Equal(got.Watch.Seqs, []int{10, 20, 30}) || !slices.Equal(got.Watch.IDs, []string{"10", "20", "30"}) ||
			!slices.Equal(got.Watch.Texts, []string{"item 10 of news", "item 20 of news", "item 30 of news"}) || got.Watch.Status == nil || got.Watch.Status.Code != 0 {
			t.Errorf("watch: %+v; want items 10, 20, 30 of news with their seq as the event id, and OK", got.Watch)
		}
		if !slices.Equal(got.Chat.Texts, []string{"ada: hello", "ada: bye"}) || got.Chat.Status == nil || got.Chat.Status.Code != 0 {
			t.Errorf("chat: %q, status %+v; want both answers and OK", got.Chat.Texts, got.Chat.Status)
		}
	})
}

// readmeBlock returns the code block of the README in language lang whose
// first line is first, without the indentation of its fence.
func readmeBlock(t *testing.T, readme, lang, first string) string {
	t.Helper()
	lines := strings.Split(readme, "\n")
	for i := 0; i+1 < len(lines); i++ {
		indent, ok := strings.CutSuffix(lines[i], "```"+lang)
		if !ok || strings.TrimSpace(indent) != "" || lines[i+1] != indent+first {
			continue
		}
		var b strings.Builder
		for _, line := range lines[i+1:] {
			if line == indent+"```" {
				return b.String()
			}
			b.WriteString(strings.TrimPrefix(line, indent) + "\n")
		}
	}
	t.Fatalf("the README has no ```%s block that starts with %q", lang, first)
	return ""
}

// newUserCurl reads the Watch stream with curl, as the README's "Try it"
// does for the demo: the items' seq as event ids, a resume with
// Last-Event-ID, the google.api.http path; and an unexposed method refused.
func newUserCurl(ctx context.Context, t *testing.T, origin string) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl on PATH (apt-get install curl): the curl part is not checked")
	}
	curlOut := func(args ...string) []byte {
		t.Helper()
		return run(ctx, t, ".", curl, append([]string{"-sS", "--max-time", "20"}, args...)...)
	}
	// events returns the ids and feed names of the stream's messages, and
	// the code of its end event (-1 when there is none).
	events := func(stream []byte) (ids, feeds []string, end int) {
		t.Helper()
		end = -1
		r := bridgetest.NewSSEReader(bytes.NewReader(stream))
		for {
			ev, err := r.Next()
			if err != nil {
				return ids, feeds, end
			}
			var data struct {
				Seq  string `json:"seq"`
				Feed string `json:"feed"`
				Code *int   `json:"code"`
			}
			switch ev.Type {
			case "message":
				if err := json.Unmarshal([]byte(ev.Data), &data); err != nil || data.Seq != ev.ID {
					t.Errorf("event %q: data %s (%v); want the item, whose seq is the id", ev.ID, ev.Data, err)
				}
				ids, feeds = append(ids, ev.ID), append(feeds, data.Feed)
			case "end":
				if err := json.Unmarshal([]byte(ev.Data), &data); err != nil || data.Code == nil {
					t.Errorf("end event %s: %v", ev.Data, err)
				} else {
					end = *data.Code
				}
			}
		}
	}
	// The item's seq (10, 20, ...) is the event id: the cursor option came
	// with the schema from the backend's reflection.
	watch := origin + "/acme.feed.v1.Feed/Watch?feed=news&limit=3"
	if ids, feeds, end := events(curlOut("-N", "-H", "Accept: text/event-stream", watch)); !slices.Equal(ids, []string{"10", "20", "30"}) || !slices.Equal(feeds, []string{"news", "news", "news"}) || end != 0 {
		t.Errorf("curl -N %s: ids %q of feeds %q, end %d; want 10, 20, 30 of news and an end event with code 0", watch, ids, feeds, end)
	}
	// The README's resume, and its h2c.
	if ids, _, end := events(curlOut("-N", "-H", "Last-Event-ID: 20", watch)); !slices.Equal(ids, []string{"30", "40", "50"}) || end != 0 {
		t.Errorf("curl -N -H 'Last-Event-ID: 20' %s: ids %q, end %d; want 30, 40, 50 (after_seq from the id) and code 0", watch, ids, end)
	}
	if ids, _, end := events(curlOut("-N", "--http2-prior-knowledge", watch)); !slices.Equal(ids, []string{"10", "20", "30"}) || end != 0 {
		t.Errorf("curl -N --http2-prior-knowledge %s: ids %q, end %d; want 10, 20, 30 and code 0", watch, ids, end)
	}
	annotated := origin + "/v1/feeds/sports:watch?limit=2"
	if ids, feeds, end := events(curlOut("-N", annotated)); !slices.Equal(ids, []string{"10", "20"}) || !slices.Equal(feeds, []string{"sports", "sports"}) || end != 0 {
		t.Errorf("curl -N %s: ids %q of feeds %q, end %d; want 10, 20 of sports (the feed from the path) and code 0", annotated, ids, feeds, end)
	}
	// The backend serves acme.admin.v1.Admin too, which is not exposed.
	purge := origin + "/acme.admin.v1.Admin/Purge"
	if got := string(curlOut("-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/json", "-d", `{"feed":"news"}`, purge)); got != "404" {
		t.Errorf("curl -d ... %s: HTTP %s; want 404, as it is not exposed", purge, got)
	}
}

// newUserWebSocket chats over a WebSocket with grpc-ws.v1 from Go
// (docs/protocol.md): two binary messages and an end frame, then the
// headers frame, both answers, the status frame and a normal close.
func newUserWebSocket(ctx context.Context, t *testing.T, addr string) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	dialer := websocket.Dialer{Subprotocols: []string{"grpc-ws.v1"}, HandshakeTimeout: 10 * time.Second}
	conn, resp, err := dialer.DialContext(ctx, "ws://"+addr+"/acme.feed.v1.Feed/Chat", nil)
	if err != nil {
		t.Fatalf("dial Chat: %v (response %v)", err, resp)
	}
	defer conn.Close()
	if conn.Subprotocol() != "grpc-ws.v1" {
		t.Fatalf("subprotocol %q; want grpc-ws.v1", conn.Subprotocol())
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	_ = conn.SetWriteDeadline(deadline)
	for _, text := range []string{"hello", "bye"} {
		if err := conn.WriteMessage(websocket.BinaryMessage, chatMessage("grace", text)); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"end":true}`)); err != nil {
		t.Fatal(err)
	}
	var frames, answers []string
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Errorf("after frames %q: %v; want a close with 1000", frames, err)
			}
			break
		}
		switch kind {
		case websocket.BinaryMessage:
			user, text, err := parseChatMessage(data)
			if err != nil {
				t.Errorf("binary frame %x: %v", data, err)
			}
			answers = append(answers, user+"|"+text)
			frames = append(frames, "message")
		case websocket.TextMessage:
			var control map[string]json.RawMessage
			if err := json.Unmarshal(data, &control); err != nil {
				t.Errorf("text frame %s: %v", data, err)
			}
			switch {
			case control["headers"] != nil:
				frames = append(frames, "headers")
			case control["status"] != nil:
				var st struct {
					Code *int `json:"code"`
				}
				if err := json.Unmarshal(control["status"], &st); err != nil || st.Code == nil || *st.Code != 0 || control["trailers"] == nil {
					t.Errorf("status frame %s; want code 0 and trailers", data)
				}
				frames = append(frames, "status")
			default:
				t.Errorf("text frame %s: neither headers nor status", data)
			}
		}
	}
	if !slices.Equal(frames, []string{"headers", "message", "message", "status"}) {
		t.Errorf("frames %q; want headers, two messages, status", frames)
	}
	if !slices.Equal(answers, []string{"feed|grace: hello", "feed|grace: bye"}) {
		t.Errorf("answers %q; want both messages answered in order", answers)
	}
}

// chatMessage encodes acme.feed.v1.ChatMessage{user, text}: the test's Go
// has no generated code of the user's proto, so it writes the wire format.
func chatMessage(user, text string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, user)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendString(b, text)
}

// parseChatMessage decodes acme.feed.v1.ChatMessage.
func parseChatMessage(b []byte) (user, text string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", "", protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeString(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			user = v
		case 2:
			text = v
		}
	}
	return user, text, nil
}

// newUserGrpcurl lists and calls the bridge with grpcurl over cleartext
// HTTP/2 (no flag needed): the list shows the exposed service and not the
// backend's unexposed one; Watch streams; Admin, called with its schema
// from the user's protos, is refused by the bridge.
func newUserGrpcurl(ctx context.Context, t *testing.T, addr, protos string) {
	grpcurl := os.Getenv("GRPCURL")
	if grpcurl == "" {
		var err error
		if grpcurl, err = exec.LookPath("grpcurl"); err != nil {
			t.Skip("no grpcurl: set GRPCURL or put it on PATH (.ci/run installs v1.9.4): the grpcurl part is not checked")
		}
	}
	grpcurlOut := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, grpcurl, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("grpcurl %q did not finish within 20 s: %s", args, out)
		}
		return string(out), err
	}
	out, err := grpcurlOut(addr, "list")
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	var services []string
	for s := bufio.NewScanner(strings.NewReader(out)); s.Scan(); {
		services = append(services, s.Text())
	}
	// The exposed service and the bridge's own health and reflection; not
	// the backend's Admin, which its reflection lists too.
	want := []string{"acme.feed.v1.Feed", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
	if !slices.Equal(services, want) {
		t.Errorf("grpcurl list: %q; want %q, without the unexposed acme.admin.v1.Admin", services, want)
	}
	out, err = grpcurlOut("-d", `{"feed":"news","limit":2}`, addr, "acme.feed.v1.Feed/Watch")
	if err != nil || !strings.Contains(out, `"seq": "10"`) || !strings.Contains(out, `"seq": "20"`) || !strings.Contains(out, `"text": "item 20 of news"`) {
		t.Errorf("grpcurl acme.feed.v1.Feed/Watch: %v\n%s\nwant items 10 and 20 of news", err, out)
	}
	if out, err := grpcurlOut("-import-path", protos, "-proto", "acme/admin/v1/admin.proto", "-d", `{"feed":"news"}`, addr, "acme.admin.v1.Admin/Purge"); err == nil || !strings.Contains(out, "Code: Unimplemented") || !strings.Contains(out, "/acme.admin.v1.Admin/Purge") {
		t.Errorf("grpcurl acme.admin.v1.Admin/Purge: %v\n%s\nwant Unimplemented naming the method, as it is not exposed", err, out)
	}
}
