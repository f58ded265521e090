package main

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/grpcbridge/grpcbridge/bridge"
)

// promMetrics exports the bridge's measurements to Prometheus. Every label
// value is bounded: methods come from the exposed schema, transports and
// codes from fixed sets, close codes from the ones the bridge sends.
type promMetrics struct {
	active       *prometheus.GaugeVec
	started      *prometheus.CounterVec
	finished     *prometheus.CounterVec
	messages     *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	firstMessage *prometheus.HistogramVec
	duration     *prometheus.HistogramVec
	resumes      *prometheus.CounterVec
	slowDrops    *prometheus.CounterVec
	wsCloses     *prometheus.CounterVec
	panics       *prometheus.CounterVec

	*promSessions // session_metrics.go
}

var (
	_ bridge.Metrics      = (*promMetrics)(nil)
	_ bridge.PanicMetrics = (*promMetrics)(nil)
)

// newPromMetrics registers the bridge's metrics, named namespace_*, on reg.
func newPromMetrics(reg prometheus.Registerer, namespace string) *promMetrics {
	byStream := []string{"method", "transport"}
	m := &promMetrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "streams_active",
			Help: "Streams open now."}, byStream),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "streams_started_total",
			Help: "Streams whose upstream call was opened."}, byStream),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "streams_finished_total",
			Help: "Streams ended, by final gRPC status code."}, []string{"method", "transport", "code"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "messages_total",
			Help: "Messages relayed; direction is to_client or from_client."}, []string{"method", "transport", "direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "message_bytes_total",
			Help: "Encoded bytes of the messages relayed (JSON for SSE, protobuf for WebSocket)."}, []string{"method", "transport", "direction"}),
		firstMessage: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "first_message_seconds",
			Help: "Time from the start of a stream to its first message to the client.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, byStream),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "stream_duration_seconds",
			Help: "Lifetime of streams.", Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}, byStream),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "resumes_total",
			Help: "SSE streams that resumed with Last-Event-ID."}, []string{"method"}),
		slowDrops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "slow_client_drops_total",
			Help: "Streams ended because the client did not take data within the write timeout."}, byStream),
		wsCloses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "websocket_close_codes_total",
			Help: "WebSocket close codes sent by the bridge."}, []string{"method", "code"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "panics_total",
			Help: "Panics recovered in a stream's goroutines; each ended that stream with INTERNAL."}, byStream),
	}
	reg.MustRegister(m.active, m.started, m.finished, m.messages, m.bytes, m.firstMessage, m.duration, m.resumes, m.slowDrops, m.wsCloses, m.panics)
	m.promSessions = newPromSessions(reg, namespace)
	return m
}

// StreamStarted implements [bridge.Metrics]. The per-message counters are
// resolved here, once per stream, so that counting a message is an atomic
// add rather than a label lookup.
func (m *promMetrics) StreamStarted(method, transport string, resumed bool) bridge.StreamObserver {
	m.started.WithLabelValues(method, transport).Inc()
	m.active.WithLabelValues(method, transport).Inc()
	if resumed {
		m.resumes.WithLabelValues(method).Inc()
	}
	return &promStream{
		m:         m,
		method:    method,
		transport: transport,
		start:     time.Now(),
		sent:      m.messages.WithLabelValues(method, transport, "to_client"),
		sentBytes: m.bytes.WithLabelValues(method, transport, "to_client"),
		recv:      m.messages.WithLabelValues(method, transport, "from_client"),
		recvBytes: m.bytes.WithLabelValues(method, transport, "from_client"),
	}
}

// StreamPanicked implements [bridge.PanicMetrics].
func (m *promMetrics) StreamPanicked(method, transport string) {
	m.panics.WithLabelValues(method, transport).Inc()
}

// promStream observes one stream. firstSent is touched only by the writer.
type promStream struct {
	m                 *promMetrics
	method, transport string
	start             time.Time
	firstSent         bool
	sent, sentBytes   prometheus.Counter
	recv, recvBytes   prometheus.Counter
}

func (s *promStream) MessageSent(n int) {
	if !s.firstSent {
		s.firstSent = true
		s.m.firstMessage.WithLabelValues(s.method, s.transport).Observe(time.Since(s.start).Seconds())
	}
	s.sent.Inc()
	s.sentBytes.Add(float64(n))
}

func (s *promStream) MessageReceived(n int) {
	s.recv.Inc()
	s.recvBytes.Add(float64(n))
}

func (s *promStream) StreamEnded(code codes.Code, closeCode int, slowClient bool) {
	s.m.active.WithLabelValues(s.method, s.transport).Dec()
	if code > codes.Unauthenticated {
		code = codes.Unknown // a backend's nonstandard code must not grow the label set
	}
	s.m.finished.WithLabelValues(s.method, s.transport, code.String()).Inc()
	s.m.duration.WithLabelValues(s.method, s.transport).Observe(time.Since(s.start).Seconds())
	if slowClient {
		s.m.slowDrops.WithLabelValues(s.method, s.transport).Inc()
	}
	if closeCode != 0 {
		s.m.wsCloses.WithLabelValues(s.method, strconv.Itoa(closeCode)).Inc()
	}
}
