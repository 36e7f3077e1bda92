package orphan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// SweepInterval is how often a service's sweeper looks for orphans. An orphan waits at most
// about this long, instead of until someone reads `ferry status` and runs `ferry repair`; a
// pass that finds nothing costs two info requests per work queue.
const SweepInterval = time.Minute

// SweepSettle is the sweeper's Options.Settle: longer than `ferry repair`'s, since nobody waits
// for it, and the pause is paid only when a message sits at or below a consumer's bound.
const SweepSettle = 5 * time.Second

// Metrics are the sweeper's.
type Metrics struct {
	requeued *prometheus.CounterVec
}

// NewMetrics registers ferry_orphans_requeued_total on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{requeued: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_orphans_requeued_total",
		Help: "Orphaned work-queue messages (at or below their consumer's ack floor, never to be delivered) that this process requeued, by stream.",
	}, []string{"stream"})}
	reg.MustRegister(m.requeued)
	return m
}

// Requeued is the counter of stream's requeued orphans.
func (m *Metrics) Requeued(stream string) prometheus.Counter {
	return m.requeued.WithLabelValues(stream)
}

// Sweeper requeues the job's orphans every Interval. Every service runs one; many at once are
// safe: two passes that requeue the same orphan store one copy (see the package comment).
type Sweeper struct {
	JS       jetstream.JetStream
	Names    bus.Names
	Interval time.Duration // SweepInterval when 0
	Settle   time.Duration // SweepSettle when 0
	Metrics  *Metrics      // none when nil
	Log      *slog.Logger
}

// Run sweeps until ctx ends. The first pass comes after a random part of the interval, so the
// services of a deployment, usually started together, do not sweep in step. A failed pass is
// logged and the next one tries again.
func (s *Sweeper) Run(ctx context.Context) {
	interval := orDefault(s.Interval, SweepInterval)
	t := time.NewTimer(rand.N(interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("orphan sweep failed; trying again at the next one", "err", err, "interval", interval)
		}
		t.Reset(interval)
	}
}

// Sweep requeues the orphans of every work queue of the job once, and logs one line when it
// requeued any.
func (s *Sweeper) Sweep(ctx context.Context) ([]Result, error) {
	var (
		results []Result
		errs    []error
		logArgs []any
		total   int
	)
	for _, q := range Queues(s.Names) {
		r, err := Requeue(ctx, s.JS, s.Names, q, Options{Settle: orDefault(s.Settle, SweepSettle)})
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = nil // the job is being deleted, or setup has yet to run: nothing to sweep
		}
		if err != nil {
			errs = append(errs, err)
		}
		// Copies another sweeper stored first are theirs to count and report.
		if mine := r.Requeued - r.Deduped; mine > 0 {
			total += mine
			logArgs = append(logArgs, q.Stream, mine)
			if s.Metrics != nil {
				s.Metrics.requeued.WithLabelValues(q.Stream).Add(float64(mine))
			}
		}
		if r.DeadLettered > 0 {
			s.Log.Warn(fmt.Sprintf("dead-lettered %d messages orphaned again after %d requeues (see ferry dlq ls)", r.DeadLettered, MaxRequeues), "stream", q.Stream)
		}
		results = append(results, r)
	}
	if total > 0 {
		s.Log.Warn(fmt.Sprintf("requeued %d orphaned messages: a consumer would never have delivered them (NATS lost track of them; see ferry status)", total),
			slices.Concat([]any{"requeued", total}, logArgs)...)
	}
	return results, errors.Join(errs...)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
