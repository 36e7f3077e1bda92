package report

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
)

func TestWrite(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	for i := range 12 {
		if _, err := js.Publish(ctx, n.KeysSubject, fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 7 {
		if _, err := js.Publish(ctx, n.DoneSubject, fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	dead := []bus.DeadLetter{
		{Key: "gone-1.jpg", Stage: bus.StageFetcher, Reason: bus.ReasonNotFound, Err: "not found on dc1, dc2-old", Attempts: 1},
		{Key: "gone-2.jpg", Stage: bus.StageFetcher, Reason: bus.ReasonNotFound, Err: "not found on dc1, dc2-old", Attempts: 1},
		{Key: "a|b c.jpg", Stage: bus.StageFetcher, Reason: bus.ReasonInvalidKey, Err: "fails the pattern", Attempts: 1},
		{Key: "two\nlines", Stage: bus.StageProducer, Reason: bus.ReasonInvalidKey, Err: "control character"},
	}
	for _, d := range dead {
		if err := bus.PublishDeadLetter(ctx, js, n, d); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "out")
	r, err := Write(ctx, js, n, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Published != 12 || r.Verified != 7 || r.DeadLettered != 4 || r.InPipeline != 12 || r.Queued[bus.StageFetcher] != 12 {
		t.Errorf("report = %+v", r)
	}
	if r.DeadLetters["fetcher/not_found"] != 2 || r.DeadLetters["fetcher/invalid_key"] != 1 || r.DeadLetters["producer/invalid_key"] != 1 {
		t.Errorf("dead letters = %v", r.DeadLetters)
	}
	var sum uint64
	for _, b := range r.PerMinute {
		sum += b.Verified
	}
	if sum != 7 || len(r.PerMinute) == 0 || len(r.PerMinute) > 2 || r.FirstVerified == nil || r.LastVerified.Before(*r.FirstVerified) {
		t.Errorf("per minute %v (first %v, last %v), want 7 verified in one or two minutes", r.PerMinute, r.FirstVerified, r.LastVerified)
	}

	keys, err := os.ReadFile(filepath.Join(dir, FileKeys))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(keys), "gone-1.jpg\ngone-2.jpg\na|b c.jpg\n"; got != want {
		t.Errorf("%s = %q, want %q (the key with a line break only in %s)", FileKeys, got, want, FileEntries)
	}
	f, err := os.Open(filepath.Join(dir, FileEntries))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries []Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s line %q: %v", FileEntries, sc.Text(), err)
		}
		entries = append(entries, e)
	}
	if len(entries) != 4 || entries[3].Key != "two\nlines" || entries[0].Stage != "fetcher" || entries[0].Reason != "not_found" ||
		entries[0].Error != "not found on dc1, dc2-old" || entries[0].Attempts != "1" {
		t.Errorf("%s = %+v", FileEntries, entries)
	}

	var doc map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, FileJSON))
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"job", "published", "verified", "dead_lettered", "dead_letters", "in_pipeline", "in_pipeline_by_stage",
		"job_created", "first_verified", "last_verified", "elapsed_seconds", "verified_per_minute", "keys_with_line_breaks", "files"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("%s lacks %q", FileJSON, k)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, FileMarkdown))
	for _, want := range []string{
		"# ferry report: job t",
		"| published to KEYS | 12 |",
		"| verified in S3 (size and checksum) | 7 |",
		"| dead-lettered | 4 |",
		"| still in the pipeline | 12 |",
		"| fetcher | `not_found` | 2 | no read target holds the key |",
		"### fetcher / not_found: 2 keys",
		"| `gone-1.jpg` | not found on dc1, dc2-old | 1 |",
		"| `a\\|b c.jpg` | fails the pattern | 1 |",
		"| `\"two\\nlines\"` | control character | 0 |",
		"1 keys hold a line break and are only in `dlq.jsonl`",
		"## Verified per minute",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
}

func TestWriteEmptyAndUnknown(t *testing.T) {
	js, n := bustest.Job(t)
	dir := t.TempDir()
	r, err := Write(context.Background(), js, n, dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Verified != 0 || r.DeadLettered != 0 || r.FirstVerified != nil {
		t.Errorf("empty job: %+v", r)
	}
	md, _ := os.ReadFile(filepath.Join(dir, FileMarkdown))
	for _, want := range []string{"No dead letters", "| verified | none yet |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	if keys, _ := os.ReadFile(filepath.Join(dir, FileKeys)); len(keys) != 0 {
		t.Errorf("%s = %q, want empty", FileKeys, keys)
	}
	_, err = Write(context.Background(), js, bus.For("nope"), t.TempDir(), time.Now())
	if !config.IsInvalid(err) {
		t.Errorf("unknown job: %v, want a usage error", err)
	}
}

func TestBuckets(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	at := func(m int) int64 { return t0.Add(time.Duration(m) * time.Minute).Unix() }
	got := Buckets(map[int64]uint64{at(0): 5, at(3): 2}, t0.Add(10*time.Second), t0.Add(3*time.Minute+59*time.Second))
	want := []uint64{5, 0, 0, 2} // the stall shows
	var counts []uint64
	for i, b := range got {
		counts = append(counts, b.Verified)
		if !b.Minute.Equal(t0.Add(time.Duration(i) * time.Minute)) {
			t.Errorf("bucket %d starts %s", i, b.Minute)
		}
	}
	if !slices.Equal(counts, want) {
		t.Errorf("buckets %v, want %v", counts, want)
	}
}

func TestStepAndRollup(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 30, 0, 0, time.UTC)
	minutes := func(k int) []Bucket {
		b := make([]Bucket, k)
		for i := range b {
			b[i] = Bucket{Minute: t0.Add(time.Duration(i) * time.Minute), Verified: 1}
		}
		return b
	}
	for _, tc := range []struct {
		minutes int
		label   string
		rows    int
		first   uint64
	}{
		{1, "minute", 1, 1},
		{180, "minute", 180, 1},
		{181, "hour", 4, 30}, // 12:30–12:59, 13, 14, 15:00–15:30
		{7 * 24 * 60, "hour", 7*24 + 1, 30},
		{7*24*60 + 1, "day", 8, 11*60 + 30},
	} {
		t.Run(fmt.Sprint(tc.minutes), func(t *testing.T) {
			b := minutes(tc.minutes)
			step, label := Step(b)
			rows := Rollup(b, step)
			var sum uint64
			for _, r := range rows {
				sum += r.Verified
			}
			if label != tc.label || len(rows) != tc.rows || rows[0].Verified != tc.first || sum != uint64(tc.minutes) {
				t.Errorf("%s, %d rows, first %d, sum %d; want %s, %d rows, first %d", label, len(rows), rows[0].Verified, sum, tc.label, tc.rows, tc.first)
			}
		})
	}
}

func TestCode(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"photos/a.jpg", "`photos/a.jpg`"},
		{"a|b", "`a\\|b`"},
		{"", "(empty)"},
		{"x\x01y", "`\"x\\x01y\"`"},
		{"\xff\xfe", "`\"\\xff\\xfe\"`"},
		{"has`tick", "`` has`tick ``"},
		{"\uFEFFbom", "`\"\\ufeffbom\"`"},
		{"ünïcode.jpg", "`ünïcode.jpg`"},
		{strings.Repeat("é", 150), "`" + strings.Repeat("é", 100) + "… (300 bytes)`"},
	} {
		if got := code(tc.key); got != tc.want {
			t.Errorf("code(%q) = %s, want %s", tc.key, got, tc.want)
		}
	}
}
