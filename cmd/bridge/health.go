package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// readiness answers /readyz: ready when the bridge is not draining and
// every backend connection is usable, so that a load balancer sends new
// streams only to replicas that can serve them. The public port gets the
// verdict only; the reasons, which name backends, go to the admin listener
// and to the log.
type readiness struct {
	backends []namedConn
	draining atomic.Bool
	log      *slog.Logger // nil: no log of changes

	mu   sync.Mutex
	last string // the reasons the last probe found, "" when ready
}

type namedConn struct {
	name string
	conn *grpc.ClientConn
}

// problems returns why the bridge is not ready, none when it is, and logs
// the reasons at Info when they differ from the last probe's.
func (rd *readiness) problems() []string {
	var problems []string
	if rd.draining.Load() {
		problems = append(problems, "draining")
	}
	for _, b := range rd.backends {
		switch st := b.conn.GetState(); st {
		case connectivity.Ready:
		case connectivity.Idle:
			// Idle connects on demand; ask it to, so the next probe can
			// tell whether the backend is there.
			b.conn.Connect()
			problems = append(problems, fmt.Sprintf("backend %s: connecting", b.name))
		default:
			problems = append(problems, fmt.Sprintf("backend %s: %s", b.name, strings.ToLower(st.String())))
		}
	}
	reasons := strings.Join(problems, "; ")
	rd.mu.Lock()
	changed := reasons != rd.last
	rd.last = reasons
	rd.mu.Unlock()
	if changed && rd.log != nil {
		rd.log.Info("readiness changed", slog.Bool("ready", reasons == ""), slog.String("reasons", reasons))
	}
	return problems
}

// handler returns the /readyz handler: 200 "ready", or 503 "not ready",
// followed by the reasons when detailed.
func (rd *readiness) handler(detailed bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		problems := rd.problems()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case len(problems) == 0:
			_, _ = w.Write([]byte("ready\n"))
		case detailed:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %s\n", strings.Join(problems, "; "))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
		}
	})
}

// serveHealthz answers /healthz: alive whenever the process serves HTTP,
// whatever the backends do, so that a backend outage never restarts the
// bridge.
func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}
