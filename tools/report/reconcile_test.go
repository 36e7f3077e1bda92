package report

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
)

// TestReconcile: published = verified + dead-lettered after KEYS + in flight, and any difference
// is flagged, both ways: a key in none of them is lost, and an entry no published key accounts
// for is a forged message (or a key verified twice).
func TestReconcile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		r        Report
		want     int64
		wantFlag string
	}{
		{"balanced", Report{Published: 10, Verified: 7, DeadLetters: map[string]uint64{"fetcher/not_found": 2}, InFlight: 1}, 0, ""},
		{"producer dead letters never reached KEYS", Report{Published: 9, Verified: 9,
			DeadLetters: map[string]uint64{"producer/invalid_key": 4}}, 0, ""},
		{"a key in none of them", Report{Published: 10, Verified: 8, DeadLetters: map[string]uint64{"uploader/upload_error": 1}}, 1, "in none of"},
		{"forged DONE entries", Report{Published: 0, Verified: 2}, -2, "no published key accounts for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			r.reconcile()
			if r.Unaccounted != tc.want {
				t.Errorf("unaccounted %d, want %d", r.Unaccounted, tc.want)
			}
			if got := r.Discrepancy(); tc.wantFlag == "" && got != "" || !strings.Contains(got, tc.wantFlag) {
				t.Errorf("discrepancy %q, want one with %q", got, tc.wantFlag)
			}
		})
	}
}

// TestReportFlagsForgedDone: DONE entries for keys the job never published (hand-published into
// DONE, or a forged UPLOADED message verified) show in report.md, not as a quiet "verified 2".
func TestReportFlagsForgedDone(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	for _, k := range []string{"never-published-1", "never-published-2"} {
		if _, err := js.Publish(ctx, n.DoneSubject, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Write(ctx, js, n, t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	Markdown(&md, r)
	if r.Unaccounted != -2 || !strings.Contains(md.String(), "no published key accounts for") {
		t.Errorf("published %d, verified %d, unaccounted %d; report.md:\n%s", r.Published, r.Verified, r.Unaccounted, md.String())
	}
	_ = bus.StageFetcher
}
