package stage

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/limit"
)

// Service is a stage set up to serve: its consumers (one per partition of its work queue),
// handler and runner options, and what to release once it stops.
type Service struct {
	Consumers []jetstream.Consumer
	Handler   Handler
	Options   Options
	Close     func() // nil: nothing to release
}

// Serve runs the service until ctx ends or it fails, then releases what it holds.
func (s *Service) Serve(ctx context.Context) error {
	if s.Close != nil {
		defer s.Close()
	}
	return ServeAll(ctx, s.Consumers, s.Handler, s.Options)
}

// Fuse chains the services' handlers in one process, to be served by the first service's
// runner: each output is the next handler's input, as if stored and delivered (the record goes
// through the header codec), and the last output is what the runner stores. When a later handler
// fails, whatever the error, the fused handler returns the output before it instead: the runner
// stores it in that stage's stream, where the stage's own service retries or dead-letters it
// under its own name and budget, exactly as without fusion. Only the first handler's errors are
// the fused handler's own. The Stored hooks of every output consumed on the way run once the
// output the runner stores holds their work, and so do the later stages' message counts and
// latencies (ferry_messages_total reads as without fusion).
//
// A later stage with a Limiter runs at most its ceiling of fused calls at once (its --concurrency,
// lowered by `ferry throttle --concurrency`), waiting for room; the wait is reported through
// limit.Waited. Not its adaptive limit: fused calls do not feed it, so it would stay at its
// start. A later handler's panic is a failure like any other: the key is handed on.
//
// fellBack, if set, is told which stage failed and why.
func Fuse(fellBack func(stage string, err error), svcs ...*Service) Handler {
	// The handlers as they are now: the fused handler usually replaces the first one's.
	handlers := make([]Handler, len(svcs))
	gates := make([]*gate, len(svcs))
	for i, s := range svcs {
		handlers[i] = s.Handler
		if s.Options.Limiter != nil {
			gates[i] = &gate{lim: s.Options.Limiter, wake: make(chan struct{})}
		}
	}
	return func(ctx context.Context, in Msg) (*Output, error) {
		out, err := handlers[0](ctx, in)
		if err != nil || out == nil {
			return out, err
		}
		var hooks []func(context.Context)
		for i, svc := range svcs[1:] {
			if out.Stored != nil {
				hooks = append(hooks, out.Stored)
			}
			began := time.Now()
			next, err := gates[i+1].call(ctx, handlers[i+1], delivered(out, in.Progress))
			if err != nil || next == nil {
				if err != nil && fellBack != nil {
					fellBack(svc.Options.Stage, err)
				}
				out.Stored = chain(hooks)
				return out, nil
			}
			o, took := svc.Options, time.Since(began)
			hooks = append(hooks, func(context.Context) {
				o.Metrics.observe(o, took)
				o.Metrics.count(o, "ok")
			})
			out = next
		}
		if out.Stored != nil {
			hooks = append(hooks, out.Stored)
		}
		out.Stored = chain(hooks)
		return out, nil
	}
}

// delivered is out as the next stage would receive it from its stream.
func delivered(out *Output, progress func()) Msg {
	h := nats.Header{}
	out.Record.Encode(h)
	rec, err := bus.DecodeRecord(h)
	return Msg{Subject: out.Subject, Record: rec, Malformed: err, Body: out.Body, Progress: progress}
}

func chain(hooks []func(context.Context)) func(context.Context) {
	if len(hooks) == 0 {
		return nil
	}
	return func(ctx context.Context) {
		for _, h := range hooks {
			h(ctx)
		}
	}
}

// gate keeps a later stage's fused calls under its limiter's ceiling. The limiter's own slots
// cannot be shared: the stage's idle workers hold them while they wait for a message.
type gate struct {
	lim  *limit.Limiter
	mu   sync.Mutex
	n    int
	wake chan struct{}
}

// call runs h on in once there is room (nil gate: at once), turning a panic into an error.
func (g *gate) call(ctx context.Context, h Handler, in Msg) (out *Output, err error) {
	if g != nil {
		if err := g.acquire(ctx); err != nil {
			return nil, err
		}
		defer g.release()
	}
	defer func() {
		if v := recover(); v != nil {
			out, err = nil, panicError{v}
		}
	}()
	return h(ctx, in)
}

func (g *gate) acquire(ctx context.Context) error {
	start := time.Now()
	defer func() { limit.Waited(ctx, time.Since(start)) }() // the throttle's time, not S3's
	for {
		g.mu.Lock()
		if g.n < g.lim.Ceiling() {
			g.n++
			g.mu.Unlock()
			return nil
		}
		wake := g.wake
		g.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-time.After(100 * time.Millisecond): // the ceiling may have risen
		}
	}
}

func (g *gate) release() {
	g.mu.Lock()
	g.n--
	close(g.wake)
	g.wake = make(chan struct{})
	g.mu.Unlock()
}
