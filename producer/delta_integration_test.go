//go:build integration

package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

// deltaRows is the old rows of the delta test table; deltaNull of them have no blob.
const (
	deltaRows = 3000
	deltaNull = 10
)

// deltaTable empties ferry_scan_test.delta and fills it with deltaRows rows written two hours
// ago (USING TIMESTAMP), deltaNull of them without a blob; it returns the job whose first target
// reads it and a writer for more rows.
func deltaTable(t *testing.T) (*config.Job, func(ts time.Time, keys ...string)) {
	t.Helper()
	job, _ := casstest.LocalJob(t)
	tg := &job.Source.Targets[0]
	tg.Table, tg.KeyColumn, tg.BlobColumn = "ferry_scan_test.delta", "key", "data"
	ctx := context.Background()
	c, err := cass.ClusterConfig(*tg, 16)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 30 * time.Second
	s, err := cass.Open(ctx, *tg, c)
	if err != nil {
		t.Fatalf("cassandra (make up first): %v", err)
	}
	t.Cleanup(s.Close)
	for _, q := range []string{
		`CREATE KEYSPACE IF NOT EXISTS ferry_scan_test WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1, 'dc2': 1}`,
		`CREATE TABLE IF NOT EXISTS ferry_scan_test.delta (key text PRIMARY KEY, data blob)`,
		`TRUNCATE ferry_scan_test.delta`,
	} {
		if err := s.Query(q).WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	write := func(ts time.Time, blob bool, keys ...string) {
		t.Helper()
		q := `INSERT INTO ferry_scan_test.delta (key, data) VALUES (?, ?) USING TIMESTAMP ?`
		if !blob {
			q = `INSERT INTO ferry_scan_test.delta (key) VALUES (?) USING TIMESTAMP ?`
		}
		b := s.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
		b.SetConsistency(gocql.All)
		for i, k := range keys {
			if blob {
				b.Query(q, k, []byte("blob "+k), ts.UnixMicro())
			} else {
				b.Query(q, k, ts.UnixMicro())
			}
			if b.Size() == 100 || i == len(keys)-1 {
				if err := s.ExecuteBatch(b); err != nil {
					t.Fatalf("write %d keys: %v", b.Size(), err)
				}
				b = s.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
				b.SetConsistency(gocql.All)
			}
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	write(old, true, deltaKeys(0, deltaRows-deltaNull)...)
	write(old, false, deltaKeys(deltaRows-deltaNull, deltaRows)...)
	return job, func(ts time.Time, keys ...string) { write(ts, true, keys...) }
}

func deltaKeys(from, to int) []string {
	var ks []string
	for i := from; i < to; i++ {
		ks = append(ks, fmt.Sprintf("delta/%05d.jpg", i))
	}
	return ks
}

// keysMsg is a KEYS message's key and pass headers.
type keysMsg struct{ key, id, pass string }

// keysFrom reads the KEYS messages from sequence from on.
func keysFrom(t *testing.T, js jetstream.JetStream, stream string, from uint64) []keysMsg {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []keysMsg
	for seq := max(from, info.State.FirstSeq); seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("KEYS %d: %v", seq, err)
		}
		out = append(out, keysMsg{key: string(m.Data), id: m.Header.Get(bus.HdrID), pass: m.Header.Get(bus.HdrPass)})
	}
	return out
}

func readPass(t *testing.T, env *service.Env, tg config.Target, n int) checkpoint.Pass {
	t.Helper()
	ctx := context.Background()
	kv, err := env.JS.KeyValue(ctx, env.Names.KV)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, checkpoint.PassKey(tg, n))
	if err != nil {
		t.Fatalf("pass %d record: %v", n, err)
	}
	var p checkpoint.Pass
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkPassMsgs: msgs are exactly the keys want, each once, with pass n's headers.
func checkPassMsgs(t *testing.T, env *service.Env, msgs []keysMsg, n int, want []string) {
	t.Helper()
	got := map[string]int{}
	for _, m := range msgs {
		got[m.key]++
		wantID := bus.KeyID(env.Names.Job, m.key)
		if n >= 2 {
			wantID += fmt.Sprintf(".p%d", n)
		}
		if m.pass != fmt.Sprint(n) || m.id != wantID {
			t.Errorf("pass %d: key %s has Ferry-Pass %q and Ferry-Id %q, want %d and %q", n, m.key, m.pass, m.id, n, wantID)
		}
	}
	keys := slices.Sorted(maps.Keys(got))
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("pass %d published %d keys, want %d: %v", n, len(keys), len(want), diffKeys(keys, want))
	}
	for k, c := range got {
		if c > 1 {
			t.Errorf("pass %d: %s in KEYS %d times", n, k, c)
		}
	}
}

func diffKeys(got, want []string) string {
	var extra, missing []string
	for _, k := range got {
		if !slices.Contains(want, k) {
			extra = append(extra, k)
		}
	}
	for _, k := range want {
		if !slices.Contains(got, k) {
			missing = append(missing, k)
		}
	}
	return fmt.Sprintf("extra %v, missing %v", extra[:min(len(extra), 5)], missing[:min(len(missing), 5)])
}

// TestScanDelta: a full pass, then delta passes publish exactly the keys written since their
// floor (less the margin), under their own Ferry-Id and with Ferry-Pass; every pass is recorded;
// a stopped delta pass resumes with the same --since and refuses another.
func TestScanDelta(t *testing.T) {
	job, write := deltaTable(t)
	tg := job.Source.Targets[0]
	js, n := bustest.Job(t)
	env := &service.Env{Names: n, JS: js, Log: slog.Default()}
	env.SetJob(job)
	ctx := context.Background()
	cfg := Config{InFlight: 256, HighWater: 1 << 40, Parallel: 1, Scan: ScanConfig{
		Enabled: true, Concurrency: 4, PageSize: 200, Consistency: "LOCAL_ONE", Ranges: 16, SinceMargin: 10 * time.Minute}}
	run := func(cfg Config) (Stats, error) {
		t.Helper()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return Run(ctx, env, cfg)
	}

	// Pass 1, full: every key, the blobless ones too.
	if st, err := run(cfg); err != nil || st.Lines != deltaRows || st.Published != deltaRows {
		t.Fatalf("pass 1 = %+v, %v; want %d read and published", st, err, deltaRows)
	}
	checkPassMsgs(t, env, keysFrom(t, js, n.Keys, 1), 1, deltaKeys(0, deltaRows))
	p1 := readPass(t, env, tg, 1)
	if !p1.Complete || p1.Since != 0 || p1.Scanned != deltaRows || p1.Published != deltaRows || p1.End.IsZero() || p1.Consistency != "LOCAL_ONE" {
		t.Errorf("pass 1 record = %+v", p1)
	}
	if st, err := run(cfg); err != nil || st.Lines != 0 {
		t.Errorf("after pass 1, a run without --since = %+v, %v; want nothing read", st, err)
	}

	// Rewrites and new keys after pass 1, and a few written 5 minutes before its start by a
	// client whose clock is behind: within the margin.
	rewritten := deltaKeys(100, 200)
	added := deltaKeys(deltaRows, deltaRows+20)
	skewed := deltaKeys(500, 505)
	write(time.Now(), rewritten...)
	write(time.Now(), added...)
	write(p1.Start.Add(-5*time.Minute), skewed...)
	write(p1.Start.Add(-20*time.Minute), deltaKeys(600, 605)...) // beyond the margin: not published
	total := deltaRows + len(added)

	// Pass 2: since pass 1.
	seq := bustest.Msgs(t, js, n.Keys) + 1
	d := cfg
	d.Scan.Since = "1"
	st, err := run(d)
	want2 := slices.Concat(rewritten, added, skewed)
	if err != nil || st.Lines != int64(total) || st.Published != int64(len(want2)) || st.Unchanged != int64(total-len(want2)) {
		t.Fatalf("pass 2 = %+v, %v; want %d read, %d published", st, err, total, len(want2))
	}
	checkPassMsgs(t, env, keysFrom(t, js, n.Keys, seq), 2, want2)
	p2 := readPass(t, env, tg, 2)
	if !p2.Complete || p2.Since != p1.Start.Add(-10*time.Minute).UnixMicro() || p2.SinceFrom != "pass 1" || p2.Margin != "10m0s" ||
		p2.Scanned != int64(total) || p2.Published != int64(len(want2)) || p2.Start.Before(p1.End) {
		t.Errorf("pass 2 record = %+v", p2)
	}

	// Pass 3 since pass 2 with no margin, stopped part way (the rate cap makes it take ~3 s),
	// then resumed.
	rewritten3 := deltaKeys(1000, 1050)
	write(time.Now(), rewritten3...)
	seq = bustest.Msgs(t, js, n.Keys) + 1
	d3 := cfg
	d3.Scan.Since, d3.Scan.SinceMargin, d3.Scan.Rate, d3.Scan.Concurrency = "2", 0, 1000, 2
	cctx, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	if err := d3.Validate(); err != nil {
		t.Fatal(err)
	}
	st, err = Run(cctx, env, d3)
	cancel()
	if err != nil || st.Lines == 0 || st.Lines >= int64(total) {
		t.Fatalf("stopped pass 3 = %+v, %v; want it stopped part way", st, err)
	}
	open3 := readPass(t, env, tg, 3)
	if open3.Complete || !open3.End.IsZero() || open3.Scanned != st.Lines {
		t.Errorf("stopped pass 3 record = %+v, want incomplete with %d scanned", open3, st.Lines)
	}
	// Another --since, or none, while pass 3 is open: refused, naming it and how to go on.
	for _, since := range []string{"1", ""} {
		o := d3
		o.Scan.Since = since
		if _, err := run(o); err == nil || !config.IsInvalid(err) || !strings.Contains(err.Error(), "pass 3 of ferry_scan_test.delta") ||
			!strings.Contains(err.Error(), "--since 2 --since-margin 0s") {
			t.Errorf("--since %q while pass 3 is open: %v", since, err)
		}
	}
	d3.Scan.Rate = 0
	st2, err := run(d3)
	if err != nil || st.Lines+st2.Lines < int64(total) || st2.Lines >= int64(total) {
		t.Fatalf("resumed pass 3 = %+v, %v; want the rest of %d read (first run read %d)", st2, err, total, st.Lines)
	}
	checkPassMsgs(t, env, keysFrom(t, js, n.Keys, seq), 3, rewritten3)
	p3 := readPass(t, env, tg, 3)
	if !p3.Complete || !p3.Start.Equal(open3.Start) || p3.Since != p2.Start.UnixMicro() || p3.Scanned != st.Lines+st2.Lines ||
		p3.Published < int64(len(rewritten3)) {
		t.Errorf("pass 3 record = %+v", p3)
	}
	t.Logf("pass 3: stopped after %d keys read, resumed for %d; record %+v", st.Lines, st2.Lines, p3)

	// --restart: pass 4, full, over the passes kept.
	r := cfg
	r.Restart = true
	if st, err := run(r); err != nil || st.Published != int64(total) || st.Duplicates != 0 {
		t.Errorf("--restart = %+v, %v; want %d published under pass 4's ids", st, err, total)
	}
	if p4 := readPass(t, env, tg, 4); !p4.Complete || p4.Since != 0 || p4.Published != int64(total) {
		t.Errorf("pass 4 record = %+v", p4)
	}
	if p := readPass(t, env, tg, 1); p.Published != deltaRows {
		t.Errorf("pass 1 record after --restart = %+v", p)
	}
}

// TestScanBeforePasses: a job whose scan was saved before passes existed (a plan and range
// checkpoints, no pass record) gets its pass 1 record from them, started when its plan was
// saved, and a delta pass since it works.
func TestScanBeforePasses(t *testing.T) {
	job, write := deltaTable(t)
	tg := job.Source.Targets[0]
	js, n := bustest.Job(t)
	env := &service.Env{Names: n, JS: js, Log: slog.Default()}
	env.SetJob(job)
	ctx := context.Background()
	cfg := Config{InFlight: 256, HighWater: 1 << 40, Parallel: 1, Scan: ScanConfig{
		Enabled: true, Concurrency: 4, PageSize: 500, Consistency: "LOCAL_ONE", Ranges: 8, SinceMargin: time.Minute}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, env, cfg); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := kv.Get(ctx, checkpoint.ScanKey(tg))
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, checkpoint.PassKey(tg, 1)); err != nil { // as an older ferry left it
		t.Fatal(err)
	}
	if st, err := Run(ctx, env, cfg); err != nil || st.Lines != 0 {
		t.Fatalf("a run after the scan = %+v, %v; want nothing read", st, err)
	}
	p1 := readPass(t, env, tg, 1)
	if !p1.Complete || !p1.Start.Equal(plan.Created().UTC()) || p1.End.Before(p1.Start) || p1.Scanned != deltaRows {
		t.Errorf("pass 1 record from the old checkpoints = %+v (plan saved %v)", p1, plan.Created())
	}
	write(time.Now(), deltaKeys(7, 9)...)
	seq := bustest.Msgs(t, js, n.Keys) + 1
	d := cfg
	d.Scan.Since = "last"
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if st, err := Run(ctx, env, d); err != nil || st.Published != 2 {
		t.Fatalf("delta since the old pass = %+v, %v; want 2 published", st, err)
	}
	checkPassMsgs(t, env, keysFrom(t, js, n.Keys, seq), 2, deltaKeys(7, 9))
}
