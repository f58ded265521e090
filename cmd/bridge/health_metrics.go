package main

import (
	"github.com/prometheus/client_golang/prometheus"
)

// healthCollectors exports the replica's state next to its traffic, so that
// dashboards and alerts (deploy/grafana, deploy/prometheus) can tell a
// replica out of rotation from one that is down, and a full one from a busy
// one:
//
//   - namespace_ready: 1 when /readyz answers 200, else 0. It asks rd at
//     each scrape, as a probe does (so an idle backend connection is asked
//     to connect, and a change of reasons is logged).
//   - namespace_draining: 1 from SIGTERM until the process exits.
//   - namespace_max_streams: the max_streams limit, only when there is one,
//     so that "streams_active / max_streams" has no series without a limit.
func healthCollectors(namespace string, rd *readiness, maxStreams int64) []prometheus.Collector {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "ready",
			Help: "1 when /readyz answers 200 (not draining, every backend connection READY), else 0."},
			func() float64 { return boolGauge(len(rd.problems()) == 0) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "draining",
			Help: "1 from SIGTERM until the process exits, else 0."},
			func() float64 { return boolGauge(rd.draining.Load()) }),
	}
	if maxStreams > 0 {
		limit := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "max_streams",
			Help: "The max_streams limit: streams this replica serves at once before it refuses new ones."})
		limit.Set(float64(maxStreams))
		cs = append(cs, limit)
	}
	return cs
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
