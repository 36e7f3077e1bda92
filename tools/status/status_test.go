package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
)

// fill puts a job into a known state: 10 keys published and 4 of them acked by a fetcher, one
// of which is held unacked; 3 blobs; 5 verified; 2 dead letters; a key list and a scan checkpoint.
func fill(t *testing.T, js jetstream.JetStream, n bus.Names) {
	t.Helper()
	ctx := context.Background()
	for i := range 10 {
		if _, err := js.Publish(ctx, n.KeysSubject, fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(5)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if i++; i <= 4 {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		} // the fifth stays ack-pending
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, n.BlobsSubject, bytes.Repeat([]byte{'b'}, 100+i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := js.Publish(ctx, n.DoneSubject, fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []bus.DeadLetter{
		{Key: "gone.jpg", Stage: bus.StageFetcher, Reason: bus.ReasonNotFound, Err: "no target holds it"},
		{Key: "bad key", Stage: bus.StageFetcher, Reason: bus.ReasonInvalidKey, Err: "pattern"},
	} {
		if err := bus.PublishDeadLetter(ctx, js, n, d); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string, v any) {
		b, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
	put("producer.aaaa", checkpoint.List{Path: "/data/keys.txt", Offset: 4096, Line: 300, Done: false})
	put("settings.throttle.fetcher", map[string]int{"reads": 5}) // not the producer's: ignored
	half := int64(0)
	put("scan.bbbb", checkpoint.ScanPlan{Table: "ks.t", KeyColumn: "key", Ranges: []checkpoint.Range{
		{Start: math.MinInt64, End: half}, {Start: half, End: math.MaxInt64}}})
	put("scan.bbbb.0", checkpoint.ScanRange{Last: half, Done: true, Keys: 120})
	put("scan.bbbb.1", checkpoint.ScanRange{Last: math.MaxInt64 / 2, Keys: 30})
}

func TestCollect(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()

	empty, err := Collect(ctx, js, n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if empty.Backlog != 0 || empty.ETASeconds != nil || empty.Verified.Messages != 0 || len(empty.Stages) != 4 ||
		len(empty.Producer.Lists)+len(empty.Producer.Scans) != 0 {
		t.Errorf("empty job: %+v", empty)
	}

	fill(t, js, n)
	st, err := Collect(ctx, js, n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The numbers are the consumer info's, read directly.
	for _, sg := range st.Stages {
		c, err := js.Consumer(ctx, sg.Stream, sg.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		ci, _ := c.Info(ctx)
		if sg.Pending != ci.NumPending || sg.AckPending != ci.NumAckPending || sg.Redelivered != ci.NumRedelivered || sg.Waiting != ci.NumWaiting {
			t.Errorf("%s: %+v, consumer info pending %d ack %d redelivered %d waiting %d", sg.Stage, sg, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
		}
		if sg.Orphaned != 0 { // every message is pending or in flight
			t.Errorf("%s: %d orphaned, want 0", sg.Stage, sg.Orphaned)
		}
	}
	f := st.Stages[0]
	if f.Stage != "fetcher" || f.Messages != 6 || f.Published != 10 || f.Processed != 4 || f.Pending != 5 || f.AckPending != 1 {
		t.Errorf("fetcher = %+v, want 6 messages of 10 published, 4 processed, 5 pending, 1 ack-pending", f)
	}
	if u := st.Stages[1]; u.Messages != 3 || u.Bytes == 0 || u.Pending != 3 {
		t.Errorf("uploader = %+v", u)
	}
	if st.Backlog != 9 {
		t.Errorf("backlog = %d, want 9", st.Backlog)
	}
	if st.Verified.Messages != 5 || st.Verified.LastMinute != 5 {
		t.Errorf("verified = %+v, want 5, all in the last minute", st.Verified)
	}
	if d := st.DeadLetters; d.Total != 2 || d.LastMinute != 2 || d.ByReason["fetcher/not_found"] != 1 || d.ByReason["fetcher/invalid_key"] != 1 {
		t.Errorf("dead letters = %+v", d)
	}
	// 9 queued, 7 ended since DONE and the DLQ got their first entries (under a minute ago).
	if st.Verified.WindowSeconds < 1 || st.Verified.WindowSeconds >= 60 || st.DeadLetters.WindowSeconds < 1 {
		t.Errorf("windows %v, %v: want the young streams' age, at least 1 s", st.Verified.WindowSeconds, st.DeadLetters.WindowSeconds)
	}
	want := math.Round(9 / (5/st.Verified.WindowSeconds + 2/st.DeadLetters.WindowSeconds))
	if st.ETASeconds == nil || *st.ETASeconds != want {
		t.Errorf("eta = %v, want %v", st.ETASeconds, want)
	}
	if l := st.Producer.Lists; len(l) != 1 || l[0].Path != "/data/keys.txt" || l[0].Line != 300 || l[0].Offset != 4096 || l[0].Done {
		t.Errorf("lists = %+v", l)
	}
	if s := st.Producer.Scans; len(s) != 1 || s[0].Ranges != 2 || s[0].RangesDone != 1 || s[0].Keys != 150 ||
		math.Abs(s[0].Fraction-0.75) > 1e-6 || s[0].Pass != 1 || s[0].Passes == nil || len(s[0].Passes) != 0 {
		t.Errorf("scans = %+v, want 1 of 2 ranges, 75%% of the ring, 150 keys", s)
	}
	// Nothing verified before the window: counted since a minute ago, none.
	later, err := Collect(ctx, js, n, time.Now().Add(2*RateWindow))
	if err != nil {
		t.Fatal(err)
	}
	if later.Verified.LastMinute != 0 || later.ETASeconds != nil {
		t.Errorf("two minutes on: verified last minute %d, eta %v; want 0 and none", later.Verified.LastMinute, later.ETASeconds)
	}
	// Collect created no consumer that outlives it.
	for _, s := range []string{n.Done, n.DLQ} {
		str, _ := js.Stream(ctx, s)
		info, _ := str.Info(ctx)
		if info.State.Consumers != 0 {
			t.Errorf("%s has %d consumers left", s, info.State.Consumers)
		}
	}
}

// TestCollectPasses: a scan's pass records come with it, first to last; the progress is the
// last pass's (its own range checkpoints, scan.<digest>.p<n>.<i>), and while it runs its counts
// are its ranges'.
func TestCollectPasses(t *testing.T) {
	js, n := bustest.Job(t)
	fill(t, js, n)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string, v any) {
		b, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	p2 := checkpoint.Pass{N: 2, Table: "ks.t", Since: t0.UnixMicro(), SinceFrom: "pass 1", Margin: "10m0s", Start: t0.Add(time.Hour), Scanned: 5, Published: 1}
	put("pass.bbbb.2", p2)
	put("pass.bbbb.1", checkpoint.Pass{N: 1, Table: "ks.t", Start: t0, End: t0.Add(time.Minute), Scanned: 150, Published: 150, Complete: true})
	put("pass.cccc.1", checkpoint.Pass{N: 1, Table: "other"}) // a scan without a plan: not shown
	put("scan.bbbb.p2.1", checkpoint.ScanRange{Last: half(), Done: false, Keys: 40, Published: 3})
	put("scan.bbbb.p2", map[string]int{"x": 1}) // not a range checkpoint
	st, err := Collect(ctx, js, n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Producer.Scans) != 1 {
		t.Fatalf("scans = %+v", st.Producer.Scans)
	}
	s := st.Producer.Scans[0]
	if s.Pass != 2 || s.Keys != 40 || s.RangesDone != 0 || len(s.Passes) != 2 || s.Passes[0].N != 1 || s.Passes[1].N != 2 {
		t.Fatalf("scan = %+v, want pass 2's progress (40 keys) and passes 1, 2", s)
	}
	if p := s.Passes[1]; p.Scanned != 40 || p.Published != 3 || p.Since != p2.Since {
		t.Errorf("running pass = %+v, want its ranges' counts 40 and 3", p)
	}
	if p := s.Passes[0]; p.Scanned != 150 || !p.Complete {
		t.Errorf("pass 1 = %+v", p)
	}
}

func half() int64 { return math.MaxInt64 / 2 }

func TestCollectUnknownJob(t *testing.T) {
	js, _ := bustest.Job(t)
	_, err := Collect(context.Background(), js, bus.For("nope"), time.Now())
	if err == nil || !config.IsInvalid(err) || !strings.Contains(err.Error(), `job "nope" not found`) {
		t.Fatalf("err = %v, want a usage error naming the job", err)
	}
	// and it created nothing
	if _, err := js.Stream(context.Background(), bus.For("nope").Keys); err == nil {
		t.Error("looking up a missing job created its KEYS stream")
	}
}

func TestScanProgress(t *testing.T) {
	plan := checkpoint.ScanPlan{Table: "ks.t", Ranges: []checkpoint.Range{{Start: math.MinInt64, End: -1}, {Start: -1, End: math.MaxInt64}}}
	for _, tc := range []struct {
		name       string
		cps        map[int]checkpoint.ScanRange
		done       int
		fraction   float64
		keys       int64
		rangeCount int
	}{
		{"no checkpoints", nil, 0, 0, 0, 2},
		{"first done", map[int]checkpoint.ScanRange{0: {Last: -1, Done: true, Keys: 7}}, 1, 0.5, 7, 2},
		{"all done", map[int]checkpoint.ScanRange{0: {Last: -1, Done: true, Keys: 7}, 1: {Last: math.MaxInt64, Done: true, Keys: 3}}, 2, 1, 10, 2},
		{"checkpoint outside its range", map[int]checkpoint.ScanRange{1: {Last: -5}}, 0, 0, 0, 2},
		{"a range index beyond the plan", map[int]checkpoint.ScanRange{5: {Last: 1, Done: true}}, 0, 0, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ScanProgress("scan.x", plan, tc.cps)
			if s.RangesDone != tc.done || math.Abs(s.Fraction-tc.fraction) > 1e-9 || s.Keys != tc.keys || s.Ranges != tc.rangeCount {
				t.Errorf("got %+v, want %d done, fraction %v, %d keys", s, tc.done, tc.fraction, tc.keys)
			}
		})
	}
}

func TestOrphans(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		messages, pending             uint64
		ackPending                    int
		awaitingAdvisor, wantOrphaned uint64
	}{
		{"empty", 0, 0, 0, 0, 0},
		{"all pending or in flight", 120, 100, 20, 0, 0},
		{"one neither pending nor ack-pending", 121, 100, 20, 0, 1},
		{"below the ack floor", 10, 7, 0, 0, 3},
		{"out of deliveries: the advisor's", 10, 7, 0, 3, 0},
		{"some the advisor's, one orphaned", 10, 7, 0, 2, 1},
		{"acked, not yet deleted the other way round: never negative", 5, 5, 3, 0, 0},
		{"advisories beyond the stream (already handled)", 2, 1, 0, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Orphans(tc.messages, tc.pending, tc.ackPending, tc.awaitingAdvisor); got != tc.wantOrphaned {
				t.Errorf("Orphans(%d, %d, %d, %d) = %d, want %d", tc.messages, tc.pending, tc.ackPending, tc.awaitingAdvisor, got, tc.wantOrphaned)
			}
		})
	}
}

func TestRates(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	snap := func(at time.Duration, processed uint64) *Status {
		return &Status{Time: t0.Add(at), Stages: []Stage{{Stage: "fetcher", Processed: processed}}}
	}
	for _, tc := range []struct {
		name  string
		snaps []*Status
		want  []float64 // per snapshot; -1: none
	}{
		{"one snapshot has no rate", []*Status{snap(0, 10)}, []float64{-1}},
		{"two snapshots", []*Status{snap(0, 10), snap(2*time.Second, 30)}, []float64{-1, 10}},
		{"over the window", []*Status{snap(0, 0), snap(30*time.Second, 300), snap(60*time.Second, 600), snap(90*time.Second, 1500)},
			[]float64{-1, 10, 10, 20}},
		{"a purge (processed went down)", []*Status{snap(0, 100), snap(2*time.Second, 10)}, []float64{-1, -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Rates
			for i, s := range tc.snaps {
				r.Apply(s)
				got := -1.0
				if p := s.Stages[0].PerSecond; p != nil {
					got = *p
				}
				if got != tc.want[i] {
					t.Errorf("snapshot %d: rate %v, want %v", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestPrint(t *testing.T) {
	rate, eta := 12.0, 95.0
	base := func() *Status {
		return &Status{Job: "photos", Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
			Stages: []Stage{{Stage: "fetcher", Stream: "FERRY_photos_KEYS", Consumer: "fetcher", Messages: 120, Bytes: 3 << 20,
				Pending: 100, AckPending: 20, Redelivered: 2, Waiting: 3, Processed: 880, PerSecond: &rate}},
			Verified:    Verified{Stream: "FERRY_photos_DONE", Messages: 870, LastMinute: 600, PerSecond: 10},
			DeadLetters: DeadLetters{Total: 10, ByReason: map[string]uint64{"fetcher/not_found": 7, "producer/invalid_key": 3}},
			Backlog:     120, ETASeconds: &eta,
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*Status)
		want   []string
	}{
		{"a running job", func(*Status) {}, []string{
			"ferry status — job photos — 2026-11-25 12:00:00 UTC",
			"fetcher  FERRY_photos_KEYS  120       3.0 MiB  100      20           2            3        880        12",
			"verified      870 (FERRY_photos_DONE), 600 in the last minute: 10.0/s",
			"dead letters  10, 0 in the last minute: fetcher/not_found 7, producer/invalid_key 3",
			"backlog       120 in the work queues; ETA 1m35s",
			"producer      no checkpoint",
		}},
		{"finished", func(s *Status) {
			s.Backlog, s.ETASeconds, s.Stages[0].PerSecond = 0, nil, nil
			s.Producer.Lists = []checkpoint.List{{Path: "/k.txt", Line: 1000, Offset: 20000, Done: true}}
		}, []string{
			"backlog       0 in the work queues; ETA nothing queued",
			"producer      /k.txt: line 1000, offset 19.5 KiB, done",
			"880        -",
		}},
		{"orphans", func(s *Status) {
			s.Stages = append(s.Stages, Stage{Stage: "uploader", Stream: "FERRY_photos_BLOBS", Consumer: "uploader", Messages: 1, Orphaned: 1})
		}, []string{
			"REDELIVERED  WAITING  PROCESSED  PER SECOND  ORPHANED",
			"880        12          0",
			"uploader  FERRY_photos_BLOBS  1         0 B      0        0            0            0        0          -           1",
			"orphaned      1 in the work queues that no consumer will deliver (uploader 1); if it stays, run `ferry repair --dry-run`, then `ferry repair`",
		}},
		{"stalled, scanning", func(s *Status) {
			s.ETASeconds = nil
			s.Producer.Scans = []Scan{{Table: "ks.t", Pass: 1, Ranges: 64, RangesDone: 16, Fraction: 0.25, Keys: 5000}}
		}, []string{
			"ETA -",
			"producer      scan ks.t pass 1: 16 of 64 ranges done, 25.0% of the ring, 5000 keys read",
		}},
		{"delta pass running", func(s *Status) {
			t0 := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
			s.Producer.Scans = []Scan{{Table: "ks.t", Pass: 2, Ranges: 64, RangesDone: 32, Fraction: 0.5, Keys: 500, Passes: []checkpoint.Pass{
				{N: 1, Start: t0, End: t0.Add(90 * time.Minute), Scanned: 1000, Published: 1000, Complete: true},
				{N: 2, Since: t0.Add(-10 * time.Minute).UnixMicro(), SinceFrom: "pass 1", Margin: "10m0s", Start: t0.Add(48 * time.Hour), Scanned: 500, Published: 7},
			}}}
		}, []string{
			"producer      scan ks.t pass 2: 32 of 64 ranges done, 50.0% of the ring, 500 keys read",
			"  PASS  SINCE                          START                END                  SCANNED  PUBLISHED  COMPLETE",
			"  1     full                           2026-11-20 08:00:00  2026-11-20 09:30:00  1000     1000       yes",
			"  2     delta since pass 1 less 10m0s  2026-11-22 08:00:00  running              500      7          no",
			"last pass     2 (delta since pass 1 less 10m0s) published 7 of 500 keys read, running or stopped, not complete",
		}},
		{"delta pass from a time, complete", func(s *Status) {
			t0 := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
			s.Producer.Scans = []Scan{{Table: "ks.t", Pass: 1, Ranges: 8, RangesDone: 8, Fraction: 1, Keys: 10, Passes: []checkpoint.Pass{
				{N: 1, Since: t0.UnixMicro(), SinceFrom: "2026-11-20T08:00:00Z", Margin: "0s", Start: t0.Add(time.Hour), End: t0.Add(2 * time.Hour), Scanned: 10, Published: 2, Complete: true},
			}}}
		}, []string{
			"  1     delta since 2026-11-20T08:00:00Z  2026-11-20 09:00:00  2026-11-20 10:00:00  10       2          yes",
			"last pass     1 (delta since 2026-11-20T08:00:00Z) published 2 of 10 keys read, complete",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.change(s)
			var b strings.Builder
			Print(&b, s)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
			if tc.name != "orphans" && strings.Contains(strings.ToLower(b.String()), "orphaned") {
				t.Errorf("no orphans, yet the output mentions them:\n%s", b.String())
			}
		})
	}
}

func TestJSONFields(t *testing.T) {
	js, n := bustest.Job(t)
	fill(t, js, n)
	st, err := Collect(context.Background(), js, n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := JSON(&b, st); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"job", "time", "stages", "verified", "dead_letters", "backlog", "eta_seconds", "producer"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b.String())
		}
	}
	scan := doc["producer"].(map[string]any)["scans"].([]any)[0].(map[string]any)
	for _, k := range []string{"key", "table", "pass", "ranges", "ranges_done", "fraction", "keys", "passes"} {
		if _, ok := scan[k]; !ok {
			t.Errorf("scan JSON lacks %q: %v", k, scan)
		}
	}
	stage := doc["stages"].([]any)[0].(map[string]any)
	for _, k := range []string{"stage", "stream", "consumer", "messages", "bytes", "published", "pending", "ack_pending", "redelivered", "waiting", "processed", "per_second", "orphaned"} {
		if _, ok := stage[k]; !ok {
			t.Errorf("stage JSON lacks %q", k)
		}
	}
}

func TestWatch(t *testing.T) {
	js, n := bustest.Job(t)
	for _, terminal := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), Interval+Interval/2)
		defer cancel()
		var b bytes.Buffer
		if err := Watch(ctx, js, n, &b, true, false, terminal); err != nil {
			t.Fatal(err)
		}
		frames := strings.Count(b.String(), "ferry status — job t")
		clears := strings.Count(b.String(), "\033[H\033[2J")
		if !terminal && (frames < 2 || clears != 0) {
			t.Errorf("not a terminal: %d frames, %d clears; want ≥2 plain frames", frames, clears)
		}
		if terminal && (frames < 1 || clears != frames) {
			t.Errorf("terminal: %d frames, %d clears; want a clear before each", frames, clears)
		}
		if !terminal && strings.Count(b.String(), "  -\n") != 4 { // only the first frame has no rates
			t.Errorf("want rates from the second frame on:\n%s", b.String())
		}
	}
}
