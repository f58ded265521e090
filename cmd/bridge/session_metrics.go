package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// promSessions exports the session measurements ([bridge.SessionMetrics]).
// Labels are the bridge's fixed carrier and outcome names.
type promSessions struct {
	active    *prometheus.GaugeVec
	started   *prometheus.CounterVec
	calls     *prometheus.HistogramVec
	resumes   *prometheus.CounterVec
	forwarded *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
}

var (
	_ bridge.SessionMetrics         = (*promSessions)(nil)
	_ bridge.SessionFallbackMetrics = (*promSessions)(nil)
)

func newPromSessions(reg prometheus.Registerer, namespace string) *promSessions {
	m := &promSessions{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "sessions_active",
			Help: "Sessions open now, by the carrier that created them (websocket or http)."}, []string{"carrier"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "sessions_started_total",
			Help: "Sessions created, by carrier (websocket or http)."}, []string{"carrier"}),
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "session_calls",
			Help: "Calls carried by each session that ended.", Buckets: prometheus.ExponentialBuckets(1, 4, 7)}, []string{"carrier"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "session_resumes_total",
			Help: "Session downstreams reattached after a cut, by carrier (websocket, sse or poll)."}, []string{"carrier"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "session_forwards_total",
			Help: "Requests for sessions of other replicas, by outcome (forwarded, refused, failed)."}, []string{"outcome"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "session_fallbacks_total",
			Help: "Sessions that fell back from the WebSocket carrier or to polling, by the reason the client reported (a closed set; other for anything else)."}, []string{"reason"}),
	}
	reg.MustRegister(m.active, m.started, m.calls, m.resumes, m.forwarded, m.fallbacks)
	return m
}

// SessionStarted implements [bridge.SessionMetrics].
func (m *promSessions) SessionStarted(carrier string) {
	m.started.WithLabelValues(carrier).Inc()
	m.active.WithLabelValues(carrier).Inc()
}

// SessionEnded implements [bridge.SessionMetrics].
func (m *promSessions) SessionEnded(carrier string, calls int) {
	m.active.WithLabelValues(carrier).Dec()
	m.calls.WithLabelValues(carrier).Observe(float64(calls))
}

// SessionResumed implements [bridge.SessionMetrics].
func (m *promSessions) SessionResumed(carrier string) { m.resumes.WithLabelValues(carrier).Inc() }

// SessionForwarded implements [bridge.SessionMetrics].
func (m *promSessions) SessionForwarded(outcome string) { m.forwarded.WithLabelValues(outcome).Inc() }

// SessionFellBack implements [bridge.SessionFallbackMetrics]; the bridge
// passes only reasons of its closed set.
func (m *promSessions) SessionFellBack(reason string) { m.fallbacks.WithLabelValues(reason).Inc() }
