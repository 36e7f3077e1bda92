package stage_test

import (
	"context"
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

// TestAdversaryPartitionsPrefetchFollowsLimit: the intake's prefetch follows the limit so that
// messages do not age in buffers past AckWait and come back as redeliveries while their first
// copy still waits for a worker, which then runs the key twice (two S3 PUTs, two HEADs) — the
// case intake.go is written for (`ferry throttle --concurrency` far below the workers, slow
// handlers). merged gives every partition's intake at least 1 (share rounds up) and its pump
// holds one more: below a limit of one a partition that can expire (documented on merged). The test runs 250 and 550 ms handlers and a 1 s AckWait over 24
// keys: one worker on one partition, four workers on four (a limit at the partition count, the
// documented floor), and counts handler runs per key.
func TestAdversaryPartitionsPrefetchFollowsLimit(t *testing.T) {
	for _, tc := range []struct {
		parts int
		took  time.Duration
	}{
		{1, 250 * time.Millisecond},
		{4, 250 * time.Millisecond},
		{4, 550 * time.Millisecond},
	} {
		parts := tc.parts
		t.Run(fmt.Sprintf("partitions=%d,handler=%s", parts, tc.took), func(t *testing.T) {
			ctx := context.Background()
			js, _ := bustest.Job(t)
			s := bus.DefaultSettings()
			s.Partitions, s.MaxDeliver, s.AckWait = parts, 3, time.Second
			n, err := bus.Setup(ctx, js, bus.For(fmt.Sprintf("adv%d-%d", parts, tc.took.Milliseconds())), s, true)
			if err != nil {
				t.Fatal(err)
			}
			const keys = 24
			for i := range keys {
				k := fmt.Sprintf("img/%d.jpg", i)
				id := bus.KeyID(n.Job, k)
				if _, err := js.PublishMsg(ctx, bus.KeyMsg(n, k, id, "adv"), jetstream.WithMsgID(bus.MsgID("keys", id))); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			calls := map[string]int{}
			var maxAckPending atomic.Int64
			cons, err := bus.Consumers(ctx, js, n, n.Keys, n.Fetcher)
			if err != nil {
				t.Fatal(err)
			}
			ackPending := func() int {
				total := 0
				for _, stream := range n.Streams(n.Keys) {
					c, err := js.Consumer(ctx, stream, n.Fetcher)
					if err != nil {
						return -1
					}
					total += c.CachedInfo().NumAckPending
				}
				return total
			}
			handler := func(ctx context.Context, in stage.Msg) (*stage.Output, error) {
				mu.Lock()
				calls[string(in.Body)]++
				mu.Unlock()
				for p := int64(ackPending()); ; {
					if old := maxAckPending.Load(); p <= old || maxAckPending.CompareAndSwap(old, p) {
						break
					}
				}
				time.Sleep(tc.took)
				return nil, nil // nothing handed on: only the runs count here
			}
			sctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- stage.ServeAll(sctx, cons, handler, stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: parts,
					Grace: 5 * time.Second})
			}()
			queued := func() (q uint64) {
				for _, stream := range n.Streams(n.Keys) {
					q += bustest.Msgs(t, js, stream)
				}
				return q
			}
			for deadline := time.Now().Add(40 * time.Second); queued() > 0 && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var twice []string
			for k, c := range calls {
				if c > 1 {
					twice = append(twice, fmt.Sprintf("%s×%d", k, c))
				}
			}
			t.Logf("%d partition(s): max delivered-unacked %d with a limit of %d; %d of %d keys run more than once", parts, maxAckPending.Load(), parts, len(twice), len(calls))
			if len(twice) > 0 || len(calls) != keys {
				t.Errorf("%d partition(s), limit %d: %d keys run, some more than once after aging in the prefetch past AckWait: %v (max %d delivered, unacked)",
					parts, parts, len(calls), twice, maxAckPending.Load())
			}
		})
	}
}
