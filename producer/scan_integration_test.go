//go:build integration

package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

// scanRows is the size of the scan test table: enough for several pages in every range.
const scanRows = 20_000

// scanTable creates and fills ferry_scan_test.keys on the local stack (once; later runs reuse it)
// and returns the job whose first target reads it, and every key's token.
func scanTable(t *testing.T) (*config.Job, map[string]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	path := os.Getenv("FERRY_CONFIG")
	if path == "" {
		path = "../deploy/local/ferry.yaml"
	}
	job, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tg := &job.Source.Targets[0]
	tg.Table, tg.KeyColumn, tg.BlobColumn = "ferry_scan_test.keys", "key", "data"
	c, err := cass.ClusterConfig(*tg, 32)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 30 * time.Second
	s, err := cass.Open(ctx, *tg, c)
	if err != nil {
		t.Fatalf("cassandra (make up first): %v", err)
	}
	defer s.Close()
	for _, q := range []string{
		`CREATE KEYSPACE IF NOT EXISTS ferry_scan_test WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1, 'dc2': 1}`,
		`CREATE TABLE IF NOT EXISTS ferry_scan_test.keys (key text PRIMARY KEY, data blob)`,
	} {
		if err := s.Query(q).WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	tokens := readTokens(t, ctx, s)
	if len(tokens) != scanRows {
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		sem := make(chan struct{}, 32)
		data := make([]byte, 100)
		for i := range scanRows {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				err := s.Query(`INSERT INTO ferry_scan_test.keys (key, data) VALUES (?, ?)`, scanKey(i), data).
					WithContext(ctx).Consistency(gocql.All).Exec()
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			})
		}
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatalf("fill the scan table: %v", err)
		default:
		}
		tokens = readTokens(t, ctx, s)
	}
	if len(tokens) != scanRows {
		t.Fatalf("scan table holds %d rows, want %d", len(tokens), scanRows)
	}
	return job, tokens
}

func scanKey(i int) string { return fmt.Sprintf("scan/%06d.jpg", i) }

func readTokens(t *testing.T, ctx context.Context, s *gocql.Session) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	iter := s.Query(`SELECT token(key), key FROM ferry_scan_test.keys`).WithContext(ctx).PageSize(5000).Iter()
	var tok int64
	var key string
	for iter.Scan(&tok, &key) {
		out[key] = tok
	}
	if err := iter.Close(); err != nil {
		t.Fatalf("read the scan table: %v", err)
	}
	return out
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
	covered := 0
	for _, tok := range tokens {
		for i, r := range plan.Ranges {
			if tok > r.Start && tok <= r.End && tok <= cps[i].Last {
				covered++
			}
		}
	}
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
	// Done: a third run reads nothing; --restart reads everything again (deduplicated).
	if st3, err := Run(context.Background(), env, cfg); err != nil || st3.Lines != 0 {
		t.Errorf("third run = %+v, %v; want nothing read", st3, err)
	}
	cfg.Restart = true
	cfg.Scan.Ranges = 7
	if st4, err := Run(context.Background(), env, cfg); err != nil || st4.Lines != scanRows || st4.Duplicates != scanRows {
		t.Errorf("--restart run = %+v, %v; want %d read, all duplicates", st4, err, scanRows)
	}
}

func readScanCheckpoints(t *testing.T, env *service.Env, job *config.Job) (scanPlan, []rangeCheckpoint) {
	t.Helper()
	ctx := context.Background()
	kv, err := env.JS.KeyValue(ctx, env.Names.KV)
	if err != nil {
		t.Fatal(err)
	}
	key := scanCheckpointKey(job.Source.Targets[0])
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("scan plan: %v", err)
	}
	var plan scanPlan
	if err := json.Unmarshal(e.Value(), &plan); err != nil {
		t.Fatal(err)
	}
	cps := make([]rangeCheckpoint, len(plan.Ranges))
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
