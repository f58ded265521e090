package main

import "testing"

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
		{4000, true},   // under half of the peak: reclaim
		{3000, false},  // the peak is now 4,000 and 3,000 is not half of it
		{100, true},    // half of 4,000 and more gone
		{50, false},    // the peak, 100, is too small to matter
	} {
		if got := r.observe(step.active); got != step.want {
			t.Fatalf("observe(%d) = %v, want %v (peak %d)", step.active, got, step.want, r.peak)
		}
	}
}
