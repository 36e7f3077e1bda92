//go:build integration

package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

// scanRows is the size of the scan test table: enough for several pages in every range.
const scanRows = 20_000

// scanTable is the job whose first target reads ferry_scan_test.keys, and every key's token.
func scanTable(t *testing.T) (*config.Job, map[string]int64) {
	t.Helper()
	job, _ := casstest.LocalJob(t)
	tg := &job.Source.Targets[0]
	tg.Table, tg.KeyColumn, tg.BlobColumn = "ferry_scan_test.keys", "key", "data"
	return job, casstest.KeyTable(t, *tg, tg.Table, scanRows, func(i int) string { return fmt.Sprintf("scan/%06d.jpg", i) })
}

func TestScan(t *testing.T) {
	job, tokens := scanTable(t)
	js, n := bustest.Job(t)
	env := &service.Env{Names: n, JS: js, Log: slog.Default()}
	env.SetJob(job)
	cfg := Config{InFlight: 256, HighWater: 1 << 40, Parallel: 1, Scan: ScanConfig{
		Enabled: true, Concurrency: 4, PageSize: 500, Consistency: "LOCAL_ONE", Ranges: 16}}

	// Stop the first run part way, as SIGTERM does.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		for ctx.Err() == nil && bustest.Msgs(t, js, n.Keys) < scanRows/3 {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	st1, err := Run(ctx, env, cfg)
	cancel()
	if err != nil {
		t.Fatalf("first run: %v", err)
	}
	stored := bustest.Msgs(t, js, n.Keys)
	if stored >= scanRows {
		t.Fatalf("the first run was not stopped part way: %d keys stored", stored)
	}

	// The checkpoints: every key at or below a range's last token is stored, and at most one page
	// per range was stored beyond them (a SIGKILL loses no more; a stop loses nothing but a token).
	plan, cps := readScanCheckpoints(t, env, job)
	if len(plan.Ranges) < 16 {
		t.Fatalf("plan has %d ranges, want at least 16", len(plan.Ranges))
	}
	covered := coveredKeys(tokens, plan, cps)
	t.Logf("first run: read %d, stored %d, covered by checkpoints %d", st1.Lines, stored, covered)
	if int(stored) < covered {
		t.Fatalf("checkpoints cover %d keys but only %d are stored: a restart would lose keys", covered, stored)
	}
	if extra := int(stored) - covered; extra > len(plan.Ranges)*cfg.Scan.PageSize {
		t.Errorf("%d keys stored beyond the checkpoints, more than one page per range", extra)
	}

	// The second run resumes: it reads exactly the keys past the checkpoints, and KEYS ends with
	// every key once.
	st2, err := Run(context.Background(), env, cfg)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if int(st2.Lines) != scanRows-covered {
		t.Errorf("second run read %d keys, want %d (those past the checkpoints)", st2.Lines, scanRows-covered)
	}
	if got := bustest.Msgs(t, js, n.Keys); got != scanRows {
		t.Errorf("KEYS holds %d keys, want %d", got, scanRows)
	}
	if st := bustest.Msgs(t, js, n.DLQ); st != 0 {
		t.Errorf("DLQ holds %d, want 0", st)
	}
	// Done: a third run reads nothing; --restart is pass 2, a new split, and publishes everything
	// again under pass 2's ids.
	if st3, err := Run(context.Background(), env, cfg); err != nil || st3.Lines != 0 {
		t.Errorf("third run = %+v, %v; want nothing read", st3, err)
	}
	cfg.Restart = true
	cfg.Scan.Ranges = 7
	if st4, err := Run(context.Background(), env, cfg); err != nil || st4.Lines != scanRows || st4.Published != scanRows || st4.Duplicates != 0 {
		t.Errorf("--restart run = %+v, %v; want %d read and published", st4, err, scanRows)
	}
	if got := bustest.Msgs(t, js, n.Keys); got != 2*scanRows {
		t.Errorf("KEYS holds %d keys, want %d (pass 1 and pass 2)", got, 2*scanRows)
	}
}

func readScanCheckpoints(t *testing.T, env *service.Env, job *config.Job) (checkpoint.ScanPlan, []checkpoint.ScanRange) {
	t.Helper()
	ctx := context.Background()
	kv, err := env.JS.KeyValue(ctx, env.Names.KV)
	if err != nil {
		t.Fatal(err)
	}
	key := checkpoint.ScanKey(job.Source.Targets[0])
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("scan plan: %v", err)
	}
	var plan checkpoint.ScanPlan
	if err := json.Unmarshal(e.Value(), &plan); err != nil {
		t.Fatal(err)
	}
	cps := make([]checkpoint.ScanRange, len(plan.Ranges))
	for i, r := range plan.Ranges {
		cps[i].Last = r.Start
		if e, err := kv.Get(ctx, key+"."+strconv.Itoa(i)); err == nil {
			if err := json.Unmarshal(e.Value(), &cps[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return plan, cps
}

func coveredKeys(tokens map[string]int64, plan checkpoint.ScanPlan, cps []checkpoint.ScanRange) int {
	var starts, ends, last []int64
	for i, r := range plan.Ranges {
		starts, ends, last = append(starts, r.Start), append(ends, r.End), append(last, cps[i].Last)
	}
	return casstest.Covered(tokens, starts, ends, last)
}
