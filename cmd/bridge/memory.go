package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory reclaiming after a mass disconnect: when most streams end at once
// (clients leave, a load balancer moves them), nothing allocates any more,
// so no GC runs until the runtime's forced one two minutes later, and the
// freed memory stays with the process. Returning it promptly keeps RSS
// honest for the orchestrator's memory accounting and autoscaling.
//
// The reclaimer looks every reclaimInterval at a few counters that cost a
// mutex and a runtime/metrics read (no stop-the-world, no allocation),
// never at the per-message path. Two signals, because a poll alone misses
// a burst that opens and ends between two looks:
//
//   - the streams: the live count fell to half of its peak (of at least
//     reclaimMinStreams) since the last reclaim, and then settled: two
//     looks in a row without a further fall (or reclaimMaxWait after the
//     fall to half, if it keeps falling). Reclaiming in the middle of the
//     fall would leave the rest of it, whose peak is small, to the
//     runtime's forced GC minutes later;
//   - the goroutines and the heap, for what the poll did not see: since
//     the last reclaim at least reclaimMinExits goroutines ended, more
//     than are alive now (the population turned over, so the cost of a
//     forced GC, which grows with what is alive, is paid once per
//     turnover at most), the heap holds at least reclaimMinHeap more than
//     it did right after the last reclaim, and the process is quiet: it
//     allocated less than reclaimQuietBytes since the last look. A busy
//     process collects by itself; a quiet one would keep the garbage.
const (
	reclaimInterval   = 250 * time.Millisecond
	reclaimMinStreams = 1000     // below this, the memory at stake is small
	reclaimMinExits   = 2000     // two goroutines per stream: 1,000 streams
	reclaimMinHeap    = 32 << 20 // heap growth worth a forced GC
	reclaimQuietBytes = 4 << 20  // allocated in one interval: 16 MiB/s
	reclaimMaxWait    = 8        // looks (2 s) a fall to half may go on before a reclaim
)

// memSample is what the reclaimer looks at, once an interval.
type memSample struct {
	streams    int    // live streams (bridge.Handler.ActiveStreams)
	goroutines uint64 // /sched/goroutines:goroutines
	created    uint64 // /sched/goroutines-created:goroutines, cumulative
	allocs     uint64 // /gc/heap/allocs:bytes, cumulative
	heap       uint64 // /memory/classes/heap/objects:bytes, garbage included
}

// reclaimer decides when to return freed memory to the OS; see above.
type reclaimer struct {
	started    bool
	prev       memSample
	peak       int    // the streams' peak since the last reclaim
	falling    int    // looks since the streams fell to half of peak; 0: they did not
	settled    int    // looks in a row since then without a further fall
	exited     uint64 // goroutines that ended since the last reclaim
	heapAtBase uint64 // the heap right after the last reclaim (or at the start)
}

// observe takes the next sample and reports whether to reclaim now.
func (r *reclaimer) observe(s memSample) bool {
	if !r.started {
		r.started, r.prev, r.peak, r.heapAtBase = true, s, s.streams, s.heap
		return false
	}
	// Goroutines created in the interval, less the growth of the live
	// count, ended in it (unsigned arithmetic wraps right when the count
	// fell).
	r.exited += s.created - r.prev.created - (s.goroutines - r.prev.goroutines)
	quiet := s.allocs-r.prev.allocs < reclaimQuietBytes
	prevStreams := r.prev.streams
	r.prev = s
	r.peak = max(r.peak, s.streams)

	if r.falling == 0 && r.peak >= reclaimMinStreams && s.streams <= r.peak/2 {
		r.falling = 1 // this look; the fall may not be over
	} else if r.falling > 0 {
		r.falling++
		if s.streams >= prevStreams {
			r.settled++
		} else {
			r.settled = 0
		}
	}
	streamsLeft := r.falling > 0 && (r.settled >= 2 || r.falling > reclaimMaxWait)
	turnedOver := quiet && r.exited >= reclaimMinExits && r.exited > s.goroutines &&
		s.heap >= r.heapAtBase+reclaimMinHeap
	if !streamsLeft && !turnedOver {
		return false
	}
	r.peak, r.exited, r.falling, r.settled = s.streams, 0, 0, 0
	return true
}

// reclaimed records the heap right after a reclaim: the base that later
// growth is measured from.
func (r *reclaimer) reclaimed(heap uint64) { r.heapAtBase = heap }

// memSampler reads a memSample; its buffer is reused, so a read allocates
// nothing.
type memSampler struct {
	active func() int
	m      []metrics.Sample
}

func newMemSampler(active func() int) *memSampler {
	names := []string{
		"/sched/goroutines:goroutines",
		"/sched/goroutines-created:goroutines",
		"/gc/heap/allocs:bytes",
		"/memory/classes/heap/objects:bytes",
	}
	m := make([]metrics.Sample, len(names))
	for i, n := range names {
		m[i].Name = n
	}
	return &memSampler{active: active, m: m}
}

func (ms *memSampler) sample() memSample {
	metrics.Read(ms.m)
	u := func(i int) uint64 {
		if ms.m[i].Value.Kind() != metrics.KindUint64 {
			return 0 // a metric this runtime does not have: that signal stays off
		}
		return ms.m[i].Value.Uint64()
	}
	return memSample{streams: ms.active(), goroutines: u(0), created: u(1), allocs: u(2), heap: u(3)}
}

// freeOSMemory returns freed memory to the OS. Twice: sync.Pool keeps its
// objects through one GC (the victim cache), and the servers' pooled
// buffers are many.
func freeOSMemory() {
	debug.FreeOSMemory()
	debug.FreeOSMemory()
}

// reclaimMemory looks at the process every reclaimInterval until ctx ends
// and frees OS memory after a mass disconnect.
func reclaimMemory(ctx context.Context, active func() int) {
	t := time.NewTicker(reclaimInterval)
	defer t.Stop()
	reclaimLoop(ctx, t.C, newMemSampler(active).sample, freeOSMemory)
}

// reclaimLoop is reclaimMemory with its clock, its readings and its
// action as seams, for the tests.
func reclaimLoop(ctx context.Context, ticks <-chan time.Time, sample func() memSample, free func()) {
	var r reclaimer
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			if r.observe(sample()) {
				free()
				r.reclaimed(sample().heap)
			}
		}
	}
}
