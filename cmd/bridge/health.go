package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// readiness answers /readyz: ready when the bridge is not draining and
// every backend connection is usable, so that a load balancer sends new
// streams only to replicas that can serve them.
type readiness struct {
	backends []namedConn
	draining atomic.Bool
}

type namedConn struct {
	name string
	conn *grpc.ClientConn
}

func (rd *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
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
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %s\n", strings.Join(problems, "; "))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
