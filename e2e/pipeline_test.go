//go:build integration

package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// TestPipeline runs producer, fetcher, uploader and verifier as separate processes over the seeded
// set plus bad lines and duplicates, SIGKILLs a fetcher and an uploader mid-run, and then checks
// that every key ended verified in S3 (byte for byte) or in the DLQ with the right reason. A
// manifest drain runs beside them with small segments and is SIGKILLed with them: every DONE
// entry must still be in exactly one segment or in DONE. Then it fixes the cause of the
// not_found keys and replays them.
func TestPipeline(t *testing.T) {
	keys, list := seeded(t)
	h := newRig(t, "", "e2e", rigOptions{plain: true})
	// The replay below writes the absent keys; an earlier run on the same data left them there.
	deleteBlobs(t, h.cfg, keys.Absent)
	// Short AckWait: the killed workers' messages come back in seconds, not a minute.
	h.must("setup", "--ack-wait", "10s", "--dedupe-window", "2m")

	// The key list: the seeded keys, then trouble.
	seedLines, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	all := keys.All()
	var extra strings.Builder
	for _, k := range all[:100] { // duplicates, one with padding and CRLF
		extra.WriteString(k + "\n")
	}
	extra.WriteString("\n   \n  " + all[200] + "  \r\n")
	extra.WriteString(string([]byte{0xff, 0xfe, 'x', '\n'})) // not UTF-8: producer invalid_key
	extra.WriteString(strings.Repeat("k", 2000) + "\n")      // over 1 KiB: producer invalid_key
	extra.WriteString(strings.Repeat("z", 70<<10) + "\n")    // over the line buffer: producer invalid_key
	extra.WriteString("bad key with spaces.jpg\n")           // fails the key rules: fetcher invalid_key
	file := filepath.Join(h.dir, "keys.txt")
	if err := os.WriteFile(file, append(seedLines, extra.String()...), 0o644); err != nil {
		t.Fatal(err)
	}
	wantVerified := len(keys.Main) + len(keys.Fallback)
	wantDead := map[string]uint64{"fetcher/not_found": seedAbsent, "producer/invalid_key": 3, "fetcher/invalid_key": 1}
	wantTotal := uint64(wantVerified) + seedAbsent + 4

	start := time.Now()
	prod := h.start("producer", "producer", "--keys", file)
	fetch := h.start("fetcher1", "fetcher", "--concurrency", "32")
	up := h.start("uploader1", "uploader", "--concurrency", "32")
	ver := h.start("verifier", "verifier", "--concurrency", "32", "--deep-sample", "0.01")
	drain := []string{"manifest", "--every", "1s", "--min-age", "0s", "--batch", "300"}
	man := h.start("manifest1", drain...)
	progress := func() string {
		return fmt.Sprintf("verified %d of %d, dead %v, backlog %d", h.mustMsgs(h.names.Done), wantVerified, h.mustDead(), h.mustBacklog())
	}

	// Crash a fetcher and an uploader in the middle.
	h.waitUntil(10*time.Minute, progress, func() bool { return h.mustMsgs(h.names.Done) > uint64(wantVerified)/4 })
	fetch.kill()
	up.kill()
	man.kill()
	t.Logf("killed fetcher, uploader and manifest drain at %s", progress())
	h.start("fetcher2", "fetcher", "--concurrency", "32")
	up2 := h.start("uploader2", "uploader", "--concurrency", "32")
	man2 := h.start("manifest2", drain...)

	h.waitUntil(15*time.Minute, progress, func() bool {
		return h.mustMsgs(h.names.Done)+h.mustDead().Total() >= wantTotal && h.mustBacklog() == 0
	})
	elapsed := time.Since(start)
	if err := prod.stop(time.Minute); err != nil {
		t.Errorf("producer: %v", err)
	}
	t.Logf("pipeline: %d keys in %s (%.0f files/s)", wantTotal, elapsed.Round(time.Second), float64(wantVerified)/elapsed.Seconds())

	done, total := h.doneEntries()
	if total != wantVerified || len(done) != wantVerified {
		t.Errorf("DONE and its manifest segments hold %d entries for %d keys, want %d each (no key twice)", total, len(done), wantVerified)
	}
	if st := h.manifestState(); st.Entries == 0 || st.Lost != 0 {
		t.Errorf("manifest drain state %+v: want entries drained, none lost", st)
	} else {
		t.Logf("manifest drain: %d entries in %d segments", st.Entries, st.Segments)
	}
	for _, k := range keys.Main {
		if src, ok := done[k]; !ok {
			t.Errorf("key %s not verified", k)
		} else if src != "dc1" {
			t.Errorf("key %s served by %q, want dc1", k, src)
		}
	}
	for _, k := range keys.Fallback {
		if src := done[k]; src != "dc2-old" {
			t.Errorf("fallback key %s served by %q, want dc2-old", k, src)
		}
	}
	dead := h.mustDead()
	if dead.Total() != wantTotal-uint64(wantVerified) {
		t.Errorf("dead letters %v, want %v", dead, wantDead)
	}
	for k, want := range wantDead {
		if dead[k] != want {
			t.Errorf("dead letters %s = %d, want %d", k, dead[k], want)
		}
	}
	exported := h.must("dlq", "export", "--reason", "not_found")
	for _, k := range keys.Absent {
		if !strings.Contains(exported, k+"\tfetcher\tnot_found\t") {
			t.Errorf("absent key %s not exported as fetcher not_found", k)
		}
	}
	checkS3(t, h.cfg, append(append([]string{}, keys.Main...), keys.Fallback...))

	// Fix the cause (write the missing blobs), replay, and watch them complete.
	fixed := make(map[string][]byte, len(keys.Absent))
	for _, k := range keys.Absent {
		fixed[k] = seed.Content(k)
	}
	putBlobs(t, h.cfg, fixed)
	out := h.must("dlq", "replay", "--reason", "not_found")
	if !strings.Contains(out, fmt.Sprintf("replayed %d dead letters", seedAbsent)) {
		t.Fatalf("replay said %q, want %d replayed", out, seedAbsent)
	}
	h.waitUntil(5*time.Minute, progress, func() bool {
		return h.mustMsgs(h.names.Done) == uint64(wantVerified+seedAbsent) && h.mustBacklog() == 0
	})
	if got := h.mustDead()["fetcher/not_found"]; got != 0 {
		t.Errorf("not_found dead letters after replay = %d, want 0", got)
	}
	checkS3(t, h.cfg, keys.Absent)

	// Clean shutdown on SIGTERM.
	for name, p := range map[string]*svc{"uploader": up2, "verifier": ver, "manifest": man2} {
		if err := p.stop(time.Minute); err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", name, err)
		}
	}
}

// TestS3Outage puts a proxy in front of versitygw that answers 503 SlowDown to every PUT for a
// while: the keys must be retried with backoff and all end in S3, none in the DLQ.
func TestS3Outage(t *testing.T) {
	keys, _ := seeded(t)
	h := newRig(t, "", "outage", rigOptions{plain: true})
	job, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(job.Destination.Endpoint)
	var failing atomic.Bool
	var refused atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() && r.Method == http.MethodPut {
			refused.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = filepath.Join(h.dir, "ferry.yaml")
	patched := regexp.MustCompile(`(?m)^  endpoint: .*$`).ReplaceAllString(string(cfg), "  endpoint: "+srv.URL)
	if err := os.WriteFile(h.cfg, []byte(patched), 0o644); err != nil {
		t.Fatal(err)
	}
	n := 300
	file := filepath.Join(h.dir, "keys.txt")
	if err := os.WriteFile(file, []byte(strings.Join(keys.Main[:n], "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	time.AfterFunc(8*time.Second, func() { failing.Store(false) })
	out := h.must("--nats", natsURL, "run", "--keys", file, "--fetcher-concurrency", "8", "--uploader-concurrency", "8", "--verifier-concurrency", "8")
	if refused.Load() == 0 {
		t.Fatal("the proxy refused no PUT: the outage was not exercised")
	}
	if !strings.Contains(out, fmt.Sprintf("%d keys verified in S3 (%d in this run), 0 dead-lettered", n, n)) {
		t.Fatalf("ferry run summary:\n%s", out)
	}
	t.Logf("%d PUTs refused during the outage; all %d keys verified", refused.Load(), n)
	checkS3(t, cfgPath, keys.Main[:n])
}

// TestProducerResume SIGKILLs a producer in the middle of a long key list and starts it again: it
// resumes from its checkpoint instead of re-sending the file, and KEYS ends with every key once.
func TestProducerResume(t *testing.T) {
	h := newRig(t, "", "resume", rigOptions{plain: true})
	const n = 200_000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "resume-key-%07d.jpg\n", i)
	}
	file := filepath.Join(h.dir, "keys.txt")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	h.must("setup")
	p := h.start("producer1", "producer", "--keys", file)
	h.waitUntil(2*time.Minute, func() string { return fmt.Sprint(h.mustMsgs(h.names.Keys), " keys") },
		func() bool { return h.mustMsgs(h.names.Keys) > n/10 })
	p.kill()
	first := h.mustMsgs(h.names.Keys)
	if first >= n {
		t.Skipf("producer finished before it could be killed (%d keys); machine too fast for this test", first)
	}

	out := h.must("producer", "--keys", file)
	if !strings.Contains(out, "resuming key list from checkpoint") {
		t.Errorf("second producer did not resume from a checkpoint:\n%s", out)
	}
	published, dups := logInt(t, out, "published"), logInt(t, out, "duplicates")
	// The checkpoint trails the acks by at most 10,000 lines plus what was in flight.
	if dups > 12_000 || uint64(published+dups) < n-first {
		t.Errorf("second producer re-sent %d keys and published %d new ones; killed at %d", dups, published, first)
	}
	if got := h.mustMsgs(h.names.Keys); got != n {
		t.Errorf("KEYS holds %d messages, want %d (each key exactly once)", got, n)
	}
	t.Logf("killed at %d keys; the restart published %d and re-sent %d (deduplicated)", first, published, dups)

	out = h.must("producer", "--keys", file)
	if !strings.Contains(out, "already published") || h.mustMsgs(h.names.Keys) != n {
		t.Errorf("third producer should skip the finished file:\n%s", out)
	}
}

func logInt(t *testing.T, out, field string) int {
	t.Helper()
	m := regexp.MustCompile(`producer finished.* ` + field + `=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s= in producer output:\n%s", field, out)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}
