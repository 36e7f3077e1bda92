package stage_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/fault"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/stage"
)

func publishKeys(t *testing.T, js jetstream.JetStream, n bus.Names, keys ...string) {
	t.Helper()
	for _, k := range keys {
		m := nats.NewMsg(n.KeysSubject)
		m.Data = []byte(k)
		m.Header.Set(bus.HdrID, bus.KeyID(n.Job, k))
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

func dlqCount(t *testing.T, js jetstream.JetStream, n bus.Names, stageName, reason string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), n.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(n.DLQSubject(stageName, reason)))
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, c := range info.State.Subjects {
		total += c
	}
	return total
}

func TestRunOutcomes(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name       string
		handler    func(calls *atomic.Int32) func(context.Context, stage.Msg) error
		wantCalls  int32 // per message
		wantReason string
		wantFatal  bool
	}{
		{name: "ok acks", wantCalls: 1,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error { c.Add(1); return nil }
			}},
		{name: "permanent dead-letters at once", wantCalls: 1, wantReason: bus.ReasonNotFound,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error {
					c.Add(1)
					return stage.Permanent(bus.ReasonNotFound, errBoom)
				}
			}},
		{name: "transient retries then dead-letters", wantCalls: 3, wantReason: bus.ReasonSourceError,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error {
					c.Add(1)
					return stage.Transient(bus.ReasonSourceError, errBoom)
				}
			}},
		{name: "panic is transient", wantCalls: 3, wantReason: bus.ReasonMaxDeliveries,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error { c.Add(1); panic("bad") }
			}},
		{name: "outage holds the message without using deliveries", wantCalls: 5,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error {
					if c.Add(1) < 5 { // more failures than MaxDeliver (3) allows
						return stage.Outage(errBoom)
					}
					return nil
				}
			}},
		{name: "a client's outage is held as such", wantCalls: 4,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error {
					if c.Add(1) < 4 {
						return fmt.Errorf("key k: %w", fault.Mark(errBoom, fault.Outage))
					}
					return nil
				}
			}},
		{name: "a client's permanent error dead-letters at once, with the stage's reason", wantCalls: 1, wantReason: bus.ReasonMaxDeliveries,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error { c.Add(1); return fault.Mark(errBoom, fault.Permanent) }
			}},
		{name: "a client's fatal error stops the runner", wantCalls: 1, wantFatal: true,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error { c.Add(1); return fault.Mark(errBoom, fault.Fatal) }
			}},
		{name: "fatal stops the runner", wantCalls: 1, wantFatal: true,
			handler: func(c *atomic.Int32) func(context.Context, stage.Msg) error {
				return func(context.Context, stage.Msg) error { c.Add(1); return stage.Fatal(errBoom) }
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			publishKeys(t, js, n, "k1")
			cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
			if err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int32
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- stage.Serve(ctx, cons, plain(tt.handler(&calls)), stage.Options{
					Stage: bus.StageFetcher, Names: n, JS: js, Workers: 2,
					Backoff:     func(uint64) time.Duration { return 10 * time.Millisecond },
					OutagePause: 10 * time.Millisecond,
				})
			}()
			// Wait until the key has left the work queue (acked or termed) or the runner stopped.
			deadline := time.Now().Add(4 * time.Second)
			for time.Now().Before(deadline) {
				info, _ := cons.Info(context.Background())
				if calls.Load() >= tt.wantCalls && info != nil && info.NumPending == 0 && info.NumAckPending == 0 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if tt.wantFatal {
				select {
				case err := <-done:
					if !stage.IsFatal(err) {
						t.Fatalf("Serve returned %v, want a fatal error", err)
					}
				case <-time.After(4 * time.Second):
					t.Fatal("runner did not stop on a fatal error")
				}
			} else {
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Serve: %v", err)
				}
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("handler calls = %d, want %d", got, tt.wantCalls)
			}
			if tt.wantReason != "" {
				if got := dlqCount(t, js, n, bus.StageFetcher, tt.wantReason); got != 1 {
					t.Errorf("dead letters %s = %d, want 1", tt.wantReason, got)
				}
			}
		})
	}
}

// TestRunLimiter: the runner never has more handlers in flight than the limiter allows, and a
// lowered limit holds while running.
// keysBacklog is a job whose KEYS holds count keys, and the fetcher's consumer on it.
func keysBacklog(t *testing.T, count int) (jetstream.JetStream, bus.Names, jetstream.Consumer, []string) {
	t.Helper()
	js, n := bustest.Job(t)
	keys := make([]string, count)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	publishKeys(t, js, n, keys...)
	cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	return js, n, cons, keys
}

func TestRunLimiter(t *testing.T) {
	js, n, cons, keys := keysBacklog(t, 60)
	lim := limit.NewLimiter(4, false)
	var inflight, peak, done atomic.Int32
	lowered := make(chan struct{})
	var peakAfter atomic.Int32
	h := func(context.Context, stage.Msg) error {
		now := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		select {
		case <-lowered:
			for p := peakAfter.Load(); now > p && !peakAfter.CompareAndSwap(p, now); p = peakAfter.Load() {
			}
		default:
		}
		time.Sleep(20 * time.Millisecond)
		if done.Add(1) == 20 {
			lim.SetCeiling(1)
			time.Sleep(50 * time.Millisecond) // let the handlers started under 4 finish
			close(lowered)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		for done.Load() < int32(len(keys)) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	if err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 16, Limiter: lim}); err != nil {
		t.Fatal(err)
	}
	if done.Load() != int32(len(keys)) {
		t.Fatalf("%d of %d handled", done.Load(), len(keys))
	}
	if p := peak.Load(); p > 4 || p < 2 {
		t.Errorf("peak in flight %d, want 2..4 under a limit of 4 with 16 workers", p)
	}
	if p := peakAfter.Load(); p != 1 {
		t.Errorf("peak in flight %d after the limit went to 1", p)
	}
}

// TestRunPrefetchFollowsLimit: when the limit falls far below the workers, the prefetch falls
// with it, so messages do not wait in the client's buffer while their ack wait runs out. The
// consumer's ack-pending count (in flight plus prefetched) shows it.
func TestRunPrefetchFollowsLimit(t *testing.T) {
	js, n, cons, keys := keysBacklog(t, 400)
	lim := limit.NewLimiter(32, false)
	var done atomic.Int32
	h := func(context.Context, stage.Msg) error {
		time.Sleep(100 * time.Millisecond)
		done.Add(1)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() {
		ran <- stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 32, Limiter: lim})
	}()
	ackPending := func() int {
		ci, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return ci.NumAckPending
	}
	eventually := func(what string, cond func(int) bool) int {
		t.Helper()
		var got int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = ackPending(); cond(got) {
				return got
			}
		}
		ci, _ := cons.Info(context.Background())
		t.Fatalf("ack pending %d, want %s (handled %d; consumer: delivered %+v, ack floor %+v, waiting %d, redelivered %d)",
			got, what, done.Load(), ci.Delivered, ci.AckFloor, ci.NumWaiting, ci.NumRedelivered)
		return got
	}
	before := eventually("about 32 at a limit of 32", func(p int) bool { return p >= 24 })
	lim.SetCeiling(2)
	after := eventually("at most 6 (2 in flight, 2 prefetched, slack) at a limit of 2", func(p int) bool { return p <= 6 })
	lim.SetCeiling(32)
	again := eventually("about 32 again at a limit of 32", func(p int) bool { return p >= 24 })
	t.Logf("ack pending: %d at 32, %d at 2, %d at 32 again", before, after, again)
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if got := bustest.Msgs(t, js, n.Keys); got+uint64(done.Load()) != uint64(len(keys)) {
		t.Errorf("KEYS holds %d after %d handled, want %d in all", got, done.Load(), len(keys))
	}
}

// plain makes a Handler of a function that hands nothing on.
func plain(f func(context.Context, stage.Msg) error) stage.Handler {
	return func(ctx context.Context, in stage.Msg) (*stage.Output, error) { return nil, f(ctx, in) }
}
