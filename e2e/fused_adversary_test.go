//go:build integration

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestAdversaryFusedS3Outage: `ferry run` (fused by default) with most blobs above the inline
// limit, so that they travel through the object store, and S3 unreachable for a while mid-run.
// Every fused upload then fails after its read and hands the key to BLOBS, whose object the
// uploader must still find once S3 is back: nothing is dead-lettered, no key is read from
// Cassandra twice, every key verifies with its own bytes, and SIGTERM ends the run cleanly.
func TestAdversaryFusedS3Outage(t *testing.T) {
	keys, _ := seeded(t)
	r := newRig(t, "", "fusedout", rigOptions{})
	subset, want := r.keySet(keys, 160, 0)
	metrics := freeAddr(t)
	run := r.start("run", "--metrics-addr", metrics, "run", "--keys", r.writeKeys("keys.txt", subset), "--wait",
		"--inline-limit", "1024", "--fetcher-concurrency", "8", "--uploader-concurrency", "8", "--verifier-concurrency", "8", "--read-rate", "15",
		"--ack-wait", "10s")
	r.waitFor(2*time.Minute, "some keys verified before the outage", func() bool {
		n, _ := r.msgs(r.names.Done)
		return n >= 10
	})
	r.proxy.Down(t)
	r.waitFor(2*time.Minute, "keys handed to BLOBS during the outage", func() bool {
		n, _ := r.msgs(r.names.Blobs)
		return n >= 20
	})
	time.Sleep(10 * time.Second)
	if d, ok := r.dead(); !ok || d.Total() != 0 {
		t.Errorf("dead letters during the outage: %v", d)
	}
	r.proxy.Up(t)
	r.waitFor(5*time.Minute, "every key verified after the outage", func() bool {
		n, _ := r.msgs(r.names.Done)
		b, ok := r.backlog()
		return ok && b == 0 && n == uint64(len(subset))
	})
	found := scrape(metrics, "ferry_fetcher_reads_total", "result", "found")
	fell := scrape(metrics, "ferry_run_fused_fallbacks_total")
	if err := run.stop(time.Minute); err != nil {
		t.Errorf("ferry run did not stop cleanly on SIGTERM: %v", err)
	}
	if found != float64(len(subset)) {
		t.Errorf("%.0f Cassandra reads found a blob for %d keys: keys were read again", found, len(subset))
	}
	if fell <= 0 {
		t.Errorf("no fused fallback counted (%.0f) although S3 was down mid-run", fell)
	}
	r.reconcile(plan{want: want, note: fmt.Sprintf("S3 down mid-run, %.0f fallbacks, %.0f reads; %s", fell, found, r.proxy.Stats())})
}

// TestAdversaryFusedKillDuringOutage: `ferry run` is SIGKILLed while S3 is down and fused keys are
// falling back to BLOBS (their blobs in the object store), then run again with S3 back, without
// --keys. Every key verifies with its own bytes and none is dead-lettered; only the keys in flight
// at the kill may be read again.
func TestAdversaryFusedKillDuringOutage(t *testing.T) {
	const fetchers = 8
	keys, _ := seeded(t)
	r := newRig(t, "", "fusedkill", rigOptions{})
	subset, want := r.keySet(keys, 120, 0)
	args := []string{"--inline-limit", "1024", "--fetcher-concurrency", fmt.Sprint(fetchers), "--uploader-concurrency", "8", "--verifier-concurrency", "8",
		"--read-rate", "15", "--ack-wait", "5s"}
	m1 := freeAddr(t)
	first := r.start("run", append([]string{"--metrics-addr", m1, "run", "--keys", r.writeKeys("keys.txt", subset)}, args...)...)
	r.waitFor(2*time.Minute, "some keys verified", func() bool {
		n, _ := r.msgs(r.names.Done)
		return n >= 10
	})
	r.proxy.Down(t)
	r.waitFor(2*time.Minute, "keys handed to BLOBS during the outage", func() bool {
		n, _ := r.msgs(r.names.Blobs)
		return n >= 20
	})
	before := scrape(m1, "ferry_fetcher_reads_total", "result", "found")
	first.kill()
	r.proxy.Up(t)
	m2 := freeAddr(t)
	second := r.start("run", append([]string{"--metrics-addr", m2, "run", "--wait"}, args...)...)
	r.waitFor(5*time.Minute, "every key verified after the restart", func() bool {
		n, _ := r.msgs(r.names.Done)
		b, ok := r.backlog()
		return ok && b == 0 && n == uint64(len(subset))
	})
	after := scrape(m2, "ferry_fetcher_reads_total", "result", "found")
	if err := second.stop(time.Minute); err != nil {
		t.Errorf("ferry run did not stop cleanly on SIGTERM: %v", err)
	}
	// Reads before the kill are sampled a moment early: allow the fetchers in flight twice.
	if extra := before + after - float64(len(subset)); extra > 2*fetchers {
		t.Errorf("%.0f + %.0f reads for %d keys: %.0f read again, more than the %d in flight at the kill",
			before, after, len(subset), extra, fetchers)
	}
	r.reconcile(plan{want: want, note: fmt.Sprintf("SIGKILL during an S3 outage; reads %.0f + %.0f", before, after)})
}
