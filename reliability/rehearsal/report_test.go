package rehearsal

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// report renders the Markdown report, and says why the run failed ("" if
// it passed): any gap, duplicate or unexplained error.
func (r *run) report(followers []*follower, stopped string) (string, string) {
	r.mu.Lock()
	samples, timeline := slices.Clone(r.samples), slices.Clone(r.timeline)
	r.mu.Unlock()
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	var gaps, dups, unexpl, events int64
	for _, p := range r.rec.phases {
		gaps += p.gaps
		dups += p.dups
		unexpl += int64(p.nUnexpl)
		events += p.events
	}
	dead := 0
	for _, f := range followers {
		if f.dead.Load() {
			dead++
		}
	}
	var failed []string
	if gaps > 0 {
		failed = append(failed, fmt.Sprintf("%d ticks missing", gaps))
	}
	if dups > 0 {
		failed = append(failed, fmt.Sprintf("%d ticks twice", dups))
	}
	if unexpl > 0 {
		failed = append(failed, fmt.Sprintf("%d unexplained errors", unexpl))
	}
	if stopped != "" {
		failed = append(failed, stopped)
	}
	verdict := "PASSED"
	if len(failed) > 0 {
		verdict = "FAILED: " + strings.Join(failed, ", ")
	}

	w("# Rehearsal report\n\n")
	w("%s, `-rehearsal %s -ingress %s`, %s in all. **%s**\n\n", r.start.UTC().Format("2006-01-02 15:04 UTC"), *flagMode, *flagIngress, time.Since(r.start).Round(time.Second), verdict)
	w("Load: %d SSE followers (%d browsers, one HTTP/2 connection each), %d WebSocket chat and %d echo clients, through %s (TLS, HTTP/2 to clients, HTTP/1.1 to the bridges), Toxiproxy, %d bridges and %d demo backends. ", r.sz.sse, (r.sz.sse+49)/50, r.sz.chat, r.sz.echo, *flagIngress, nBridges, nBackends)
	w("%d ticks delivered in all, %d missing, %d twice; %d followers failed for good; %d unexplained errors.\n\n", events, gaps, dups, dead, unexpl)

	w("## Phases\n\n")
	w("A phase runs from its action to the next phase's, so its settling time is its own. Resume: from the moment a follower saw its stream cut (end, break or transient error event) to its next tick, counted in the phase of the cut. Silence: the longest time a follower went without a tick (they come every second), and how many went 5 s or more.\n\n")
	w("| phase | time | ticks | missing | twice | SSE cuts | reconnects | resume p50 | p99 | max | silence max | silent ≥ 5 s | WebSocket replies | chat lost at a cut | unexplained |\n")
	w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, p := range r.rec.phases {
		w("| %s | %s | %d | %d | %d | %d | %d | %s | %s | %s | %s | %d | %d | %d | %d |\n", p.name, p.end.Sub(p.start).Round(100*time.Millisecond), p.events, p.gaps, p.dups, p.cuts, p.reconnects,
			ms(percentile(p.resumes, 0.5)), ms(percentile(p.resumes, 0.99)), ms(percentile(p.resumes, 1)), ms(p.silence), p.silent5, p.wsMessages, p.lostAtCut, p.nUnexpl)
	}

	w("\n## WebSocket calls, by how they ended\n\n")
	w("| phase | ending | calls |\n| --- | --- | --- |\n")
	for _, p := range r.rec.phases {
		for _, k := range slices.Sorted(maps.Keys(p.wsEnds)) {
			w("| %s | %s | %d |\n", p.name, k, p.wsEnds[k])
		}
	}

	w("\n## Errors, by kind\n\n")
	w("Explained: a cut that the phase's action accounts for (a drain's status 14 and close 1001, a killed or reset connection without a status frame, a backend's 14 and close 4014, a refused handshake while a bridge drains). Anything else counts as unexplained and fails the run.\n\n")
	w("| phase | kind | count |\n| --- | --- | --- |\n")
	for _, p := range r.rec.phases {
		for _, k := range slices.Sorted(maps.Keys(p.errors)) {
			w("| %s | %s | %d |\n", p.name, k, p.errors[k])
		}
	}
	if unexpl > 0 {
		w("\n### Unexplained (the first of each phase)\n\n")
		for _, p := range r.rec.phases {
			for _, u := range p.unexplained {
				w("- %s: %s\n", p.name, u)
			}
		}
	}

	w("\n## Bridges: goroutines, RSS and open streams\n\n")
	w("From each bridge's admin `/metrics` (`go_goroutines`, `process_resident_memory_bytes`, the sum of `grpcbridge_streams_active`); \"down\" while it restarts.\n\n")
	w("| time |")
	for i := range nBridges {
		w(" bridge %d |", i+1)
	}
	w("\n| --- |%s\n", strings.Repeat(" --- |", nBridges))
	step := max(1, int(15*time.Second/r.sz.scrape))
	for k, s := range samples {
		if k%step != 0 && k != len(samples)-1 {
			continue
		}
		w("| %.0f s |", s.at.Seconds())
		for i := range nBridges {
			if s.goroutines[i] < 0 {
				w(" down |")
				continue
			}
			w(" %.0f goroutines, %.0f MiB, %.0f streams |", s.goroutines[i], s.rssMiB[i], s.streams[i])
		}
		w("\n")
	}
	var peakG, peakR [nBridges]float64
	for _, s := range samples {
		for i := range nBridges {
			peakG[i], peakR[i] = max(peakG[i], s.goroutines[i]), max(peakR[i], s.rssMiB[i])
		}
	}
	w("\nPeaks:")
	for i := range nBridges {
		w(" bridge %d %.0f goroutines, %.0f MiB;", i+1, peakG[i], peakR[i])
	}
	w("\n\n## Timeline\n\n```\n%s\n```\n", strings.Join(timeline, "\n"))
	if len(failed) > 0 {
		return b.String(), strings.Join(failed, ", ")
	}
	return b.String(), ""
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}
