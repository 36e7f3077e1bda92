package service

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

var dlqDesc = prometheus.NewDesc("ferry_dlq_messages",
	"Dead letters of the job in its DLQ stream, by stage and reason, as the broker counts them (job-wide: every process of the job reports the same numbers).",
	[]string{"stage", "reason"}, nil)

// dlqCollector reads the job's dead-letter counts by subject from the broker at scrape time, so
// the dead letters of every stage and reason show on a dashboard whichever process wrote them
// (the same count as `ferry dlq ls`). A scrape while NATS is unreachable reports nothing.
type dlqCollector struct{ e *Env }

func (dlqCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dlqDesc }

func (c dlqCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	if e.JS == nil || e.NC == nil || !e.NC.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := e.JS.Stream(ctx, e.Names.DLQ)
	if err != nil {
		return
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(e.Names.DLQSubjects))
	if err != nil {
		return
	}
	prefix := "ferry." + e.Names.Job + ".dlq."
	for subj, n := range info.State.Subjects {
		stage, reason, ok := strings.Cut(strings.TrimPrefix(subj, prefix), ".")
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(dlqDesc, prometheus.GaugeValue, float64(n), stage, reason)
	}
}
