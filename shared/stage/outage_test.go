package stage_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/stage"
)

var errUpstream = errors.New("api error ServiceUnavailable: no healthy upstream")

// TestRunOutageAlone: a key that a dependency refuses with an outage error forever, while it
// answers the others (one object its S3 answers 503 for), is held for OutageAlone and then uses
// its budget like any transient error: it ends in the DLQ instead of holding a worker forever.
func TestRunOutageAlone(t *testing.T) {
	const budget = 3
	_, js, n := budgetJob(t, budget, time.Minute)
	keys := []string{"bad"}
	for i := range 1500 {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}
	publishKeys(t, js, n, keys...)
	cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	var bad, good atomic.Int32
	h := func(_ context.Context, m stage.Msg) error {
		if string(m.Body) == "bad" {
			bad.Add(1)
			return stage.Outage(errUpstream)
		}
		good.Add(1)
		time.Sleep(5 * time.Millisecond)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil && dlqCount(t, js, n, bus.StageFetcher, bus.ReasonSourceError) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	if err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 4,
		ExhaustedReason: bus.ReasonSourceError, OutagePause: 5 * time.Millisecond, OutageAlone: 100 * time.Millisecond,
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil {
		t.Fatal(err)
	}
	if got := dlqCount(t, js, n, bus.StageFetcher, bus.ReasonSourceError); got != 1 {
		t.Fatalf("%d dead letters source_error, want 1 (calls of the bad key %d, good keys handled %d)", got, bad.Load(), good.Load())
	}
	dlq, err := js.Stream(context.Background(), n.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dlq.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "bad" || m.Header.Get(bus.HdrAttempts) != fmt.Sprint(budget) {
		t.Errorf("dead letter of %q with %s runs, want bad with %d", m.Data, m.Header.Get(bus.HdrAttempts), budget)
	}
}

// TestRunOutageHeld: while nothing answers (a whole dependency down), messages are held however
// long it lasts, past OutageAlone and past their budget; so are they when the only successes are
// of calls already running when the outage began.
func TestRunOutageHeld(t *testing.T) {
	const budget = 2
	_, js, n := budgetJob(t, budget, time.Minute)
	publishKeys(t, js, n, "slow", "a", "b", "c")
	cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	slowStarted := make(chan struct{})
	h := func(_ context.Context, m stage.Msg) error {
		if string(m.Body) == "slow" { // in flight when the outage begins; answered before it
			close(slowStarted)
			time.Sleep(300 * time.Millisecond)
			return nil
		}
		<-slowStarted
		calls.Add(1)
		return stage.Outage(errUpstream)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 4,
		OutagePause: 5 * time.Millisecond, OutageAlone: 50 * time.Millisecond,
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got < 3*(budget+2) {
		t.Errorf("%d calls of the held keys: not held past their budget", got)
	}
	for _, reason := range bus.Reasons {
		if got := dlqCount(t, js, n, bus.StageFetcher, reason); got != 0 {
			t.Errorf("%d dead letters %s during an outage", got, reason)
		}
	}
}
