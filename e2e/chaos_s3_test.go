//go:build integration

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFaultS3 (scenario 4, short): S3 behind the fault proxy, one request in five broken (503
// SlowDown, 500, connection resets, latency spikes, answers cut off after S3 did the work).
// Transient faults must end in S3, never in the DLQ.
func TestFaultS3(t *testing.T) {
	s3Scenario(t, "4 S3 faults (short)", envInt("FERRY_FAULT_KEYS", 3000)/3, 4*time.Minute)
}

// TestChaosS3 (scenario 4): the same over 10,000 keys.
func TestChaosS3(t *testing.T) {
	requireChaos(t)
	s3Scenario(t, "4 S3 faults", envInt("FERRY_CHAOS_S3_KEYS", 10000), 20*time.Minute)
}

func s3Scenario(t *testing.T, scenario string, n int, timeout time.Duration) {
	keys, _ := seeded(t)
	rates := defaultFaultRates(0.2)
	r := newRig(t, fmt.Sprintf("%s %.0f%%", scenario, rates.total()*100), "s3fault", rigOptions{faults: rates})
	subset, want := r.keySet(keys, n, 10)
	file := r.writeKeys("keys.txt", subset)
	out, code := r.runFerry(timeout, nil, "--nats", r.url, "run", "--keys", file,
		"--fetcher-concurrency", "16", "--uploader-concurrency", "32", "--verifier-concurrency", "16", "--deep-sample", "0.1",
		"--ack-wait", "30s", "--dedupe-window", "3m")
	if code != 0 {
		t.Errorf("ferry run exit %d:\n%s", code, tail([]byte(out), 3000))
	}
	if r.proxy.Faults() == 0 {
		t.Fatal("the proxy injected no fault")
	}
	summary := ""
	if i := strings.Index(out, "ferry run, job"); i >= 0 {
		summary = strings.TrimSpace(out[i:])
	}
	t.Logf("%s\n%s", r.proxy.Stats(), summary)
	r.reconcile(plan{want: want, note: r.proxy.Stats()})
}
