package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// load is how hard and how long one measurement runs.
type load struct {
	Concurrency int
	Duration    time.Duration // stop starting operations after this long
	Count       int64         // stop after this many operations; 0: no limit
}

// tally is one worker's results; the workers' tallies are merged when the measurement ends.
type tally struct {
	hist     histogram
	ok       int64 // found (source), stored or matched (dest)
	notFound int64
	errors   int64
	bytes    int64
	firstErr error
}

func (t *tally) merge(o *tally) {
	t.hist.merge(&o.hist)
	t.ok += o.ok
	t.notFound += o.notFound
	t.errors += o.errors
	t.bytes += o.bytes
	if t.firstErr == nil {
		t.firstErr = o.firstErr
	}
}

func (t *tally) fail(err error) {
	t.errors++
	if t.firstErr == nil {
		t.firstErr = err
	}
}

// run calls op from l.Concurrency goroutines, each call with its worker's tally and a sequence
// number 0, 1, 2, …, until l.Duration has passed, limit operations have started (0: no limit) or
// ctx ends. Operations in flight at the deadline finish (their request context is ctx, not the
// deadline, so they are measured rather than cut short). It returns how many operations started
// and the wall time until the last one ended, and the merged tally.
func (l load) run(ctx context.Context, limit int64, op func(t *tally, seq int64)) (started int64, elapsed time.Duration, total tally) {
	tallies := make([]tally, l.Concurrency)
	var next atomic.Int64
	start := time.Now()
	deadline := start.Add(l.Duration)
	var wg sync.WaitGroup
	for w := range l.Concurrency {
		wg.Go(func() {
			t := &tallies[w]
			for ctx.Err() == nil && time.Now().Before(deadline) {
				seq := next.Add(1) - 1
				if limit > 0 && seq >= limit {
					return
				}
				op(t, seq)
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	started = next.Load()
	if limit > 0 {
		started = min(started, limit)
	}
	for i := range tallies {
		total.merge(&tallies[i])
	}
	return started, elapsed, total
}
