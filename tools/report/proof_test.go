package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/tools/prune"
)

// TestReportProof: report.md and report.json carry the last cut-over proof (PROVEN only when
// nothing fails it), the pruned objects (pruned.txt), and the keys deleted at the source apart
// from the dead letters that are failures.
func publishDone(t *testing.T, js jetstream.JetStream, n bus.Names, key string) {
	t.Helper()
	m := nats.NewMsg(n.DoneSubject)
	bus.SetText(m.Header, bus.HdrKey, key)
	m.Data = []byte(key)
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// TestReportUnresolved: a failure dead letter keeps the cut-over from being proven until a DONE
// entry of its key is stored after it; dead letters of reason deleted are not failures.
func TestReportUnresolved(t *testing.T) {
	replays := 0
	dl := func(key, reason string) func(*testing.T, jetstream.JetStream, bus.Names) {
		return func(t *testing.T, js jetstream.JetStream, n bus.Names) {
			replays++ // each its own Ferry-Id (a replay's .r<seq>): a dead letter of a replay is stored
			from := nats.Header{bus.HdrID: {fmt.Sprintf("%s.r%d", bus.KeyID(n.Job, key), replays)}}
			if err := bus.PublishDeadLetter(context.Background(), js, n, bus.DeadLetter{Key: key, Stage: bus.StageVerifier, Reason: reason, Err: "e", Attempts: 1, From: from}); err != nil {
				t.Fatal(err)
			}
		}
	}
	done := func(key string) func(*testing.T, jetstream.JetStream, bus.Names) {
		return func(t *testing.T, js jetstream.JetStream, n bus.Names) { publishDone(t, js, n, key) }
	}
	type step = func(*testing.T, jetstream.JetStream, bus.Names)
	for _, tc := range []struct {
		name       string
		steps      []step
		unresolved []string
	}{
		{"none", []step{done("a")}, nil},
		{"replayed and verified", []step{dl("a", bus.ReasonVerifyMismatch), done("a")}, nil},
		{"verified before it failed", []step{done("a"), dl("a", bus.ReasonVerifyMismatch)}, []string{"a"}},
		{"failed again after its replay", []step{dl("a", bus.ReasonUploadError), done("a"), dl("a", bus.ReasonUploadError)}, []string{"a"}},
		{"another key verified", []step{dl("a", bus.ReasonUploadError), done("b")}, []string{"a"}},
		{"deleted at the source", []step{dl("a", bus.ReasonDeleted)}, nil},
		{"escaped key", []step{dl(" a\n", bus.ReasonVerifyMissing), done(" a\n"), dl("b", bus.ReasonVerifyMissing)}, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			ctx := context.Background()
			kv, err := js.KeyValue(ctx, n.KV)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.steps {
				s(t, js, n)
			}
			if err := prune.SaveProof(ctx, kv, prune.Proof{Complete: true, Consistency: "LOCAL_QUORUM", Required: "LOCAL_QUORUM"}); err != nil {
				t.Fatal(err)
			}
			r, err := Write(ctx, js, n, t.TempDir(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			want := ProofProven
			if len(tc.unresolved) > 0 {
				want = ProofFailed
			}
			if r.ProofStatus != want || r.Unresolved != uint64(len(tc.unresolved)) || !slices.Equal(r.UnresolvedExamples, tc.unresolved) {
				t.Errorf("status %s, unresolved %d %q; want %s, %q (why: %s)", r.ProofStatus, r.Unresolved, r.UnresolvedExamples, want, tc.unresolved, r.ProofWhy)
			}
			if want == ProofFailed && !strings.Contains(r.ProofWhy, "dead-lettered as failures") {
				t.Errorf("why %q does not name the dead letters", r.ProofWhy)
			}
		})
	}
}

func TestReportProof(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	if err := bus.EnsurePruned(ctx, js, n, 1); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []bus.DeadLetter{
		{Key: "vanished.jpg", Stage: bus.StageFetcher, Reason: bus.ReasonDeleted, Err: "no row", Attempts: 1},
		{Key: "broken.jpg", Stage: bus.StageFetcher, Reason: bus.ReasonNotFound, Err: "not found", Attempts: 1},
	} {
		if err := bus.PublishDeadLetter(ctx, js, n, d); err != nil {
			t.Fatal(err)
		}
	}
	publishDone(t, js, n, "broken.jpg") // replayed since: resolved, the proof may stand
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, r := range []prune.Record{
		{Object: "ab/old-1.jpg", Key: "old-1.jpg", Action: "deleted", Time: now, Run: "r1"},
		{Object: "ab/old-2.jpg", Action: "quarantined:q/ab/old-2.jpg", Time: now, Run: "r1"},
	} {
		b, _ := json.Marshal(r)
		if _, err := js.Publish(ctx, n.PrunedSubject, b); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name   string
		proof  *prune.Proof
		status string
		md     []string
	}{
		{"no prune yet", nil, ProofNone, []string{"No proof yet"}},
		{"failing", &prune.Proof{Complete: true, Consistency: "LOCAL_QUORUM", Required: "LOCAL_QUORUM", SourceKeys: 10, Objects: 11,
			Missing: 1, OnlyInS3: 2, Deleted: 1, Stale: 1, Examples: map[string][]string{"missing": {"lost.jpg"}, "stale": {"old.jpg"}, "only_in_s3": {"ab/x.jpg"}}},
			ProofFailed, []string{"NOT PROVEN", "`lost.jpg`", "`old.jpg`", "`ab/x.jpg`", "1 source keys have no object"}},
		{"incomplete scan", &prune.Proof{Complete: false, Consistency: "LOCAL_QUORUM", Required: "LOCAL_QUORUM", Error: "range (1, 2]: timeout"},
			ProofFailed, []string{"NOT PROVEN", "the scan is not complete", "range (1, 2]: timeout"}},
		{"proven", &prune.Proof{Complete: true, Consistency: "QUORUM", Required: "LOCAL_QUORUM", SourceKeys: 10, Objects: 10},
			ProofProven, []string{"**PROVEN**"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.proof == nil {
				_ = kv.Purge(ctx, prune.ProofKey)
			} else if err := prune.SaveProof(ctx, kv, *tc.proof); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			r, err := Write(ctx, js, n, dir, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if r.ProofStatus != tc.status || r.Pruned != 2 || r.DeletedAtSource != 1 {
				t.Errorf("status %q, pruned %d, deleted at source %d; want %q, 2, 1", r.ProofStatus, r.Pruned, r.DeletedAtSource, tc.status)
			}
			var md bytes.Buffer
			Markdown(&md, r)
			for _, want := range append(tc.md, "## Cut-over proof", "## Deleted at the source", "`vanished.jpg`", "pruned.txt") {
				if !strings.Contains(md.String(), want) {
					t.Errorf("report.md lacks %q:\n%s", want, md.String())
				}
			}
			// vanished.jpg is not a failure: not under "Did not arrive".
			arrive := md.String()[strings.Index(md.String(), "## Did not arrive"):strings.Index(md.String(), "## Deleted at the source")]
			if strings.Contains(arrive, "vanished.jpg") || !strings.Contains(arrive, "broken.jpg") {
				t.Errorf("Did not arrive:\n%s", arrive)
			}
			b, err := os.ReadFile(filepath.Join(dir, FilePruned))
			if err != nil {
				t.Fatal(err)
			}
			want := "ab/old-1.jpg\told-1.jpg\tdeleted\t2026-12-07T12:00:00Z\nab/old-2.jpg\t-\tquarantined:q/ab/old-2.jpg\t2026-12-07T12:00:00Z\n"
			if string(b) != want {
				t.Errorf("%s = %q, want %q", FilePruned, b, want)
			}
			var j map[string]any
			jb, _ := os.ReadFile(filepath.Join(dir, FileJSON))
			if err := json.Unmarshal(jb, &j); err != nil || j["proof_status"] != tc.status || j["pruned"] != float64(2) || j["deleted_at_source"] != float64(1) {
				t.Errorf("report.json: %v %v", j["proof_status"], err)
			}
		})
	}
}
