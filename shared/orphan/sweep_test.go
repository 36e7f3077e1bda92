package orphan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
)

const settle = 50 * time.Millisecond

func publishKeys(t *testing.T, js jetstream.JetStream, n bus.Names, count int) {
	t.Helper()
	for i := 1; i <= count; i++ {
		key := fmt.Sprintf("photos/%03d.jpg", i)
		if _, err := js.Publish(context.Background(), n.KeysSubject, []byte(key),
			jetstream.WithMsgID(bus.MsgID("keys", bus.KeyID(n.Job, key)))); err != nil {
			t.Fatal(err)
		}
	}
}

// deliverAll fetches from the fetcher's consumer until it has seen want distinct keys or a few
// seconds passed, acking each, and returns how many times each key came.
func deliverAll(t *testing.T, js jetstream.JetStream, n bus.Names, want int) map[string]int {
	t.Helper()
	c, err := js.Consumer(context.Background(), n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for deadline := time.Now().Add(3 * time.Second); len(got) < want && time.Now().Before(deadline); {
		batch, err := c.Fetch(want, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got[string(m.Data())]++
			m.Ack()
		}
	}
	return got
}

// TestSweepConcurrent: many services sweep at once. Sweepers that find the same orphans at the
// same moment store one copy of each (the copies' Nats-Msg-Ids are equal, and the duplicate
// window drops all but the first); every key is delivered once, and the requeued count over
// all sweepers is the number of orphans, not a multiple of it.
func TestSweepConcurrent(t *testing.T) {
	const total, k, sweepers = 10, 6, 4
	js, n := bustest.Job(t)
	publishKeys(t, js, n, total)
	bustest.Orphan(t, js, n.Keys, n.Fetcher, k) // #1..#5 orphaned

	results := make([][]Result, sweepers)
	var wg sync.WaitGroup
	for i := range sweepers {
		s := &Sweeper{JS: js, Names: n, Settle: settle, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		wg.Go(func() {
			var err error
			if results[i], err = s.Sweep(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mine, requeued := 0, 0
	for _, rs := range results {
		for _, r := range rs {
			if r.Stream == n.Keys {
				mine += r.Requeued - r.Deduped
				requeued += r.Requeued
			}
		}
	}
	if mine != k-1 {
		t.Errorf("%d copies stored over all sweepers (%d publishes), want %d", mine, requeued, k-1)
	}
	if got := bustest.Msgs(t, js, n.Keys); got != total {
		t.Errorf("%d messages in KEYS after the sweeps, want %d (no duplicate copies)", got, total)
	}
	got := deliverAll(t, js, n, total)
	for key, times := range got {
		if times != 1 {
			t.Errorf("%s delivered %d times", key, times)
		}
	}
	if len(got) != total {
		t.Errorf("%d distinct keys delivered, want %d", len(got), total)
	}
}

// TestSweepLostAdvisory: a message that ran out of deliveries sits below its consumer's ack floor
// until the advisor dead-letters it; while its advisory waits in ADVISORIES the sweep leaves it
// to the advisor. When that advisory was lost (ADVISORIES purged, as a capture that missed it
// leaves things), nothing else would ever handle it: the sweep requeues it with fresh
// deliveries, so it ends done or, out of deliveries again, dead-lettered.
func TestSweepLostAdvisory(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	st := bus.DefaultSettings()
	st.MaxDeliver, st.Backstop = 3, 3
	if _, err := bus.Setup(ctx, js, n, st, true); err != nil {
		t.Fatal(err)
	}
	publishKeys(t, js, n, 1)
	c, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 { // three deliveries, each nakked; the fourth pull finds it out of deliveries
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			m.Nak()
		}
	}
	for deadline := time.Now().Add(5 * time.Second); bustest.Msgs(t, js, n.Advisories) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no max-deliveries advisory")
		}
	}
	s := &Sweeper{JS: js, Names: n, Settle: settle, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	rs, err := s.Sweep(ctx)
	if err != nil || rs[0].AwaitAdvisor != 1 || rs[0].Requeued != 0 {
		t.Fatalf("sweep with the advisory waiting: %+v, %v; want it left to the advisor", rs[0], err)
	}

	adv, err := js.Stream(ctx, n.Advisories)
	if err != nil {
		t.Fatal(err)
	}
	if err := adv.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if rs, err = s.Sweep(ctx); err != nil || rs[0].Requeued != 1 {
		t.Fatalf("sweep after the advisory was lost: %+v, %v; want it requeued", rs[0], err)
	}
	if got := deliverAll(t, js, n, 1); got["photos/001.jpg"] != 1 {
		t.Errorf("after the sweep the consumer delivered %v, want photos/001.jpg once", got)
	}
}

// TestSweepRequeueLimit: a message orphaned again after MaxRequeues requeues (each copy's
// Nats-Msg-Id carries one "/repair-<seq>" more) is dead-lettered max_deliveries with a reason
// instead of being requeued for ever: a poison message whose advisories keep getting lost would
// otherwise loop through the sweep once a minute.
func TestSweepRequeueLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		repairs   int
		wantDead  bool
		wantInDLQ uint64
	}{
		{"never requeued", 0, false, 0},
		{"requeued once less than the limit", MaxRequeues - 1, false, 0},
		{"requeued up to the limit", MaxRequeues, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			ctx := context.Background()
			key := "photos/poison.jpg"
			id := bus.MsgID("keys", bus.KeyID(n.Job, key))
			for i := range tc.repairs {
				id = ID(id, uint64(10+i))
			}
			if _, err := js.PublishMsg(ctx, bus.KeyMsg(n, key, bus.KeyID(n.Job, key), "list:1"), jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
			publishKeys(t, js, n, 1)
			bustest.Orphan(t, js, n.Keys, n.Fetcher, 2) // #1, the poison key, orphaned

			s := &Sweeper{JS: js, Names: n, Settle: settle, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			rs, err := s.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := rs[0].DeadLettered == 1; got != tc.wantDead || rs[0].Requeued+rs[0].DeadLettered != 1 {
				t.Errorf("sweep: %+v; want dead-lettered %v", rs[0], tc.wantDead)
			}
			if got := bustest.Msgs(t, js, n.DLQ); got != tc.wantInDLQ {
				t.Errorf("%d dead letters, want %d", got, tc.wantInDLQ)
			}
			if tc.wantDead {
				keys, err := js.Stream(ctx, n.Keys)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := keys.GetMsg(ctx, 1); !errors.Is(err, jetstream.ErrMsgNotFound) {
					t.Errorf("KEYS still holds the dead-lettered message: %v", err)
				}
				dlq, err := js.Stream(ctx, n.DLQ)
				if err != nil {
					t.Fatal(err)
				}
				m, err := dlq.GetMsg(ctx, 1)
				if err != nil {
					t.Fatal(err)
				}
				if string(m.Data) != key || m.Header.Get(bus.HdrReason) != bus.ReasonMaxDeliveries || m.Header.Get(bus.HdrStage) != bus.StageFetcher {
					t.Errorf("dead letter %q %q", m.Data, m.Header)
				}
			}
		})
	}
}
