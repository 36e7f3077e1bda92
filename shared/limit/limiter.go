// Package limit caps how much a stage does: a Limiter for the handlers in flight (a ceiling that
// changes live, adaptive under it with a Gradient), Rates for messages/s and bytes/s, and the
// live throttle that keeps both in step with the stage-wide setting of `ferry throttle` in the
// job's KV. The runner (shared/stage) takes a Limiter slot around every handler call; handlers
// wait on Rates and report, through Waited, the time that was not their dependency's.
package limit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Limiter caps the handlers of a stage in flight. Its ceiling changes while running (the process's
// --concurrency, lowered by `ferry throttle --concurrency`); with an adaptive Gradient the limit
// under the ceiling follows the handlers' latency and failures. The runner takes a slot before it
// takes a message, so workers beyond the limit wait without holding one.
type Limiter struct {
	mu       sync.Mutex
	inflight int // slots taken (a worker waiting for a message holds one)
	busy     int // slots whose worker is handling a message
	ceiling  int
	gradient *Gradient // nil: the limit is the ceiling
	wake     chan struct{}
	onChange func(limit int)
	last     int
}

// NewLimiter returns a limiter of ceiling in-flight handlers (at least 1), adaptive under it when
// adaptive is set.
func NewLimiter(ceiling int, adaptive bool) *Limiter {
	l := &Limiter{ceiling: max(ceiling, 1), wake: make(chan struct{})}
	if adaptive {
		l.gradient = NewGradient(l.ceiling)
	}
	l.last = l.limitLocked()
	return l
}

// OnChange calls f with the limit now and whenever it changes (a gauge).
func (l *Limiter) OnChange(f func(limit int)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onChange = f
	f(l.limitLocked())
}

// Limit is the number of handlers allowed in flight now.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limitLocked()
}

// Ceiling is the cap the limit stays under.
func (l *Limiter) Ceiling() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ceiling
}

// InFlight is the number of slots taken.
func (l *Limiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

func (l *Limiter) limitLocked() int {
	if l.gradient == nil {
		return l.ceiling
	}
	return min(l.gradient.Limit(), l.ceiling)
}

// SetCeiling changes the cap; handlers already in flight above it finish, no new ones start.
func (l *Limiter) SetCeiling(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ceiling = max(n, 1)
	if l.gradient != nil {
		l.gradient.SetMax(l.ceiling)
	}
	l.changedLocked()
}

// changedLocked wakes waiters and reports a new limit.
func (l *Limiter) changedLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
	if n := l.limitLocked(); n != l.last {
		l.last = n
		if l.onChange != nil {
			l.onChange(n)
		}
	}
}

// Slot is one taken place in the limiter; the zero Slot (taken after shutdown began) counts nothing.
type Slot struct{ taken, busy bool }

// Start marks s as handling a message: the adaptive limit only grows while its slots are used.
func (l *Limiter) Start(s *Slot) {
	if !s.taken {
		return
	}
	l.mu.Lock()
	l.busy++
	l.mu.Unlock()
	s.busy = true
}

// Acquire waits for a free slot. Once stop is closed it returns the zero Slot at once: shutdown
// must hand the buffered messages back (nak) without waiting for room.
func (l *Limiter) Acquire(stop <-chan struct{}) Slot {
	for {
		select {
		case <-stop:
			return Slot{}
		default:
		}
		l.mu.Lock()
		if l.inflight < l.limitLocked() {
			l.inflight++
			l.mu.Unlock()
			return Slot{taken: true}
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-stop:
			return Slot{}
		}
	}
}

// Outcome is what a handler call tells the adaptive limit.
type Outcome int

const (
	SampleNone Outcome = iota // no sample: nothing was handled, or shutdown cut it short
	SampleOK                  // a latency sample (success, or a permanent answer such as not found)
	SampleDrop                // the dependency failed: timeout, transient error, outage
)

// Release frees s and feeds the adaptive limit with the handler's latency and outcome.
func (l *Limiter) Release(s Slot, latency time.Duration, o Outcome) {
	if !s.taken {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gradient != nil && o != SampleNone {
		l.gradient.Sample(latency, l.busy, o == SampleDrop)
	}
	if s.busy {
		l.busy--
	}
	l.inflight--
	l.changedLocked()
}

// Gradient is an adaptive concurrency limit after Netflix concurrency-limits' Gradient2: every
// window of samples it compares the window's mean latency (short RTT) with a slow exponential
// average (long RTT, ~600 samples) and sets
//
//	limit = limit × clamp(tolerance × long/short, 0.5, 1) + queue
//
// smoothed (20% of the step per window). While latency stays flat (short ≤ 1.5 × long) the
// gradient is 1 and the limit grows by the queue allowance; when latency rises it shrinks, by half
// at most per window. A window with failures (timeouts, transient errors, outages) cuts the limit
// by DropFactor instead: a slow source shows up as timeouts before its latency average catches up.
// The limit only grows while at least half of it is in use, so an idle stage does not inflate it.
// It stays in [1, max]. Not safe for concurrent use (Limiter holds a lock around it).
type Gradient struct {
	limit     float64
	max       float64
	long      float64
	longN     int
	winSum    time.Duration
	winN      int
	winDrops  int
	winInUse  int
	Tolerance float64 // 1.5
	Smoothing float64 // 0.2
	Queue     float64 // 4: growth allowance per window
	// DropFactor multiplies the limit after a window with failures; 0.8.
	DropFactor float64
	// LongWindow is the number of samples the long RTT averages over; 600.
	LongWindow int
}

// NewGradient starts at min(max, 8): a cautious start that grows in a few hundred samples.
func NewGradient(max int) *Gradient {
	g := &Gradient{max: float64(max), Tolerance: 1.5, Smoothing: 0.2, Queue: 4, DropFactor: 0.8, LongWindow: 600}
	g.limit = math.Min(g.max, 8)
	return g
}

// Limit is the current limit, rounded down, at least 1.
func (g *Gradient) Limit() int { return max(int(g.limit), 1) }

// SetMax changes the cap (the ceiling): the limit follows it down at once.
func (g *Gradient) SetMax(n int) {
	g.max = float64(max(n, 1))
	g.limit = math.Min(g.limit, g.max)
}

// window is the number of samples per update: 10, fewer when the limit is small, so a limit of 1
// with slow handlers still adapts on every sample.
func (g *Gradient) window() int { return min(10, max(1, int(g.limit))) }

// Sample records one handler's latency; inflight is the number of handlers in flight when it ended
// (itself included); drop says it failed the way an overloaded dependency fails.
func (g *Gradient) Sample(latency time.Duration, inflight int, drop bool) {
	g.winN++
	g.winInUse = max(g.winInUse, inflight)
	if drop {
		g.winDrops++ // a timeout's latency says how long we waited, not how fast the source is
	} else {
		g.winSum += latency
		g.observeLong(float64(latency))
	}
	if g.winN < g.window() {
		return
	}
	short := 0.0
	if ok := g.winN - g.winDrops; ok > 0 {
		short = float64(g.winSum) / float64(ok)
	}
	drops, inUse := g.winDrops, g.winInUse
	g.winSum, g.winN, g.winDrops, g.winInUse = 0, 0, 0, 0
	switch {
	case drops > 0:
		g.limit *= g.DropFactor
	case short <= 0 || g.long <= 0:
	default:
		if g.long/short > 2 {
			// Latency is back to normal after a long slow spell: let the baseline come down faster.
			g.long *= 0.95
		}
		if float64(inUse) < g.limit/2 {
			return // the stage is not using its limit: no evidence to grow on
		}
		gradient := math.Max(0.5, math.Min(1, g.Tolerance*g.long/short))
		next := g.limit*gradient + g.Queue
		g.limit = g.limit*(1-g.Smoothing) + next*g.Smoothing
	}
	g.limit = math.Max(1, math.Min(g.max, g.limit))
}

// observeLong adds a sample to the long RTT: a plain mean for the first 10 samples, then an
// exponential average over LongWindow samples.
func (g *Gradient) observeLong(v float64) {
	if g.longN < 10 {
		g.longN++
		g.long += (v - g.long) / float64(g.longN)
		return
	}
	alpha := 2 / (float64(g.LongWindow) + 1)
	g.long += alpha * (v - g.long)
}

// waitKey carries the time a handler spent waiting on its own limits (rate caps, a full BLOBS), so
// the adaptive limit sees the dependency's latency, not the throttle's.
type waitKey struct{}

// Waited tells the runner that the handler of ctx spent d waiting for something other than its
// dependency (a rate cap, backpressure). Without a context from WithWaits it does nothing.
func Waited(ctx context.Context, d time.Duration) {
	if w, ok := ctx.Value(waitKey{}).(*atomic.Int64); ok {
		w.Add(int64(d))
	}
}

// WithWaits returns a context for one handler call and the total its Waited calls report, which
// the runner takes off the call's latency before it samples the adaptive limit.
func WithWaits(ctx context.Context) (context.Context, *atomic.Int64) {
	w := new(atomic.Int64)
	return context.WithValue(ctx, waitKey{}, w), w
}
