//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestChaosBlobsFull (scenario 9): BLOBS capped at its minimum (16 MiB) and no uploader running.
// The fetchers must hold back before reading more (BLOBS stays under its cap, nothing is dropped,
// no dead letters, no redelivery storm); once uploaders start, everything completes.
func TestChaosBlobsFull(t *testing.T) {
	requireChaos(t)
	keys, _ := seeded(t)
	n := envInt("FERRY_CHAOS_CAP_KEYS", 4000)
	all := withSized(keys, append(append([]string{}, keys.Main[:min(n, len(keys.Main))]...), keys.Fallback...))
	const capBytes = 16 << 20
	r := newRig(t, "9 BLOBS at its 16 MiB cap, uploader down", "cap", rigOptions{})
	r.must("setup", "--blobs-max-bytes", fmt.Sprint(capBytes), "--ack-wait", "10s", "--dedupe-window", "2m")
	c := r.crew()
	c.add("producer", 1, "producer", "--keys", r.writeKeys("keys.txt", all))
	c.add("fetcher", 2, "fetcher", "--concurrency", "32")
	c.add("verifier", 1, "verifier", "--concurrency", "16")

	var peak uint64
	sample := func() {
		if info, ok := r.streamInfo(r.names.Blobs); ok {
			peak = max(peak, info.State.Bytes)
			if info.State.Bytes > capBytes {
				t.Errorf("BLOBS holds %d bytes, over its %d-byte cap", info.State.Bytes, capBytes)
			}
		}
	}
	r.waitFor(5*time.Minute, "BLOBS to fill to 70% of its cap", func() bool {
		c.tend()
		sample()
		return peak >= capBytes*7/10
	})
	// Hold for longer than several ack waits: held messages must not be redelivered or dropped.
	hold := time.Now()
	r.waitFor(2*time.Minute, "the hold", func() bool {
		c.tend()
		sample()
		return time.Since(hold) > 45*time.Second
	})
	keysLeft, _ := r.msgs(r.names.Keys)
	blobs, _ := r.msgs(r.names.Blobs)
	done, _ := r.msgs(r.names.Done)
	if d, ok := r.dead(); !ok || d.Total() != 0 {
		t.Errorf("dead letters while BLOBS was full: %v", d)
	}
	if keysLeft+blobs+done < uint64(len(all)) {
		t.Errorf("KEYS %d + BLOBS %d + DONE %d < %d keys: something was dropped", keysLeft, blobs, done, len(all))
	}
	if keysLeft == 0 {
		t.Errorf("KEYS is empty while BLOBS is full: the fetchers did not hold back")
	}
	redelivered := -1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if cons, err := r.js.Consumer(ctx, r.names.Keys, r.names.Fetcher); err == nil {
		if info, err := cons.Info(ctx); err == nil {
			redelivered = info.NumRedelivered
		}
	}
	cancel()
	gated := 0
	for _, m := range c.members {
		if b, err := os.ReadFile(m.svc.log); err == nil && strings.Contains(string(b), "BLOBS nearly full, fetchers wait") {
			gated++
		}
	}
	if gated == 0 {
		t.Errorf("no fetcher logged that it waits for BLOBS")
	}
	held := fmt.Sprintf("held %s: BLOBS %d msgs, peak %.1f of 16 MiB; KEYS %d waiting; fetcher redeliveries %d",
		time.Since(hold).Round(time.Second), blobs, float64(peak)/(1<<20), keysLeft, redelivered)
	t.Log(held)

	c.add("uploader", 2, "uploader", "--concurrency", "16")
	r.waitFor(20*time.Minute, "the pipeline to drain", func() bool {
		c.tend()
		sample()
		n, ok := r.backlog()
		return ok && n == 0 && c.producersDone()
	})
	c.settle(5 * time.Minute)
	c.stop()
	want := map[string]string{}
	for _, k := range all {
		want[k] = outcomeVerified
	}
	r.reconcile(plan{want: want, note: held})
}
