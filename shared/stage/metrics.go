package stage

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the runner's counters, labelled by job and stage. A nil *Metrics records nothing.
type Metrics struct {
	messages *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	inflight *prometheus.GaugeVec
}

// NewMetrics registers the runner's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_messages_total",
			Help: "Messages handled, by outcome: ok (acked), retry (nak with backoff), dead (dead-lettered), fatal.",
		}, []string{"job", "stage", "outcome"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_handler_seconds",
			Help:    "Time a handler spent on one message.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"job", "stage"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_in_flight",
			Help: "Messages being handled now.",
		}, []string{"job", "stage"}),
	}
	reg.MustRegister(m.messages, m.seconds, m.inflight)
	return m
}

type nopGauge struct{}

func (nopGauge) Inc() {}
func (nopGauge) Dec() {}

func (m *Metrics) inFlight(o Options) interface {
	Inc()
	Dec()
} {
	if m == nil {
		return nopGauge{}
	}
	return m.inflight.WithLabelValues(o.Names.Job, o.Stage)
}

func (m *Metrics) observe(o Options, d time.Duration) {
	if m != nil {
		m.seconds.WithLabelValues(o.Names.Job, o.Stage).Observe(d.Seconds())
	}
}

func (m *Metrics) count(o Options, outcome string) {
	if m != nil {
		m.messages.WithLabelValues(o.Names.Job, o.Stage, outcome).Inc()
	}
}
