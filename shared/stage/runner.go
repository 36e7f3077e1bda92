package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/limit"
)

// Options configure Serve.
type Options struct {
	Stage   string
	Names   bus.Names
	JS      jetstream.JetStream
	Workers int // concurrent handlers at most; default 16
	// Limiter caps the handlers in flight below Workers, live (ferry throttle --concurrency,
	// adaptive concurrency); default a fixed limit of Workers.
	Limiter *limit.Limiter
	// ExhaustedReason is the stage's dead-letter reason for an error that names none (stage.Reason
	// does): a transient error that uses up the budget, a client's Permanent one; default
	// max_deliveries.
	ExhaustedReason string
	// Backoff is the delay before redelivery after a transient error, given the handler runs so
	// far; default Backoff.
	Backoff func(runs uint64) time.Duration
	// OutagePause is the first pause before retrying a message after an Outage error (it doubles
	// up to a minute); default 2s.
	OutagePause time.Duration
	// OutageAlone is how long a message is held through Outage errors while handler calls that
	// started after its hold began succeed, before its error counts as its own: a run of its
	// budget, so that one key that a dependency refuses forever (an object its S3 answers 503 for)
	// ends in the DLQ instead of holding a worker forever; default 5m.
	OutageAlone time.Duration
	// Grace is how long in-flight handlers may finish after shutdown begins; default 30s.
	Grace time.Duration
	// KeyOf is the source key of a message, for dead letters; default Msg.KeyOf.
	KeyOf   func(Msg) string
	Metrics *Metrics
	Log     *slog.Logger
}

// Backoff is exponential from 2s, capped at 5m, with ±25% jitter so a burst of failures does
// not come back as a burst.
func Backoff(delivered uint64) time.Duration {
	d := 2 * time.Second
	for i := uint64(1); i < delivered && d < 5*time.Minute; i++ {
		d *= 2
	}
	d = min(d, 5*time.Minute)
	return time.Duration(float64(d) * (0.75 + rand.Float64()/2))
}

// Serve runs h on the messages of cons until ctx ends or a handler returns a Fatal error, which
// Serve returns. On shutdown it stops pulling, naks what was prefetched but not started, lets
// in-flight handlers finish (up to Grace), acks or naks them, and returns nil.
//
// A message's budget (the consumer's bus.MetaBudget, `--max-deliver`) counts handler runs, not
// deliveries: each stop naks the prefetch and each crash lets it time out, and either would use a
// delivery of messages no handler ran. See attempts.
func Serve(ctx context.Context, cons jetstream.Consumer, h Handler, o Options) error {
	return ServeAll(ctx, []jetstream.Consumer{cons}, h, o)
}

// ServeAll is Serve over the consumers of a partitioned work queue, one per stream, with one pool
// of workers. They share their settings (bus.Setup makes them alike); the first one's are used.
func ServeAll(ctx context.Context, cons []jetstream.Consumer, h Handler, o Options) error {
	if len(cons) == 0 {
		return fmt.Errorf("%s: no consumer to serve", o.Stage)
	}
	o.defaults()
	info := cons[0].CachedInfo()
	r := &runner{o: o, h: h, maxDeliver: info.Config.MaxDeliver, ackWait: info.Config.AckWait,
		fatal: make(chan struct{}), stop: make(chan struct{})}
	r.budget = budgetOf(info, o.Log)
	if r.budget > 0 {
		kv, err := o.JS.KeyValue(ctx, o.Names.Attempts)
		if err != nil {
			o.Log.Warn("attempts bucket missing: counting deliveries instead of handler runs; run ferry setup",
				"bucket", o.Names.Attempts, "err", err)
		} else {
			r.attempts = &attempts{kv: kv}
		}
	}
	// Handlers run on a context that outlives the shutdown signal by Grace, so a PUT that is almost
	// done is finished and acked instead of repeated.
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()

	// Workers pull from one message iterator. Unlike a Consume callback, which must block while
	// every worker is busy and then misses the server's idle heartbeats, an iterator only watches
	// heartbeats while someone waits in Next. Its prefetch follows the limit (intake).
	src, err := newSource(cons, o.Limiter.Limit(), o.Log)
	if err != nil {
		return fmt.Errorf("%s: consume %s: %w", o.Stage, info.Config.Durable, err)
	}
	go src.follow(o.Limiter, o.Workers, time.Second, r.stop)
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Go(func() {
			for {
				// A slot first, then a message: workers above the limit wait without holding one.
				s := o.Limiter.Acquire(r.stop)
				msg, err := src.next()
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					o.Limiter.Release(s, 0, limit.SampleNone)
					return
				}
				if err != nil {
					o.Limiter.Release(s, 0, limit.SampleNone)
					o.Log.Debug("next message", "err", err)
					continue
				}
				o.Limiter.Start(&s)
				latency, out := r.process(hctx, msg) // naks at once when shutdown has begun
				o.Limiter.Release(s, latency, out)
			}
		})
	}
	select {
	case <-ctx.Done():
	case <-r.fatal:
	}
	r.stopping.Store(true)
	close(r.stop)
	src.drain() // hands out what is buffered (process naks it), then closes
	grace := time.AfterFunc(o.Grace, cancelHandlers)
	defer grace.Stop()
	wg.Wait()
	return r.fatalErr()
}

type runner struct {
	o          Options
	h          Handler
	maxDeliver int       // the consumer's: the server delivers a message no more often
	budget     uint64    // handler runs before a transient error dead-letters; 0: no limit
	attempts   *attempts // nil: runs are counted as deliveries
	ackWait    time.Duration
	stopping   atomic.Bool
	fatalOnce  sync.Once
	fatal      chan struct{}
	stop       chan struct{} // closed when shutdown begins
	fatalMu    sync.Mutex
	firstFatal error
	// lastOutageLog is when an outage was last logged (unix nanoseconds).
	lastOutageLog atomic.Int64
	// lastAttemptsLog is when a failure to read or write the attempts bucket was last logged.
	lastAttemptsLog atomic.Int64
	// lastOK is when the latest handler call that succeeded started (unix nanoseconds): a
	// dependency answered after that.
	lastOK atomic.Int64
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Limiter == nil {
		o.Limiter = limit.NewLimiter(o.Workers, false)
	}
	if o.Backoff == nil {
		o.Backoff = Backoff
	}
	if o.OutagePause <= 0 {
		o.OutagePause = 2 * time.Second
	}
	if o.OutageAlone <= 0 {
		o.OutageAlone = 5 * time.Minute
	}
	if o.Grace <= 0 {
		o.Grace = 30 * time.Second
	}
	if o.KeyOf == nil {
		o.KeyOf = Msg.KeyOf
	}
	if o.Log == nil {
		o.Log = slog.Default().With("job", o.Names.Job) // a service's logger names the job already
	}
	o.Log = o.Log.With("stage", o.Stage)
	if o.ExhaustedReason == "" {
		o.ExhaustedReason = bus.ReasonMaxDeliveries
	}
}

func (r *runner) fatalErr() error {
	r.fatalMu.Lock()
	defer r.fatalMu.Unlock()
	return r.firstFatal
}

func (r *runner) setFatal(err error) {
	r.stopping.Store(true) // workers hand back what they take from here on
	r.fatalMu.Lock()
	if r.firstFatal == nil {
		r.firstFatal = err
	}
	r.fatalMu.Unlock()
	r.fatalOnce.Do(func() { close(r.fatal) })
}

// process handles msg and acks, naks, terms or dead-letters it. It returns the handler's latency
// (its first call, without the time it said it waited on its own limits) and what that call tells
// the adaptive limit.
func (r *runner) process(ctx context.Context, msg jetstream.Msg) (time.Duration, limit.Outcome) {
	if r.stopping.Load() {
		_ = msg.Nak() // prefetched, not started: give it back at once
		return 0, limit.SampleNone
	}
	md, err := msg.Metadata()
	if err != nil { // not a JetStream message; cannot happen on a pull consumer
		r.o.Log.Error("message without metadata", "err", err)
		_ = msg.Term()
		return 0, limit.SampleNone
	}
	a, ok := r.before(ctx, msg, md)
	if !ok {
		return 0, limit.SampleNone
	}
	runs := a.runs
	m := r.o.Metrics
	m.inFlight(r.o).Inc()
	start := time.Now()
	in := input(msg)
	latency, err := r.call(ctx, msg, in)
	sample := r.outcome(err)
	if err == nil {
		r.answered(start)
	}
	held := time.Now()
	for pause := r.o.OutagePause; IsOutage(err) && !r.stopping.Load(); pause = min(pause*2, time.Minute) {
		m.count(r.o, "outage")
		r.outageLog(err)
		if !r.hold(ctx, msg, pause) {
			break
		}
		began := time.Now()
		if _, err = r.call(ctx, msg, in); err == nil {
			r.answered(began)
		}
		// The dependency answers calls that started after this hold began, and still not this
		// message's, for OutageAlone: the error is the message's own. Evidence from calls that
		// started later only: those in flight when a whole outage began may still succeed.
		if IsOutage(err) && time.Since(held) >= r.o.OutageAlone && r.lastOK.Load() > held.UnixNano() {
			err = ownError(err, time.Since(held))
			r.o.Log.Debug("held through an outage that other messages do not see: counting a run", "key", r.o.KeyOf(in), "err", err)
		}
	}
	m.inFlight(r.o).Dec()
	m.observe(r.o, time.Since(start))

	// The server's MaxDeliver is a backstop above the budget: at it, the server delivers the
	// message no more, so this run is its last whatever the count says.
	lastRun := r.budget > 0 && runs >= r.budget ||
		r.maxDeliver > 0 && md.NumDelivered >= uint64(r.maxDeliver)
	switch reason, permanent := IsPermanent(err); {
	case err == nil:
		r.succeeded(ctx, md, a) // before the ack: a redelivery after a lost ack must run, not dead-letter
		if aerr := msg.Ack(); aerr != nil {
			// Output is durable; a lost ack means a redelivery whose output the broker dedupes.
			r.o.Log.Warn("ack failed", "err", aerr)
		}
		m.count(r.o, "ok")
	case IsFatal(err):
		// Shutdown first: the nak redelivers at once, and no other worker may run it again.
		r.setFatal(fmt.Errorf("%s: %w", r.o.Stage, err))
		r.uncount(ctx, md, a)
		_ = msg.Nak()
		m.count(r.o, "fatal")
	case permanent:
		if reason == "" {
			reason = r.o.ExhaustedReason
		}
		r.deadLetter(ctx, msg, md, runs, reason, err)
	case r.stopping.Load() && (ctx.Err() != nil || IsOutage(err)):
		// Cut short by shutdown: not the message's fault, so no dead letter and no run counted.
		r.uncount(ctx, md, a)
		_ = msg.Nak()
		m.count(r.o, "retry")
	case lastRun:
		if !r.deadLetter(ctx, msg, md, runs, transientReason(err, r.o.ExhaustedReason), err) {
			r.uncount(ctx, md, a) // the redelivery runs once more and dead-letters
		}
	default:
		r.failed(ctx, md, a)
		_ = msg.NakWithDelay(r.o.Backoff(runs))
		m.count(r.o, "retry", transientReason(err, r.o.ExhaustedReason))
		r.o.Log.Debug("retry", "key", r.o.KeyOf(in), "runs", runs, "delivered", md.NumDelivered, "err", err)
	}
	if r.stopping.Load() && err != nil {
		sample = limit.SampleNone // cut short by shutdown: says nothing about the dependency
	}
	return latency, sample
}

// outcome classifies a handler result for the adaptive limit: a permanent answer (not found,
// invalid) is a normal latency sample; transient errors, outages and timeouts are drops.
func (r *runner) outcome(err error) limit.Outcome {
	if err == nil {
		return limit.SampleOK
	}
	if _, ok := IsPermanent(err); ok {
		return limit.SampleOK
	}
	if IsFatal(err) {
		return limit.SampleNone
	}
	return limit.SampleDrop
}

// hold keeps msg for d, extending its ack deadline; false when shutdown began.
func (r *runner) hold(ctx context.Context, msg jetstream.Msg, d time.Duration) bool {
	t := time.NewTicker(max(r.ackWait/3, 100*time.Millisecond))
	defer t.Stop()
	end := time.After(d)
	for {
		_ = msg.InProgress()
		select {
		case <-end:
			return !r.stopping.Load()
		case <-ctx.Done():
			return false
		case <-r.stop:
			return false
		case <-t.C:
		}
	}
}

// answered notes a handler call that started at began and succeeded.
func (r *runner) answered(began time.Time) {
	for t := began.UnixNano(); ; {
		last := r.lastOK.Load()
		if last >= t || r.lastOK.CompareAndSwap(last, t) {
			return
		}
	}
}

// outageLog says a dependency is down, at most every 30 seconds.
func (r *runner) outageLog(err error) {
	now := time.Now().UnixNano()
	last := r.lastOutageLog.Load()
	if now-last > int64(30*time.Second) && r.lastOutageLog.CompareAndSwap(last, now) {
		r.o.Log.Warn("dependency unavailable: holding messages and retrying until it answers", "err", err)
	}
}

// call runs the handler with InProgress heartbeats while it works and turns a panic into an error.
// latency is its run time without what it reported through limit.Waited.
func (r *runner) call(ctx context.Context, msg jetstream.Msg, in Msg) (latency time.Duration, err error) {
	start := time.Now()
	ctx, waited := limit.WithWaits(ctx)
	done := make(chan struct{})
	defer func() { latency = max(time.Since(start)-time.Duration(waited.Load()), 0) }()
	defer close(done)
	if r.ackWait > 0 {
		go func() {
			t := time.NewTicker(max(r.ackWait/3, 100*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					_ = msg.InProgress()
				}
			}
		}()
	}
	defer func() {
		if v := recover(); v != nil {
			err = panicError{v}
		}
	}()
	return 0, deliver(ctx, r.o.JS, r.h, in)
}

// deadLetter stores msg in the DLQ with the handler runs it had, then terms it; false when the
// dead letter could not be stored and msg was nakked instead.
func (r *runner) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, runs uint64, reason string, cause error) bool {
	d := bus.DeadLetter{Key: r.o.KeyOf(input(msg)), Stage: r.o.Stage, Reason: reason, Err: cause.Error(),
		Attempts: runs, From: msg.Headers()}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := bus.PublishDeadLetter(pctx, r.o.JS, r.o.Names, d); err != nil {
		// Never term without the dead letter stored: the key would be lost.
		r.o.Log.Error("dead-letter failed; message will be redelivered", "err", err)
		_ = msg.NakWithDelay(r.o.Backoff(runs))
		r.o.Metrics.count(r.o, "retry")
		return false
	}
	_ = msg.TermWithReason(reason)
	r.o.Metrics.count(r.o, "dead", reason)
	r.o.Log.Debug("dead-lettered", "key", d.Key, "reason", reason, "runs", runs, "delivered", md.NumDelivered)
	return true
}
