package main

import (
	"context"
	"runtime/metrics"
	"testing"
	"time"
)

const testMiB = 1 << 20

func TestReclaimerFiresAfterAMassDisconnect(t *testing.T) {
	t.Parallel()
	var r reclaimer
	for _, step := range []struct {
		active int
		want   bool
	}{
		{0, false},
		{600, false},
		{400, false},   // a peak under 1,000 streams is not worth a GC
		{10000, false}, // the peak
		{7000, false},  // down, but not by half
		{4000, false},  // under half of the peak, but still falling
		{3000, false},  // falling
		{3000, false},  // settled once
		{3000, true},   // settled twice: reclaim
		{1000, false},  // the peak is now 3,000: under half, falling
		{0, false},     // falling
		{0, false},     // settled once
		{0, true},      // reclaim
		{500, false},   // the peak, 500, is too small to matter
		{0, false},
		{0, false},
		{0, false},
	} {
		if got := r.observe(memSample{streams: step.active}); got != step.want {
			t.Fatalf("observe(%d streams) = %v, want %v (peak %d)", step.active, got, step.want, r.peak)
		}
	}
}

// A fall that goes on does not hold the reclaim back for ever.
func TestReclaimerFiresDuringALongFall(t *testing.T) {
	t.Parallel()
	var r reclaimer
	r.observe(memSample{streams: 10000})
	streams := 5000 // half: the fall begins
	for look := 1; ; look++ {
		fired := r.observe(memSample{streams: streams})
		if fired {
			if look != reclaimMaxWait+1 {
				t.Fatalf("reclaimed at look %d of the fall, want %d", look, reclaimMaxWait+1)
			}
			return
		}
		if look > reclaimMaxWait+1 {
			t.Fatalf("no reclaim after %d looks of a steady fall", look)
		}
		streams -= 100
	}
}

// A burst that opens and ends between two looks leaves no trace in the
// stream count; the goroutines that ended and the heap that grew tell it.
func TestReclaimerFiresAfterABurstItNeverSaw(t *testing.T) {
	t.Parallel()
	var r reclaimer
	base := memSample{goroutines: 20, created: 100, allocs: 30 * testMiB, heap: 20 * testMiB}
	burst := base
	burst.created += 20000        // 10,000 streams came and went
	burst.allocs += 300 * testMiB // while allocating
	burst.heap = 220 * testMiB    // and no GC ran since
	quiet := burst
	quiet.allocs += 100 << 10
	for i, step := range []struct {
		s    memSample
		want bool
	}{
		{base, false},
		{burst, false}, // not quiet yet: a busy process collects by itself
		{quiet, true},  // quiet, the goroutines turned over, the heap grew
		{quiet, false}, // once: nothing ended since
	} {
		if got := r.observe(step.s); got != step.want {
			t.Fatalf("step %d: observe(%+v) = %v, want %v (exited %d)", i, step.s, got, step.want, r.exited)
		}
	}
}

func TestReclaimerLeavesAProcessAlone(t *testing.T) {
	t.Parallel()
	// A process with 10,000 live streams: 20,000 goroutines, 200 MiB.
	full := memSample{streams: 10000, goroutines: 20000, created: 30000, heap: 200 * testMiB}
	small := memSample{streams: 10, goroutines: 100, created: 200, heap: 20 * testMiB}
	for _, tc := range []struct {
		name   string
		before memSample
		after  func(memSample) memSample
	}{
		{"goroutines ended, but fewer than are alive", full, func(s memSample) memSample {
			s.created += 5000 // 5,000 short calls ended
			s.allocs += testMiB
			s.heap += 100 * testMiB
			return s
		}},
		{"goroutines turned over, but the heap did not grow", full, func(s memSample) memSample {
			s.created += 50000
			s.allocs += testMiB
			s.heap += 10 * testMiB
			return s
		}},
		{"goroutines turned over and the heap grew, but it is busy", full, func(s memSample) memSample {
			s.created += 50000
			s.allocs += 64 * testMiB
			s.heap += 100 * testMiB
			return s
		}},
		{"few goroutines ended", small, func(s memSample) memSample {
			s.created += 1000
			s.heap += 100 * testMiB
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r reclaimer
			r.observe(tc.before)
			s := tc.after(tc.before)
			if r.observe(s) {
				t.Fatalf("reclaimed at %+v (exited %d, heap base %d)", s, r.exited, r.heapAtBase)
			}
		})
	}
}

// The loop, with a fake clock: every tick is one look; after a reclaim the
// heap it leaves is the base, so the same heap does not count twice.
func TestReclaimLoopMeasuresGrowthFromTheLastReclaim(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	samples := make(chan memSample)
	ticks := make(chan time.Time)
	freed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sample := func() memSample {
			select {
			case s := <-samples:
				return s
			case <-ctx.Done():
				return memSample{}
			}
		}
		free := func() {
			select {
			case freed <- struct{}{}:
			case <-ctx.Done():
			}
		}
		reclaimLoop(ctx, ticks, sample, free)
	}()
	defer func() { cancel(); <-done }()

	// look makes the loop take s at its next tick and tells whether it
	// reclaimed: a loop that reclaims waits in free, one that does not
	// takes the next tick, and which of the two happens is certain.
	ticked := false
	look := func(s memSample) bool {
		if !ticked {
			ticks <- time.Time{}
		}
		samples <- s
		select {
		case <-freed:
			samples <- s // the heap right after the reclaim
			ticked = false
			return true
		case ticks <- time.Time{}:
			ticked = true
			return false
		}
	}
	s := memSample{goroutines: 20, created: 100, heap: 20 * testMiB}
	if look(s) {
		t.Fatal("reclaimed at the first look")
	}
	s.created += 20000
	s.heap = 220 * testMiB
	if !look(s) {
		t.Fatal("no reclaim after a burst of 20,000 goroutines and 200 MiB")
	}
	// Another turnover, but the heap is where the reclaim left it.
	s.created += 20000
	if look(s) {
		t.Fatal("reclaimed a heap that did not grow since the last reclaim")
	}
	s.heap += reclaimMinHeap
	if !look(s) {
		t.Fatal("no reclaim after the heap grew again")
	}
}

// The runtime has every metric the reclaimer reads (a renamed one would
// silently turn its signal off), and a look allocates nothing.
func TestMemSamplerReadsTheRuntime(t *testing.T) { // not parallel: AllocsPerRun
	ms := newMemSampler(func() int { return 7 })
	s := ms.sample()
	for _, m := range ms.m {
		if m.Value.Kind() != metrics.KindUint64 {
			t.Errorf("%s: kind %v, want Uint64", m.Name, m.Value.Kind())
		}
	}
	if s.streams != 7 || s.goroutines == 0 || s.created < s.goroutines || s.allocs == 0 || s.heap == 0 {
		t.Fatalf("sample = %+v", s)
	}
	if allocs := testing.AllocsPerRun(10, func() { ms.sample() }); allocs != 0 {
		t.Errorf("a sample allocates %.0f times", allocs)
	}
}
