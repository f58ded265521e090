package main

import (
	"context"
	"runtime/debug"
	"time"
)

// Memory reclaiming after a mass disconnect: when most streams end at once
// (clients leave, a load balancer moves them), nothing allocates any more,
// so no GC runs until the runtime's forced one two minutes later, and the
// freed memory stays with the process. Returning it promptly keeps RSS
// honest for the orchestrator's memory accounting and autoscaling.
const (
	reclaimInterval   = 5 * time.Second
	reclaimMinStreams = 1000 // below this, the memory at stake is small
)

// reclaimer decides when to return freed memory to the OS: when the number
// of active streams fell to half of its peak since the last reclaim.
type reclaimer struct {
	peak int
}

// observe takes the current number of streams and reports whether to
// reclaim now.
func (r *reclaimer) observe(active int) bool {
	if active > r.peak {
		r.peak = active
		return false
	}
	if r.peak >= reclaimMinStreams && active <= r.peak/2 {
		r.peak = active
		return true
	}
	return false
}

// reclaimMemory polls active every reclaimInterval until ctx ends and
// frees OS memory after a mass disconnect.
func reclaimMemory(ctx context.Context, active func() int) {
	t := time.NewTicker(reclaimInterval)
	defer t.Stop()
	var r reclaimer
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if r.observe(active()) {
				// Twice: sync.Pool keeps its objects through one GC (the
				// victim cache), and the servers' pooled buffers are many.
				debug.FreeOSMemory()
				debug.FreeOSMemory()
			}
		}
	}
}
