package stage

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the runner's counters, labelled by job and stage (never by key). A nil *Metrics
// records nothing.
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
			Help: "Messages handled, by outcome: ok (acked), retry (nak with backoff), dead (dead-lettered), fatal, outage (held while a dependency is down); reason: the dead-letter or retry reason when the runner gives it.",
		}, []string{"job", "stage", "outcome", "reason"}),
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

// count counts one message's outcome; reason, when given, is the dead-letter reason of a "dead"
// or the would-be reason (transientReason) of a "retry". Without it the label is empty, which
// Prometheus shows as absent.
func (m *Metrics) count(o Options, outcome string, reason ...string) {
	if m != nil {
		r := ""
		if len(reason) > 0 {
			r = reason[0]
		}
		m.messages.WithLabelValues(o.Names.Job, o.Stage, outcome, r).Inc()
	}
}
