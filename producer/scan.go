package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
)

// ScanConfig is how `ferry producer --scan` reads keys from the source table.
type ScanConfig struct {
	Enabled     bool
	Target      string // read target whose table is scanned; empty: the first
	DC          string // datacenter read from; empty: the target's local_dc
	Ranges      int    // token ranges; 0: rangesPerNode × nodes
	Concurrency int    // ranges scanned at once
	Rate        int    // keys read per second, all ranges together; 0: no cap
	PageSize    int
	Consistency string
}

// rangesPerNode is the default split: enough ranges that the concurrency stays busy to the end,
// few enough that the checkpoints (one KV entry per range) stay cheap.
const rangesPerNode = 32

func (c *ScanConfig) validate() error {
	var errs []error
	if c.Ranges < 0 {
		errs = append(errs, fmt.Errorf("--scan-ranges %d: must be 0 (automatic) or more", c.Ranges))
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		errs = append(errs, fmt.Errorf("--scan-concurrency %d: must be 1..256", c.Concurrency))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("--scan-rate %d: must be 0 (no cap) or more", c.Rate))
	}
	if c.PageSize < 1 || c.PageSize > 100_000 {
		errs = append(errs, fmt.Errorf("--scan-page-size %d: must be 1..100000", c.PageSize))
	}
	if _, err := gocql.ParseConsistencyWrapper(c.Consistency); err != nil {
		errs = append(errs, fmt.Errorf("--scan-consistency %q: unknown level", c.Consistency))
	}
	return errors.Join(errs...)
}

// scanTarget is the target to scan, with the DC and consistency of the scan.
func (c *ScanConfig) scanTarget(job *config.Job) (config.Target, error) {
	var t config.Target
	found := false
	for _, x := range job.Source.Targets {
		if c.Target == "" || x.Name == c.Target {
			t, found = x, true
			break
		}
	}
	if !found {
		return t, config.Invalid(fmt.Errorf("--scan-target %q: no read target of that name in the job file", c.Target))
	}
	if t.Table == "" {
		return t, config.Invalid(fmt.Errorf("--scan-target %s: the target has a custom query; scanning needs its table and key_column", t.Name))
	}
	if c.DC != "" {
		t.LocalDC = c.DC
	}
	t.Consistency = c.Consistency
	return t, nil
}

// scanner reads one table by token ranges.
type scanner struct {
	s       *sink
	cfg     ScanConfig
	session *gocql.Session
	cql     string
	origin  string
	cpKey   string // KV key prefix: <cpKey> holds the plan, <cpKey>.<i> range i's checkpoint
	limit   *rate.Limiter
	plan    checkpoint.ScanPlan
	cps     []checkpoint.ScanRange
	covered []atomic.Uint64 // tokens of each range known done, for the ETA
	done    atomic.Int64    // ranges finished
}

// runScan enumerates the keys of the source table and publishes them.
func (s *sink) runScan(ctx context.Context, job *config.Job, p *tracker) error {
	cfg := s.cfg.Scan
	t, err := cfg.scanTarget(job)
	if err != nil {
		return err
	}
	session, err := cass.NewSession(ctx, t, cfg.Concurrency)
	if err != nil {
		return fmt.Errorf("producer: scan: %w", err)
	}
	defer session.Close()
	sc := &scanner{s: s, cfg: cfg, session: session, cpKey: checkpoint.ScanKey(t),
		cql:    fmt.Sprintf("SELECT token(%[1]s), %[1]s FROM %[2]s WHERE token(%[1]s) > ? AND token(%[1]s) <= ?", t.KeyColumn, t.Table),
		origin: "scan " + t.Table}
	if cfg.Rate > 0 {
		sc.limit = rate.NewLimiter(rate.Limit(cfg.Rate), max(cfg.PageSize, cfg.Rate))
	}
	if err := sc.load(ctx, t); err != nil {
		return err
	}
	p.scan.Store(sc)
	return sc.run(ctx)
}

// load reads the saved plan and checkpoints, or splits the ring afresh.
func (sc *scanner) load(ctx context.Context, t config.Target) error {
	kv := sc.s.kv
	if sc.s.cfg.Restart {
		if err := sc.forget(ctx); err != nil {
			return err
		}
	} else if e, err := kv.Get(ctx, sc.cpKey); err == nil {
		if err := json.Unmarshal(e.Value(), &sc.plan); err != nil {
			return fmt.Errorf("producer: scan plan %s of %s: %w", sc.cpKey, t.Table, err)
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("producer: read the scan plan of %s: %w", t.Table, err)
	}
	if len(sc.plan.Ranges) == 0 {
		tokens, err := ringTokens(ctx, sc.session)
		if err != nil {
			return fmt.Errorf("producer: scan %s: %w", t.Table, err)
		}
		n := sc.cfg.Ranges
		if n == 0 {
			n = rangesPerNode * max(len(tokens), 1)
		}
		sc.plan = checkpoint.ScanPlan{Table: t.Table, KeyColumn: t.KeyColumn, Ranges: Split(tokens, n)}
		b, _ := json.Marshal(sc.plan)
		if err := sc.s.putCheckpoint(ctx, sc.cpKey, b); err != nil {
			return err
		}
	} else {
		sc.s.env.Log.Info("resuming the scan from its checkpoints", "table", t.Table, "ranges", len(sc.plan.Ranges))
	}
	sc.cps = make([]checkpoint.ScanRange, len(sc.plan.Ranges))
	sc.covered = make([]atomic.Uint64, len(sc.plan.Ranges))
	for i, r := range sc.plan.Ranges {
		sc.cps[i].Last = r.Start
	}
	w, err := kv.Watch(ctx, sc.cpKey+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("producer: read the scan checkpoints of %s: %w", t.Table, err)
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			break // every stored value has been delivered
		}
		i, err := strconv.Atoi(strings.TrimPrefix(e.Key(), sc.cpKey+"."))
		if err != nil || i < 0 || i >= len(sc.cps) {
			continue // not a range of this plan
		}
		if err := json.Unmarshal(e.Value(), &sc.cps[i]); err != nil {
			return fmt.Errorf("producer: scan checkpoint %s: %w", e.Key(), err)
		}
	}
	for i, cp := range sc.cps {
		r := sc.plan.Ranges[i]
		if cp.Last < r.Start || cp.Last > r.End {
			return fmt.Errorf("producer: scan checkpoint %s.%d: token %d is outside its range %v", sc.cpKey, i, cp.Last, r)
		}
		sc.covered[i].Store(uint64(cp.Last) - uint64(r.Start))
		if cp.Done {
			sc.done.Add(1)
		}
	}
	return nil
}

// forget deletes a table's scan plan and checkpoints (--restart).
func (sc *scanner) forget(ctx context.Context) error {
	kv := sc.s.kv
	keys, err := kv.ListKeysFiltered(ctx, sc.cpKey, sc.cpKey+".*")
	if err != nil {
		return fmt.Errorf("producer: list the scan checkpoints: %w", err)
	}
	for k := range keys.Keys() {
		if err := kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("producer: delete scan checkpoint %s: %w", k, err)
		}
	}
	return nil
}

// ringTokens are every node's tokens, in every DC: the ranges between them have one replica set.
func ringTokens(ctx context.Context, s *gocql.Session) ([]int64, error) {
	var all []string
	for _, q := range []string{"SELECT tokens FROM system.local", "SELECT tokens FROM system.peers"} {
		iter := s.Query(q).WithContext(ctx).Iter()
		var tokens []string
		for iter.Scan(&tokens) {
			all = append(all, tokens...)
		}
		if err := iter.Close(); err != nil {
			return nil, fmt.Errorf("read the token ring (%s): %w", q, err)
		}
	}
	return ParseTokens(all)
}

// run scans the ranges not yet done, cfg.Concurrency at a time.
func (sc *scanner) run(ctx context.Context) error {
	if int(sc.done.Load()) == len(sc.cps) {
		sc.s.env.Log.Info("table already scanned; --restart to scan it again", "table", sc.plan.Table)
		return nil
	}
	var todo []int
	for i, cp := range sc.cps {
		if !cp.Done {
			todo = append(todo, i)
		}
	}
	return each(ctx, sc.cfg.Concurrency, todo, sc.scanRange)
}

// scanRange reads range i page by page from its checkpoint and checkpoints it after every page
// whose keys are all stored, so a restart re-reads at most one page of it. Keys can share a token
// (the ring has 2^64 tokens, a migration billions of keys), so the checkpoint is the last token
// whose keys have all been read: a range query can only resume after a whole token.
func (sc *scanner) scanRange(ctx context.Context, i int) error {
	r, cp := sc.plan.Ranges[i], sc.cps[i]
	w := &window{s: sc.s, done: position{at: cp.Last, n: cp.Keys}}
	safe := cp.Last // every key with a token up to safe is published
	from := safe    // the query's lower bound; fixed while its pages are read
	var state []byte
	var tok, cur int64 // the token of the row read and of the one before
	var key []byte
	have := false // cur is set: a row of this query has been read
	for attempt := 0; ctx.Err() == nil; {
		sc.s.gate.wait(ctx)
		if sc.limit != nil {
			if err := sc.limit.WaitN(ctx, sc.cfg.PageSize); err != nil {
				return nil // ctx ended
			}
		}
		q := sc.session.Query(sc.cql, from, r.End).WithContext(ctx).Idempotent(true).
			PageSize(sc.cfg.PageSize).PageState(state)
		iter := q.Iter()
		next := iter.PageState()
		rows := iter.Scanner()
		for ctx.Err() == nil && rows.Next() {
			if err := rows.Scan(&tok, &key); err != nil { // a key column ferry cannot read as text
				_ = rows.Err() // closes the iterator
				q.Release()
				return fmt.Errorf("producer: scan %s %v: read a row: %w", sc.plan.Table, r, err)
			}
			if have && tok != cur {
				safe = cur
			}
			cur, have = tok, true
			cp.Keys++
			sc.s.lines.Add(1)
			if err := sc.s.key(ctx, w, key, sc.origin, position{at: safe, n: cp.Keys}); err != nil {
				return err
			}
		}
		err := rows.Err()
		stopped := ctx.Err() != nil // mid-page: the checkpoint is the last whole token published
		q.Release()
		end := err == nil && !stopped && len(next) == 0
		if end {
			safe = r.End // the range is read to its end, whatever its last token
		}
		// A page's keys are stored before its checkpoint moves: drain, then save, even when
		// stopping (bounded, so a producer stopped while NATS is down still exits).
		if err := sc.commit(ctx, w, i, &cp, end); err != nil {
			return err
		}
		switch {
		case stopped:
			return nil
		case end:
			sc.done.Add(1)
			return nil
		case err == nil:
			state, attempt = next, 0
			continue
		case ctx.Err() != nil:
			return nil
		case !cass.IsTransient(err):
			return fmt.Errorf("producer: scan %s range %v after token %d: %w", sc.plan.Table, r, safe, err)
		}
		// A failed page is read again from the last whole token, in a new query (a paging state
		// may not survive the node that made it).
		attempt++
		if attempt == 1 || attempt%10 == 0 {
			sc.s.env.Log.Warn("producer: scan page failed, retrying", "table", sc.plan.Table, "range", r.String(),
				"after_token", safe, "attempt", attempt, "err", err)
		}
		state, from, have = nil, safe, false
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt)*500*time.Millisecond, 10*time.Second)):
		}
	}
	return nil
}

// commit waits for range i's publishes and saves its checkpoint: its end when the range is read
// to the end, else the last token whose keys are all stored.
func (sc *scanner) commit(ctx context.Context, w *window, i int, cp *checkpoint.ScanRange, end bool) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	if err := w.drain(ctx); err != nil {
		return err
	}
	cp.Last = w.done.at
	if end {
		cp.Last, cp.Done = sc.plan.Ranges[i].End, true
	}
	sc.covered[i].Store(uint64(cp.Last) - uint64(sc.plan.Ranges[i].Start))
	b, _ := json.Marshal(cp)
	return sc.s.putCheckpoint(ctx, sc.cpKey+"."+strconv.Itoa(i), b)
}

// fraction is the part of the ring whose keys are all published.
func (sc *scanner) fraction() float64 {
	var sum uint64
	for i := range sc.covered {
		sum += sc.covered[i].Load()
	}
	return covered(sum)
}
