//go:build integration

package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/config"
)

// fatalLine checks how a service that cannot work at all ends: a non-zero exit, exactly one
// "ferry: ..." line that names the cause (any of names), no stack trace. It returns that line.
func fatalLine(t *testing.T, what, out string, code int, names ...string) string {
	t.Helper()
	var errs []string
	lines := regexp.MustCompile(`(?m)^ferry: .*$`).FindAllString(out, -1)
	if code == 0 {
		errs = append(errs, "exit 0")
	}
	if crashRE.MatchString(out) || strings.Contains(out, "goroutine ") {
		errs = append(errs, "a stack trace")
	}
	if len(lines) != 1 {
		errs = append(errs, fmt.Sprintf("%d \"ferry:\" lines, want 1", len(lines)))
	}
	line := lastLine(out)
	named := false
	for _, n := range names {
		named = named || strings.Contains(line, n)
	}
	if !named {
		errs = append(errs, fmt.Sprintf("the last line names none of %q", names))
	}
	if len(errs) > 0 {
		t.Errorf("%s: %s\n%s", what, strings.Join(errs, "; "), tail([]byte(out), 2500))
	}
	return fmt.Sprintf("%s exit %d: %q", what, code, line)
}

// heldIn checks that a work queue still holds the whole backlog and the DLQ is empty.
func (r *rig) heldIn(stream string, n int) {
	r.t.Helper()
	if got, _ := r.msgs(stream); got != uint64(n) {
		r.t.Errorf("%s holds %d messages, want the whole backlog of %d", stream, got, n)
	}
	if d, ok := r.dead(); !ok || d.Total() != 0 {
		r.t.Errorf("dead letters %v, want none: a broken setup must not dead-letter the backlog", d)
	}
}

// TestChaosFatal (scenario 6): the source table is missing, the bucket is missing, the S3
// credentials are wrong. The service concerned exits non-zero with one clear line and dead-letters
// nothing; the backlog waits in KEYS or BLOBS, and completes once the cause is fixed.
func TestChaosFatal(t *testing.T) {
	requireChaos(t)
	keys, _ := seeded(t)
	subset := keys.Main[:200]
	want := map[string]string{}
	for _, k := range subset {
		want[k] = outcomeVerified
	}
	// fill runs the producer and, unless only KEYS is wanted, a fetcher until BLOBS holds every key.
	fill := func(r *rig, blobs bool) {
		r.must("producer", "--keys", r.writeKeys("keys.txt", subset))
		if !blobs {
			return
		}
		f := r.start("fetcher", "fetcher", "--concurrency", "16")
		r.waitFor(3*time.Minute, "BLOBS to hold every key", func() bool {
			n, _ := r.msgs(r.names.Blobs)
			return n == uint64(len(subset))
		})
		if err := f.stop(time.Minute); err != nil {
			t.Errorf("fetcher: %v", err)
		}
	}
	finish := func(r *rig, c *crew, note string) {
		c.settle(5 * time.Minute)
		c.stop()
		r.reconcile(plan{want: want, note: note})
	}

	t.Run("source table missing", func(t *testing.T) {
		r := newRig(t, "6a source table missing", "fatal", rigOptions{noProxy: true, edit: func(j *config.Job) {
			j.Source.Targets = j.Source.Targets[:1]
			j.Source.Targets[0].Table = "ferry_demo.nope"
		}})
		fill(r, false)
		out, code := r.runFerry(2*time.Minute, nil, "fetcher")
		note := fatalLine(t, "fetcher", out, code, "ferry_demo.nope", "nope")
		r.heldIn(r.names.Keys, len(subset))
		r.rewriteJob(func(j *config.Job) { j.Source.Targets[0].Table = "ferry_demo.blobs" })
		c := r.crew()
		c.add("fetcher", 1, "fetcher")
		c.add("uploader", 1, "uploader")
		c.add("verifier", 1, "verifier")
		finish(r, c, note+"; then fixed and completed")
	})

	t.Run("bucket missing", func(t *testing.T) {
		r := newRig(t, "6b S3 bucket missing", "fatal", rigOptions{noProxy: true, edit: func(j *config.Job) {
			j.Destination.Bucket = "ferry-chaos-no-such-bucket"
		}})
		fill(r, true)
		var notes []string
		for _, s := range []string{"uploader", "verifier"} {
			out, code := r.runFerry(2*time.Minute, nil, s)
			notes = append(notes, fatalLine(t, s, out, code, "ferry-chaos-no-such-bucket"))
		}
		r.heldIn(r.names.Blobs, len(subset))
		r.rewriteJob(func(j *config.Job) { j.Destination.Bucket = "ferry-demo" })
		c := r.crew()
		c.add("uploader", 1, "uploader")
		c.add("verifier", 1, "verifier")
		finish(r, c, strings.Join(notes, "; ")+"; then fixed and completed")
	})

	t.Run("wrong credentials", func(t *testing.T) {
		r := newRig(t, "6c wrong S3 credentials", "fatal", rigOptions{noProxy: true})
		fill(r, true)
		var notes []string
		for _, s := range []string{"uploader", "verifier"} {
			out, code := r.runFerry(2*time.Minute, []string{"AWS_SECRET_ACCESS_KEY=wrong"}, s)
			notes = append(notes, fatalLine(t, s, out, code, "credentials", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403"))
		}
		r.heldIn(r.names.Blobs, len(subset))
		c := r.crew()
		c.add("uploader", 1, "uploader")
		c.add("verifier", 1, "verifier")
		finish(r, c, strings.Join(notes, "; ")+"; then fixed and completed")
	})
}
