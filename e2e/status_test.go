//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ferryreport "github.com/ferry-migrate/ferry/tools/report"
	"github.com/ferry-migrate/ferry/tools/status"
)

// TestStatusReport runs a small migration (200 seeded keys and 20 keys no read target holds) and
// checks `ferry status --json` against the consumer info read directly, once with the backlog
// waiting in KEYS and once when the job is done, then that `ferry report` lists exactly the
// dead-lettered keys by reason.
func TestStatusReport(t *testing.T) {
	keys, _ := seeded(t)
	h := newRig(t, "", "status", rigOptions{plain: true})
	good := keys.Main[:min(200, seedCount())]
	var absent []string
	for i := range 20 {
		absent = append(absent, fmt.Sprintf("status-absent-%s-%03d.jpg", h.job, i)) // written nowhere
	}
	file := filepath.Join(h.dir, "keys.txt")
	if err := os.WriteFile(file, []byte(strings.Join(append(slices.Clone(good), absent...), "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	total := len(good) + len(absent)

	// A job that does not exist: one line, exit 2, and nothing created.
	cmd := exec.Command(bin, "--job", h.job+"-nope", "--nats", natsURL, "status")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 ||
		!strings.Contains(string(out), "not found") {
		t.Errorf("status of a missing job: %v, %q; want exit 2 and one line", err, out)
	}
	if _, err := h.js.Stream(context.Background(), h.job+"-nope"); err == nil {
		t.Error("status created a stream for a missing job")
	}

	// The producer alone: every key waits in KEYS, nothing moves, so the numbers are fixed.
	h.must("producer", "--keys", file)
	st := h.status()
	h.checkConsumers(st)
	if f := st.Stages[0]; f.Stream != h.names.Keys || f.Messages != uint64(total) || f.Pending != uint64(total) || f.Published != uint64(total) {
		t.Errorf("fetcher stage %+v, want %d messages pending", f, total)
	}
	if st.Backlog != uint64(total) || st.Verified.Messages != 0 || st.ETASeconds != nil {
		t.Errorf("status before the fetchers: backlog %d, verified %d, eta %v", st.Backlog, st.Verified.Messages, st.ETASeconds)
	}
	if l := st.Producer.Lists; len(l) != 1 || l[0].Path != file || l[0].Line != int64(total) || !l[0].Done {
		t.Errorf("producer position %+v, want %s done at line %d", l, file, total)
	}

	// The rest of the pipeline finishes the backlog.
	start := time.Now()
	h.must("--nats", natsURL, "run", "--fetcher-concurrency", "8", "--uploader-concurrency", "8", "--verifier-concurrency", "8")
	st = h.status()
	h.checkConsumers(st)
	if st.Verified.Messages != uint64(len(good)) || st.DeadLetters.Total != uint64(len(absent)) ||
		st.DeadLetters.ByReason["fetcher/not_found"] != uint64(len(absent)) || st.Backlog != 0 {
		t.Errorf("status when done: verified %d, dead letters %+v, backlog %d; want %d, fetcher/not_found %d, 0",
			st.Verified.Messages, st.DeadLetters, st.Backlog, len(good), len(absent))
	}
	if time.Since(start) < 45*time.Second && (st.Verified.LastMinute != uint64(len(good)) || st.DeadLetters.LastMinute != uint64(len(absent))) {
		t.Errorf("the run took %s, so all of it is in the last minute: verified %d, dead %d", time.Since(start).Round(time.Second),
			st.Verified.LastMinute, st.DeadLetters.LastMinute)
	}
	for _, sg := range st.Stages[:3] {
		if sg.Messages != 0 || sg.Processed != sg.Published {
			t.Errorf("%s: %+v, want an empty queue with everything processed", sg.Stage, sg)
		}
	}

	dir := filepath.Join(h.dir, "report")
	t.Log(h.must("report", "--out", dir))
	var r ferryreport.Report
	b, err := os.ReadFile(filepath.Join(dir, ferryreport.FileJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Published != uint64(total) || r.Verified != uint64(len(good)) || r.DeadLettered != uint64(len(absent)) || r.InPipeline != 0 ||
		len(r.DeadLetters) != 1 || r.DeadLetters["fetcher/not_found"] != uint64(len(absent)) {
		t.Errorf("report.json: published %d, verified %d, dead %d %v, in pipeline %d", r.Published, r.Verified, r.DeadLettered, r.DeadLetters, r.InPipeline)
	}
	var perMinute uint64
	for _, m := range r.PerMinute {
		perMinute += m.Verified
	}
	if perMinute != r.Verified || r.FirstVerified == nil || r.ElapsedSeconds < 0 {
		t.Errorf("verified per minute sums to %d of %d; first %v, elapsed %v", perMinute, r.Verified, r.FirstVerified, r.ElapsedSeconds)
	}
	listed, err := os.ReadFile(filepath.Join(dir, ferryreport.FileKeys))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(listed))
	slices.Sort(got)
	if !slices.Equal(got, absent) {
		t.Errorf("%s lists %d keys, want exactly the %d absent ones: %v", ferryreport.FileKeys, len(got), len(absent), got)
	}
	entries, err := os.ReadFile(filepath.Join(dir, ferryreport.FileEntries))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(entries)) {
		var e ferryreport.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Stage != "fetcher" || e.Reason != "not_found" || e.Error == "" {
			t.Errorf("%s line %q: %+v, %v", ferryreport.FileEntries, line, e, err)
		}
	}
	md, err := os.ReadFile(filepath.Join(dir, ferryreport.FileMarkdown))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range append([]string{
		fmt.Sprintf("| verified in S3 (size and checksum) | %d |", len(good)),
		fmt.Sprintf("### fetcher / not_found: %d keys", len(absent)),
	}, absent...) {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
}

// checkConsumers compares each stage of st with `nats consumer info`'s numbers read directly.
func (h *rig) checkConsumers(st *status.Status) {
	h.t.Helper()
	ctx := context.Background()
	if len(st.Stages) != 4 {
		h.t.Fatalf("status has %d stages, want 4", len(st.Stages))
	}
	for _, sg := range st.Stages {
		c, err := h.js.Consumer(ctx, sg.Stream, sg.Consumer)
		if err != nil {
			h.t.Fatal(err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		s, _ := h.js.Stream(ctx, sg.Stream)
		si, _ := s.Info(ctx)
		if sg.Pending != ci.NumPending || sg.AckPending != ci.NumAckPending || sg.Redelivered != ci.NumRedelivered ||
			sg.Waiting != ci.NumWaiting || sg.Messages != si.State.Msgs || sg.Bytes != si.State.Bytes {
			h.t.Errorf("status %s: %+v; consumer info: pending %d, ack pending %d, redelivered %d, waiting %d; stream %d msgs %d bytes",
				sg.Stage, sg, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, si.State.Msgs, si.State.Bytes)
		}
	}
}
