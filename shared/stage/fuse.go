package stage

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// Service is a stage set up to serve: its consumer, handler and runner options, and what to
// release once it stops.
type Service struct {
	Consumer jetstream.Consumer
	Handler  Handler
	Options  Options
	Close    func() // nil: nothing to release
}

// Serve runs the service until ctx ends or it fails, then releases what it holds.
func (s *Service) Serve(ctx context.Context) error {
	if s.Close != nil {
		defer s.Close()
	}
	return Serve(ctx, s.Consumer, s.Handler, s.Options)
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
// fellBack, if set, is told which stage failed and why.
func Fuse(fellBack func(stage string, err error), svcs ...*Service) Handler {
	// The handlers as they are now: the fused handler usually replaces the first one's.
	handlers := make([]Handler, len(svcs))
	for i, s := range svcs {
		handlers[i] = s.Handler
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
			next, err := handlers[i+1](ctx, delivered(out, in.Progress))
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
