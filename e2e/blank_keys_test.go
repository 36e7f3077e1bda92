//go:build integration

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// TestBlankKeys: source keys that differ only in blanks at either end are four keys, not one.
// A token scan publishes them as they are (key lists trim ASCII blanks, so they come from scans
// and replays), and NATS drops the blanks around a header value: the keys must still reach the
// uploader and the verifier, and S3, byte for byte. Published straight into KEYS, as the scan
// does, then through the four services on the local stack.
func TestBlankKeys(t *testing.T) {
	job := fmt.Sprint(time.Now().UnixNano() % 1e9)
	base := "blank/" + job + "/k"
	keys := []string{base, " " + base, "  " + base, base + " ", base + "  ", " " + base + " "}
	content := func(k string) []byte { return []byte(fmt.Sprintf("the bytes of %q", k)) }
	var args []any
	for _, k := range keys {
		args = append(args, k, content(k))
	}
	writeRows(t, 0, "INSERT INTO %[1]s (%[2]s, %[3]s) VALUES (?, ?)", args...)

	r := newRig(t, "keys that differ only in blanks", "blank", rigOptions{})
	r.rewriteJob(func(j *config.Job) { j.Keys.Pattern = "" }) // the demo's pattern refuses blanks
	r.must("setup")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := map[string]string{}
	for i, k := range keys {
		m := bus.KeyMsg(r.names, k, bus.KeyID(r.names.Job, k), fmt.Sprintf("scan:%d", i))
		if _, err := r.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		want[k] = outcomeVerified
	}
	c := r.crew()
	for _, s := range []string{"fetcher", "uploader", "verifier"} {
		c.add(s, 1, s, "--concurrency", "4")
	}
	c.settle(3 * time.Minute)
	c.stop()
	r.reconcile(plan{want: want, content: content})
	seen := map[string]bool{}
	for _, e := range r.readDone() {
		s3Key, err := bus.Text(e.Header, bus.HdrS3Key)
		if err != nil || seen[s3Key] {
			t.Errorf("%q: S3 key %q (%v) is another key's too", e.Key, s3Key, err)
		}
		seen[s3Key] = true
	}
}
