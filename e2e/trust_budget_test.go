//go:build integration

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestFatalRestartsKeepBudget: an uploader that stops on a fatal S3 error (every write refused)
// is started again and again, as a supervisor would, five times with a delivery budget of 2. Each
// start prefetches a batch it never runs; none of that may count against the budget. Once S3
// takes writes again every key verifies and nothing is dead-lettered.
func TestFatalRestartsKeepBudget(t *testing.T) {
	keys, _ := seeded(t)
	r := newRig(t, "uploader stopped 5 times by a fatal S3 error, budget 2", "fatalloop", rigOptions{})
	subset, want := r.keySet(keys, 100, 0)
	r.must("setup", "--max-deliver", "2", "--ack-wait", "10s")
	r.must("producer", "--keys", r.writeKeys("keys.txt", subset))
	f := r.start("fetcher", "fetcher")
	r.waitFor(3*time.Minute, "BLOBS to hold every key", func() bool {
		n, _ := r.msgs(r.names.Blobs)
		return n == uint64(len(subset))
	})
	if err := f.stop(time.Minute); err != nil {
		t.Errorf("fetcher: %v", err)
	}
	r.proxy.Deny(func(string) bool { return true }) // the probe's key too: every write refused
	const starts = 5
	for i := range starts {
		out, code := r.runFerry(2*time.Minute, nil, "uploader", "--concurrency", "32")
		if code == 0 {
			t.Fatalf("start %d: the uploader exited 0 while S3 refused every write:\n%s", i+1, tail([]byte(out), 2000))
		}
	}
	if d, _ := r.dead(); d.Total() != 0 {
		t.Fatalf("dead letters after %d fatal stops: %v; want none (no handler finished a run)", starts, d)
	}
	r.proxy.Deny(nil)
	c := r.crew()
	c.add("uploader", 1, "uploader")
	c.add("verifier", 1, "verifier")
	c.settle(3 * time.Minute)
	c.stop()
	r.reconcile(plan{want: want, note: fmt.Sprintf("%d refused writes over %d fatal stops", r.proxy.denied.Load(), starts)})
}
