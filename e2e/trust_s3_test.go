//go:build integration

package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// S3 that encrypts, refuses and goes away: the destination behaves like AWS with SSE-KMS (no ETag
// is the MD5), like a bucket policy on one prefix, and like an endpoint that is gone for longer
// than the delivery budget. Every key still ends verified with its own bytes or dead-lettered with
// a reason.

// TestRandomETags: every ETag S3 returns is random (SSE-KMS, SSE-C). The verifier checks S3's
// CRC32C and ferry's MD5 metadata instead, so every key verifies, multipart ones included; a
// second run with --skip-existing over the same objects skips every PUT.
func TestRandomETags(t *testing.T) {
	keys, _ := seeded(t)
	r := newRig(t, "random ETags (SSE-KMS, SSE-C)", "etags", rigOptions{})
	r.proxy.RandomETags(true)
	subset, want := r.keySet(keys, 150, 3)
	out, code := r.runFerry(5*time.Minute, nil, "run", "--keys", r.writeKeys("keys.txt", subset),
		"--multipart-threshold", "5242880", "--deep-sample", "0.2")
	if code != 0 {
		t.Fatalf("ferry run exit %d:\n%s", code, tail([]byte(out), 3000))
	}
	r.reconcile(plan{want: want, note: "every ETag random; " + r.proxy.Stats()})
	_, firstWrites := r.proxy.Duplicates()

	// The same objects again, under a second job: HEAD finds each one matching without its ETag.
	template := r.jobCfg.Keys.Template
	again := newRig(t, "random ETags, --skip-existing", "etags2", rigOptions{edit: func(j *config.Job) {
		j.Keys.Template = template
	}})
	again.proxy.RandomETags(true)
	out, code = again.runFerry(5*time.Minute, nil, "run", "--keys", again.writeKeys("keys.txt", subset),
		"--multipart-threshold", "5242880", "--skip-existing")
	if code != 0 {
		t.Fatalf("ferry run --skip-existing exit %d:\n%s", code, tail([]byte(out), 3000))
	}
	again.reconcile(plan{want: want, note: "every ETag random; " + again.proxy.Stats()})
	if dups, writes := again.proxy.Duplicates(); writes != 0 || dups != 0 {
		t.Errorf("--skip-existing wrote %d objects (%d twice) of the %d already there; want none", writes, dups, firstWrites)
	}
}

// TestAccessDeniedOneObject: S3 refuses three objects (a policy on their keys, an object lock) and
// accepts the rest. Those three keys are dead-lettered upload_error with the reason; every other
// key verifies; the uploader never stops.
func TestAccessDeniedOneObject(t *testing.T) {
	keys, _ := seeded(t)
	r := newRig(t, "AccessDenied on 3 objects", "denied", rigOptions{})
	subset, want := r.keySet(keys, 300, 0)
	plain := regexp.MustCompile(`^[A-Za-z0-9/_.-]+$`)
	refused := map[string]bool{}
	for _, k := range subset[10:] {
		if plain.MatchString(k) && len(refused) < 3 {
			refused[k] = true
			want[k] = "uploader/upload_error"
		}
	}
	if len(refused) < 3 {
		t.Fatalf("only %d plain keys in the subset", len(refused))
	}
	r.proxy.Deny(func(s3Key string) bool {
		for k := range refused {
			if strings.HasSuffix(s3Key, k) {
				return true
			}
		}
		return false
	})
	out, code := r.runFerry(5*time.Minute, nil, "run", "--keys", r.writeKeys("keys.txt", subset))
	if code != 0 {
		t.Fatalf("ferry run exit %d (an uploader stopped?):\n%s", code, tail([]byte(out), 3000))
	}
	r.reconcile(plan{want: want, note: fmt.Sprintf("%d refused writes; %s", r.proxy.denied.Load(), r.proxy.Stats())})
	for _, e := range r.readStream(r.names.DLQ) {
		if msg := e.Header.Get(bus.HdrError); refused[e.Key] && !strings.Contains(msg, "refuses this object") {
			t.Errorf("dead letter of %q says %q; want it to say S3 refuses this object", e.Key, msg)
		}
	}
}

// TestVerifierS3Outage: S3 is unreachable (connections refused) while the verifier has a backlog,
// for far longer than its delivery budget (--max-deliver 2) would last with backoff. Nothing is
// dead-lettered; once S3 is back every key verifies.
func TestVerifierS3Outage(t *testing.T) {
	keys, _ := seeded(t)
	r := newRig(t, "S3 unreachable at the verifier", "s3outage", rigOptions{})
	subset, want := r.keySet(keys, 120, 2)
	r.must("setup", "--max-deliver", "2", "--ack-wait", "5s")
	v := r.start("verifier", "verifier") // through the proxy: checks the bucket while S3 is there
	time.Sleep(2 * time.Second)
	r.proxy.Down(t)
	direct := []string{"FERRY_CONFIG=" + r.direct} // the other stages reach S3 directly
	r.must("producer", "--keys", r.writeKeys("keys.txt", subset))
	f := r.startEnv("fetcher", direct, "fetcher")
	u := r.startEnv("uploader", direct, "uploader")
	uploaded := uint64(len(subset) - 2)
	r.waitFor(3*time.Minute, "UPLOADED to hold every present key", func() bool {
		n, _ := r.msgs(r.names.Uploaded)
		return n == uploaded
	})
	time.Sleep(30 * time.Second) // ~15 rounds of 2 s backoff: two deliveries would be long gone
	if n, _ := r.msgs(r.names.Uploaded); n != uploaded {
		t.Errorf("UPLOADED holds %d during the outage, want all %d", n, uploaded)
	}
	if d, _ := r.dead(); d.Total() != 2 { // the two absent keys, at the fetcher
		t.Errorf("dead letters during the outage: %v; want only the 2 absent keys", d)
	}
	if !v.alive() {
		t.Errorf("the verifier exited during the outage: %v", v.err)
	}
	r.proxy.Up(t)
	r.waitFor(3*time.Minute, "every key verified after the outage", func() bool {
		n, _ := r.msgs(r.names.Done)
		return n == uploaded
	})
	for _, s := range []*svc{f, u, v} {
		if err := s.stop(time.Minute); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
	r.reconcile(plan{want: want, note: "S3 refused connections for 30 s+ with --max-deliver 2"})
}
