package stage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// budgetJob starts a server with job "t" set up as `ferry setup --max-deliver budget --ack-wait
// ackWait` sets it up, and returns the server's URL for connections of their own.
func budgetJob(t *testing.T, budget int, ackWait time.Duration) (string, jetstream.JetStream, bus.Names) {
	t.Helper()
	srv, err := bus.StartEmbedded(t.TempDir(), bus.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	js, _ := connectTo(t, srv.URL())
	n := bus.For("t")
	s := bus.DefaultSettings()
	s.MaxDeliver, s.AckWait, s.Dedupe = budget, ackWait, max(3*ackWait, time.Minute)
	if _, err := bus.Setup(context.Background(), js, n, s, true); err != nil {
		t.Fatal(err)
	}
	return srv.URL(), js, n
}

// connectTo is one "process": its own connection, closed at the end of the test at the latest.
func connectTo(t *testing.T, url string) (jetstream.JetStream, func()) {
	t.Helper()
	nc, js, err := bus.Connect(context.Background(), url, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js, nc.Close
}

// handleAll runs a healthy runner until every key was handled once (or 15 s passed) and returns
// the keys it handled.
func handleAll(t *testing.T, js jetstream.JetStream, n bus.Names, keys []string) map[string]int {
	t.Helper()
	cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	handled := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h := func(_ context.Context, m stage.Msg) error {
		mu.Lock()
		defer mu.Unlock()
		handled[string(m.Body)]++
		if len(handled) == len(keys) {
			cancel()
		}
		return nil
	}
	if err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 16}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return handled
}

func checkAllHandled(t *testing.T, js jetstream.JetStream, n bus.Names, keys []string, handled map[string]int) {
	t.Helper()
	for _, k := range keys {
		if handled[k] == 0 {
			t.Errorf("key %s never handled by the healthy runner", k)
		}
	}
	for _, reason := range bus.Reasons {
		if got := dlqCount(t, js, n, bus.StageFetcher, reason); got != 0 {
			t.Errorf("%d dead letters %s, want none: no handler failed", got, reason)
		}
	}
}

// TestRunStopsKeepBudget: a service stopped again and again — by a Fatal error (an S3 that
// refuses every upload, a crash loop) or by a signal (a rolling deploy) — with a full prefetch,
// more times than --max-deliver allows, must not use up the budget of the messages it prefetched
// but never ran: a healthy runner afterwards handles every one of them.
func TestRunStopsKeepBudget(t *testing.T) {
	for _, mode := range []string{"fatal", "signal"} {
		t.Run(mode, func(t *testing.T) {
			const budget, restarts = 3, 6
			_, js, n := budgetJob(t, budget, time.Minute)
			keys := make([]string, 40)
			for i := range keys {
				keys[i] = fmt.Sprintf("k%d", i)
			}
			publishKeys(t, js, n, keys...)
			cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
			if err != nil {
				t.Fatal(err)
			}
			for round := range restarts {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var calls atomic.Int32
				h := func(hctx context.Context, m stage.Msg) error {
					calls.Add(1)
					if mode == "fatal" {
						return stage.Fatal(errors.New("access denied"))
					}
					<-hctx.Done() // held until the grace after the signal ends
					return hctx.Err()
				}
				if mode == "signal" {
					go func() { // the signal, once every worker runs a handler and the intake is full
						for ctx.Err() == nil && calls.Load() < 16 {
							time.Sleep(10 * time.Millisecond)
						}
						for ctx.Err() == nil {
							if ci, err := cons.Info(ctx); err == nil && ci.NumAckPending >= 24 {
								break
							}
							time.Sleep(10 * time.Millisecond)
						}
						cancel()
					}()
				}
				err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js,
					Workers: 16, Grace: 100 * time.Millisecond})
				cancel()
				if mode == "fatal" != stage.IsFatal(err) {
					t.Fatalf("round %d: Serve returned %v", round, err)
				}
				if calls.Load() == 0 {
					t.Fatalf("round %d: no handler ran", round)
				}
			}
			checkAllHandled(t, js, n, keys, handleAll(t, js, n, keys))
		})
	}
}

// TestRunCrashesKeepBudget: processes that die with prefetched messages (never acked, never
// nakked: their ack wait runs out) more often than --max-deliver must not use up those
// messages' budget.
func TestRunCrashesKeepBudget(t *testing.T) {
	const budget, crashes = 3, 5
	url, js, n := budgetJob(t, budget, time.Second)
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	publishKeys(t, js, n, keys...)
	for crash := range crashes {
		pjs, die := connectTo(t, url)
		cons, err := pjs.Consumer(context.Background(), n.Keys, n.Fetcher)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for got < len(keys) { // redelivered once the previous process's ack wait ran out
			batch, err := cons.Fetch(len(keys)-got, jetstream.FetchMaxWait(3*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			before := got
			for range batch.Messages() {
				got++
			}
			if got == before {
				t.Fatalf("crash %d: only %d of %d messages delivered", crash, got, len(keys))
			}
		}
		die()
	}
	checkAllHandled(t, js, n, keys, handleAll(t, js, n, keys))
}

// TestRunTransientBudget: a message that fails every time is dead-lettered after exactly
// --max-deliver handler runs, however many deliveries stops in between used, and its dead letter
// says how many runs it had.
func TestRunTransientBudget(t *testing.T) {
	const budget = 3
	_, js, n := budgetJob(t, budget, time.Minute)
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}
	publishKeys(t, js, n, keys...)
	cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	fail := func(context.Context, stage.Msg) error {
		calls.Add(1)
		return stage.Transient(bus.ReasonSourceError, errors.New("read timeout"))
	}
	// Stops with a full prefetch first: each uses a delivery of every key, and one run of the
	// keys whose handler got to fail.
	for round := range 4 {
		ctx, cancel := context.WithCancel(context.Background())
		h := func(ctx context.Context, m stage.Msg) error {
			if calls.CompareAndSwap(0, 1) { // one key fails once, the rest is stopped
				return stage.Transient(bus.ReasonSourceError, errors.New("read timeout"))
			}
			cancel()
			return stage.Fatal(errors.New("stop"))
		}
		if err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 4,
			Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil && !stage.IsFatal(err) {
			t.Fatalf("round %d: %v", round, err)
		}
		cancel()
	}
	if calls.Load() != 1 {
		t.Fatalf("%d failing runs before the stops' rounds ended, want 1", calls.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil && dlqCount(t, js, n, bus.StageFetcher, bus.ReasonSourceError) < uint64(len(keys)) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	if err := stage.Serve(ctx, cons, plain(fail), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 4,
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil {
		t.Fatal(err)
	}
	if got := dlqCount(t, js, n, bus.StageFetcher, bus.ReasonSourceError); got != uint64(len(keys)) {
		t.Fatalf("%d dead letters source_error, want %d", got, len(keys))
	}
	if got, want := calls.Load(), int32(budget*len(keys)); got != want {
		t.Errorf("%d handler runs, want %d (%d per key)", got, want, budget)
	}
	dlq, err := js.Stream(context.Background(), n.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= uint64(len(keys)); seq++ {
		m, err := dlq.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get(bus.HdrAttempts); got != fmt.Sprint(budget) {
			t.Errorf("dead letter of %s: attempts %s, want %d handler runs", m.Data, got, budget)
		}
	}
}

// TestRunCrashingMessageDeadLettered: a message whose handler never returns because the process
// dies each time is dead-lettered by a runner once it has used its budget of runs, well before
// the server's delivery backstop.
func TestRunCrashingMessageDeadLettered(t *testing.T) {
	const budget = 2
	url, js, n := budgetJob(t, budget, time.Second)
	publishKeys(t, js, n, "poison")
	var calls atomic.Int32
	for round := 0; dlqCount(t, js, n, bus.StageFetcher, bus.ReasonMaxDeliveries) == 0; round++ {
		if round == budget+3 {
			t.Fatalf("not dead-lettered after %d crashes (%d handler runs)", round, calls.Load())
		}
		pjs, die := connectTo(t, url)
		cons, err := pjs.Consumer(context.Background(), n.Keys, n.Fetcher)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		started := make(chan struct{}, 1)
		h := func(hctx context.Context, m stage.Msg) error {
			calls.Add(1)
			started <- struct{}{}
			<-hctx.Done() // stuck until the process dies
			return hctx.Err()
		}
		go func() {
			select {
			case <-started:
				die() // the crash: no ack, nak or record written after this
			case <-ctx.Done():
			}
			cancel()
		}()
		_ = stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: pjs, Workers: 2,
			Grace: 50 * time.Millisecond})
		cancel()
		die()
		time.Sleep(1100 * time.Millisecond) // the ack wait
	}
	// The first run is not recorded (only a redelivery records its run before the handler), so
	// a message that kills its process has budget+1 runs.
	if got := calls.Load(); got != budget+1 {
		t.Errorf("%d handler runs, want %d", got, budget+1)
	}
	if got := bustest.Msgs(t, js, n.Keys); got != 0 {
		t.Errorf("KEYS still holds %d messages", got)
	}
}

// TestRunLegacyConsumerBudget: a consumer set up before runs were counted (MaxDeliver is the
// budget, no bus.MetaBudget) keeps its budget; `ferry setup` turns its MaxDeliver into the
// backstop and records the budget, and a service's own setup leaves it alone.
func TestRunLegacyConsumerBudget(t *testing.T) {
	const budget = 3
	_, js, n := budgetJob(t, budget, time.Minute)
	ctx := context.Background()
	if _, err := js.UpdateConsumer(ctx, n.Keys, jetstream.ConsumerConfig{Durable: n.Fetcher,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxDeliver: budget, MaxAckPending: 10000}); err != nil {
		t.Fatal(err)
	}
	publishKeys(t, js, n, "k")
	cons, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cons.CachedInfo().Config.Metadata[bus.MetaBudget]; ok {
		t.Fatal("legacy consumer still has a budget entry")
	}
	var calls atomic.Int32
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go func() {
		for rctx.Err() == nil && dlqCount(t, js, n, bus.StageFetcher, bus.ReasonSourceError) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	h := func(context.Context, stage.Msg) error {
		calls.Add(1)
		return stage.Transient(bus.ReasonSourceError, errors.New("read timeout"))
	}
	if err := stage.Serve(rctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 2,
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != budget || dlqCount(t, js, n, bus.StageFetcher, bus.ReasonSourceError) != 1 {
		t.Errorf("%d runs, %d dead letters; want %d runs, 1 dead letter", calls.Load(),
			dlqCount(t, js, n, bus.StageFetcher, bus.ReasonSourceError), budget)
	}
	s := bus.DefaultSettings()
	s.MaxDeliver = budget
	for _, update := range []bool{false, true} {
		if _, err := bus.Setup(ctx, js, n, s, update); err != nil {
			t.Fatal(err)
		}
		ci, err := js.Consumer(ctx, n.Keys, n.Fetcher)
		if err != nil {
			t.Fatal(err)
		}
		c := ci.CachedInfo().Config
		want, wantMeta := budget, ""
		if update {
			want, wantMeta = bus.DeliveryBackstop(budget), fmt.Sprint(budget)
		}
		if c.MaxDeliver != want || c.Metadata[bus.MetaBudget] != wantMeta {
			t.Errorf("setup (update %v): MaxDeliver %d, budget %q; want %d, %q", update, c.MaxDeliver, c.Metadata[bus.MetaBudget], want, wantMeta)
		}
	}
}

// lossyConsumer loses the acks the drop function picks (as a reconnect loses a plain Ack).
type lossyConsumer struct {
	jetstream.Consumer
	drop func() bool
}

func (c lossyConsumer) Messages(opts ...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	it, err := c.Consumer.Messages(opts...)
	return lossyIter{it, c.drop}, err
}

type lossyIter struct {
	jetstream.MessagesContext
	drop func() bool
}

func (i lossyIter) Next(opts ...jetstream.NextOpt) (jetstream.Msg, error) {
	m, err := i.MessagesContext.Next(opts...)
	if err != nil {
		return m, err
	}
	return lossyMsg{m, i.drop}, nil
}

type lossyMsg struct {
	jetstream.Msg
	drop func() bool
}

func (m lossyMsg) Ack() error {
	if m.drop() {
		return nil // sent into a dead connection: the server never sees it
	}
	return m.Msg.Ack()
}

// TestRunLostAckAfterLastRun: a message fails once, succeeds on its last budgeted run (its output
// is durable), and the ack of that run is lost. The redelivery must run it again (it finds its
// output), not find its budget used up and dead-letter it: the key would be both passed on and
// dead-lettered.
func TestRunLostAckAfterLastRun(t *testing.T) {
	const budget = 2
	_, js, n := budgetJob(t, budget, time.Second)
	publishKeys(t, js, n, "k")
	cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	var calls, succeeded atomic.Int32
	h := func(context.Context, stage.Msg) error {
		if calls.Add(1) == 1 {
			return stage.Transient(bus.ReasonSourceError, errors.New("read timeout"))
		}
		succeeded.Add(1)
		return nil
	}
	var acks atomic.Int32
	lc := lossyConsumer{cons, func() bool { return acks.Add(1) == 1 }} // the first ack is lost
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && acks.Load() > 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	if err := stage.Serve(ctx, lc, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 2,
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil {
		t.Fatal(err)
	}
	if succeeded.Load() == 0 {
		t.Fatal("the handler never succeeded")
	}
	for _, reason := range bus.Reasons {
		if got := dlqCount(t, js, n, bus.StageFetcher, reason); got != 0 {
			t.Errorf("%d dead letters %s of a key whose handler succeeded (runs %d, successes %d)", got, reason, calls.Load(), succeeded.Load())
		}
	}
}

// TestRunCrashAfterLastRunOutput: the last budgeted run makes its output durable and its process
// dies before the runner deletes the run's record and acks. The redelivery, in another process,
// must give the key a recheck run (which finds the output and passes the key on), not dead-letter
// it; a recheck that dies too is dead-lettered (TestRunCrashingMessageDeadLettered).
func TestRunCrashAfterLastRunOutput(t *testing.T) {
	const budget = 2
	url, js, n := budgetJob(t, budget, time.Second)
	publishKeys(t, js, n, "k")
	var calls, succeeded atomic.Int32
	pjs, die := connectTo(t, url)
	cons, err := pjs.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	h := func(context.Context, stage.Msg) error {
		if calls.Add(1) == 1 {
			return stage.Transient(bus.ReasonSourceError, errors.New("read timeout"))
		}
		succeeded.Add(1) // the output is durable
		die()            // the crash: no delete, no ack after this
		cancel()
		return nil
	}
	_ = stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: pjs, Workers: 2,
		Grace: 50 * time.Millisecond, Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }})
	cancel()
	if calls.Load() != budget {
		t.Fatalf("%d runs before the crash, want %d", calls.Load(), budget)
	}

	cons, err = js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && ci.NumRedelivered == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	h = func(context.Context, stage.Msg) error {
		calls.Add(1)
		succeeded.Add(1)
		return nil
	}
	if err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	if got := succeeded.Load(); got != 2 {
		t.Errorf("%d successful runs, want 2 (the one whose process died, and the recheck)", got)
	}
	for _, reason := range bus.Reasons {
		if got := dlqCount(t, js, n, bus.StageFetcher, reason); got != 0 {
			t.Errorf("%d dead letters %s of a key whose handler succeeded", got, reason)
		}
	}
	if got := bustest.Msgs(t, js, n.Keys); got != 0 {
		t.Errorf("KEYS still holds %d messages", got)
	}
}

// TestRunAttemptsOnlyOnRetries: messages acked at their first delivery never touch the attempts
// bucket; a retried message's record is deleted when its handler succeeds.
func TestRunAttemptsOnlyOnRetries(t *testing.T) {
	_, js, n := budgetJob(t, 3, time.Minute)
	keys := []string{"a", "b", "c", "d", "e", "retried"}
	publishKeys(t, js, n, keys...)
	cons, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), n.Attempts)
	if err != nil {
		t.Fatal(err)
	}
	var failedOnce atomic.Bool
	var ops atomic.Uint64 // the bucket's writes seen by the first runs, before "retried" failed
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && failedOnce.Load() {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	h := func(_ context.Context, m stage.Msg) error {
		st, err := kv.Status(context.Background())
		if err != nil {
			return err
		}
		if !failedOnce.Load() {
			ops.Store(max(ops.Load(), st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq))
		}
		if string(m.Body) == "retried" && failedOnce.CompareAndSwap(false, true) {
			return stage.Transient(bus.ReasonSourceError, errors.New("read timeout"))
		}
		return nil
	}
	if err := stage.Serve(ctx, cons, plain(h), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 1,
		Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Writes: "1 failed", "2" before the retry, the delete after it.
	if got := st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq; got != 3 {
		t.Errorf("attempts bucket has had %d writes, want 3 (all of the retried key)", got)
	}
	if got := ops.Load(); got != 0 {
		t.Errorf("%d writes to the attempts bucket by messages acked at their first delivery", got)
	}
	if ks, err := kv.ListKeys(context.Background()); err != nil {
		t.Fatal(err)
	} else {
		for k := range ks.Keys() {
			t.Errorf("attempts bucket still holds %s after its message succeeded", k)
		}
	}
}
