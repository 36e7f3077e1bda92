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
	// Since is --since: a pass number, last, or an RFC 3339 time (a delta pass); empty: a full
	// pass. SinceMargin is taken off its point: writetime is the writing client's clock.
	Since       string
	SinceMargin time.Duration
	since       since // Since, parsed by validate
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
	var err error
	if c.since, err = parseSince(c.Since); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkMargin(c.SinceMargin))
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

// scanner reads one table by token ranges, in one pass.
type scanner struct {
	s       *sink
	cfg     ScanConfig
	session *gocql.Session
	cql     string
	origin  string
	cpKey   string // KV key of the plan; pass 1's ranges are <cpKey>.<i>
	// pass is this run's pass (its record as stored); rangeKey the prefix of its range
	// checkpoints, <rangeKey>.<i> (checkpoint.RangePrefix).
	pass     checkpoint.Pass
	passKey  string
	rangeKey string
	nothing  bool // the last pass is complete and no new one was asked for
	limit    *rate.Limiter
	plan     checkpoint.ScanPlan
	cps      []checkpoint.ScanRange // each range's checkpoint; written by its range's goroutine only
	covered  []atomic.Uint64        // tokens of each range known done, for the ETA
	done     atomic.Int64           // ranges finished
}

// runScan enumerates the keys of the source table and publishes them: all of them in a full
// pass, those whose blob was written at or after the floor in a delta pass.
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
		origin: "scan " + t.Table}
	if cfg.Rate > 0 {
		sc.limit = rate.NewLimiter(rate.Limit(cfg.Rate), max(cfg.PageSize, cfg.Rate))
	}
	if err := sc.load(ctx, t); err != nil {
		return err
	}
	if sc.nothing {
		s.env.Log.Info("table already scanned; --since to scan it for changes, --restart to scan it again", "table", t.Table, "pass", sc.pass.N)
		return nil
	}
	// Cassandra cannot filter on writetime: a delta pass reads every key with its blob's
	// writetime and publishes the new ones. A full pass does not ask for it (cheaper).
	sc.cql = fmt.Sprintf("SELECT token(%[1]s), %[1]s FROM %[2]s WHERE token(%[1]s) > ? AND token(%[1]s) <= ?", t.KeyColumn, t.Table)
	if sc.pass.Since > 0 {
		sc.cql = fmt.Sprintf("SELECT token(%[1]s), %[1]s, writetime(%[3]s) FROM %[2]s WHERE token(%[1]s) > ? AND token(%[1]s) <= ?", t.KeyColumn, t.Table, t.BlobColumn)
	}
	p.scan.Store(sc)
	return sc.run(ctx)
}

// load reads the table's pass records, chooses the pass to scan (choosePass), and reads its plan
// and range checkpoints, or splits the ring afresh for a first pass or --restart.
func (sc *scanner) load(ctx context.Context, t config.Target) error {
	kv := sc.s.kv
	passes, err := sc.readPasses(ctx, t)
	if err != nil {
		return err
	}
	var plan checkpoint.ScanPlan
	var planAt time.Time
	if e, err := kv.Get(ctx, sc.cpKey); err == nil {
		if err := json.Unmarshal(e.Value(), &plan); err != nil {
			return fmt.Errorf("producer: scan plan %s of %s: %w", sc.cpKey, t.Table, err)
		}
		planAt = e.Created()
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("producer: read the scan plan of %s: %w", t.Table, err)
	}
	if len(passes) == 0 && len(plan.Ranges) > 0 {
		// A scan from before passes: its plan and range checkpoints are pass 1's.
		p, err := sc.legacyPass(ctx, t, plan, planAt)
		if err != nil {
			return err
		}
		passes = append(passes, p)
	}
	choice, err := choosePass(passes, sc.cfg.since, sc.cfg.SinceMargin, sc.s.cfg.Restart, t.Table, t.Consistency, t.LocalDC, time.Now())
	if err != nil {
		return config.Invalid(fmt.Errorf("producer: %w", err))
	}
	sc.pass, sc.nothing = choice.Pass, choice.Nothing
	if sc.nothing {
		return nil
	}
	sc.passKey, sc.rangeKey = checkpoint.PassKey(t, sc.pass.N), checkpoint.RangePrefix(sc.cpKey, sc.pass.N)
	if choice.Resume {
		sc.s.env.Log.Info("resuming the scan pass from its checkpoints", "table", t.Table, "pass", sc.pass.N,
			"kind", sc.pass.Kind(), "ranges", len(plan.Ranges))
	} else {
		if sc.pass.N == 1 || sc.s.cfg.Restart || len(plan.Ranges) == 0 {
			// A new split: the first pass, or --restart (the ring or --scan-ranges may have
			// changed). The range checkpoints of earlier passes belong to the old split.
			if err := sc.forgetRanges(ctx); err != nil {
				return err
			}
			if plan, err = sc.split(ctx, t); err != nil {
				return err
			}
		}
		sc.s.env.Log.Info("starting a scan pass", "table", t.Table, "pass", sc.pass.N, "kind", sc.pass.Kind(),
			"since_us", sc.pass.Since, "ranges", len(plan.Ranges))
		// The record, with its start, is stored before any key is read: a later pass's floor is
		// this start, so every write before it must be in this pass's reads.
		if err := sc.savePass(ctx); err != nil {
			return err
		}
	}
	sc.plan = plan
	cps, _, err := sc.readRanges(ctx, plan, sc.rangeKey)
	if err != nil {
		return err
	}
	sc.cps = cps
	sc.covered = make([]atomic.Uint64, len(plan.Ranges))
	for i, cp := range sc.cps {
		sc.covered[i].Store(uint64(cp.Last) - uint64(plan.Ranges[i].Start))
		if cp.Done {
			sc.done.Add(1)
		}
	}
	return nil
}

// split cuts the ring into the plan's ranges and saves the plan.
func (sc *scanner) split(ctx context.Context, t config.Target) (checkpoint.ScanPlan, error) {
	tokens, err := ringTokens(ctx, sc.session)
	if err != nil {
		return checkpoint.ScanPlan{}, fmt.Errorf("producer: scan %s: %w", t.Table, err)
	}
	n := sc.cfg.Ranges
	if n == 0 {
		n = rangesPerNode * max(len(tokens), 1)
	}
	plan := checkpoint.ScanPlan{Table: t.Table, KeyColumn: t.KeyColumn, Ranges: Split(tokens, n)}
	b, _ := json.Marshal(plan)
	return plan, sc.s.putCheckpoint(ctx, sc.cpKey, b)
}

// readPasses reads the table's pass records.
func (sc *scanner) readPasses(ctx context.Context, t config.Target) ([]checkpoint.Pass, error) {
	var passes []checkpoint.Pass
	pattern := checkpoint.PassPrefix + strings.TrimPrefix(sc.cpKey, checkpoint.ScanPrefix) + ".*"
	err := watchAll(ctx, sc.s.kv, pattern, func(e jetstream.KeyValueEntry) error {
		var p checkpoint.Pass
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return fmt.Errorf("producer: scan pass record %s of %s: %w", e.Key(), t.Table, err)
		}
		if _, n, ok := checkpoint.ParsePassKey(e.Key()); ok && n == p.N {
			passes = append(passes, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("producer: read the scan passes of %s: %w", t.Table, err)
	}
	return passes, nil
}

// readRanges reads the range checkpoints under prefix of plan's ranges, and when the last was saved.
func (sc *scanner) readRanges(ctx context.Context, plan checkpoint.ScanPlan, prefix string) ([]checkpoint.ScanRange, time.Time, error) {
	cps := make([]checkpoint.ScanRange, len(plan.Ranges))
	for i, r := range plan.Ranges {
		cps[i].Last = r.Start
	}
	var latest time.Time
	err := watchAll(ctx, sc.s.kv, prefix+".*", func(e jetstream.KeyValueEntry) error {
		i, err := strconv.Atoi(strings.TrimPrefix(e.Key(), prefix+"."))
		if err != nil || i < 0 || i >= len(cps) {
			return nil // not a range of this plan
		}
		if err := json.Unmarshal(e.Value(), &cps[i]); err != nil {
			return fmt.Errorf("producer: scan checkpoint %s: %w", e.Key(), err)
		}
		if e.Created().After(latest) {
			latest = e.Created()
		}
		return nil
	})
	if err != nil {
		return nil, latest, fmt.Errorf("producer: read the scan checkpoints of %s: %w", plan.Table, err)
	}
	for i, cp := range cps {
		if r := plan.Ranges[i]; cp.Last < r.Start || cp.Last > r.End {
			return nil, latest, fmt.Errorf("producer: scan checkpoint %s.%d: token %d is outside its range %v", prefix, i, cp.Last, r)
		}
	}
	return cps, latest, nil
}

// legacyPass is the record of a scan started before passes, saved as pass 1: it started when
// its plan was saved, and ended when its last range checkpoint was, if every range is done.
func (sc *scanner) legacyPass(ctx context.Context, t config.Target, plan checkpoint.ScanPlan, planAt time.Time) (checkpoint.Pass, error) {
	cps, latest, err := sc.readRanges(ctx, plan, sc.cpKey)
	if err != nil {
		return checkpoint.Pass{}, err
	}
	p := checkpoint.Pass{N: 1, Table: t.Table, Consistency: t.Consistency, DC: t.LocalDC, Start: planAt.UTC(), Complete: true}
	for _, cp := range cps {
		p.Scanned += cp.Keys
		p.Complete = p.Complete && cp.Done
	}
	p.Published = p.Scanned // a full pass publishes what it reads
	if p.Complete {
		p.End = latest.UTC()
	}
	b, _ := json.Marshal(p)
	if err := sc.s.putCheckpoint(ctx, checkpoint.PassKey(t, 1), b); err != nil {
		return p, err
	}
	sc.s.env.Log.Info("recorded the scan from before passes as pass 1", "table", t.Table, "start", p.Start, "complete", p.Complete)
	return p, nil
}

// watchAll calls fn with every stored entry whose key matches pattern.
func watchAll(ctx context.Context, kv jetstream.KeyValue, pattern string, fn func(jetstream.KeyValueEntry) error) error {
	w, err := kv.Watch(ctx, pattern, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			return nil // every stored value has been delivered
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// savePass stores the pass record, bounded when ctx has ended (a stopping producer records its
// counts).
func (sc *scanner) savePass(ctx context.Context) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	b, _ := json.Marshal(sc.pass)
	return sc.s.putCheckpoint(ctx, sc.passKey, b)
}

// forgetRanges deletes the range checkpoints of every pass of the table (a new split).
func (sc *scanner) forgetRanges(ctx context.Context) error {
	kv := sc.s.kv
	keys, err := kv.ListKeysFiltered(ctx, sc.cpKey+".>")
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

// run scans the ranges of the pass not yet done, cfg.Concurrency at a time, and records the
// pass's counts: with its end when every range is read to its end.
func (sc *scanner) run(ctx context.Context) error {
	var todo []int
	for i, cp := range sc.cps {
		if !cp.Done {
			todo = append(todo, i)
		}
	}
	err := each(ctx, sc.cfg.Concurrency, todo, sc.scanRange)
	sc.pass.Scanned, sc.pass.Published, sc.pass.Complete = 0, 0, true
	for _, cp := range sc.cps {
		sc.pass.Scanned += cp.Keys
		sc.pass.Published += cp.Published
		sc.pass.Complete = sc.pass.Complete && cp.Done
	}
	if sc.pass.Complete {
		sc.pass.End = time.Now().UTC()
		sc.s.env.Log.Info("scan pass complete", "table", sc.plan.Table, "pass", sc.pass.N, "kind", sc.pass.Kind(),
			"scanned", sc.pass.Scanned, "published", sc.pass.Published, "took", sc.pass.End.Sub(sc.pass.Start).Round(time.Second))
	}
	if perr := sc.savePass(ctx); perr != nil {
		return errors.Join(err, perr)
	}
	return err
}

// scanRange reads range i page by page from its checkpoint and checkpoints it after every page
// whose keys are all stored, so a restart re-reads at most one page of it. Keys can share a token
// (the ring has 2^64 tokens, a migration billions of keys), so the checkpoint is the last token
// whose keys have all been read: a range query can only resume after a whole token.
func (sc *scanner) scanRange(ctx context.Context, i int) error {
	r, cp := sc.plan.Ranges[i], sc.cps[i]
	w := &window{s: sc.s, pass: sc.pass.N, done: position{at: cp.Last, n: cp.Keys}}
	floor := sc.pass.Since // 0: a full pass publishes every key
	var wt int64           // the blob's writetime, read in a delta pass; 0 when the blob is null
	safe := cp.Last        // every key with a token up to safe is published
	from := safe           // the query's lower bound; fixed while its pages are read
	var state []byte
	var tok, cur int64 // the token of the row read and of the one before
	var key []byte
	dest := []any{&tok, &key}
	if floor > 0 {
		dest = append(dest, &wt)
	}
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
			if err := rows.Scan(dest...); err != nil { // a key column ferry cannot read as text
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
			if floor > 0 && wt < floor {
				// Unchanged since the floor, or a row without a blob (null writetime): a delta
				// pass leaves it to the passes before.
				sc.s.unchanged.Add(1)
				continue
			}
			cp.Published++
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
		if err := sc.commit(ctx, w, i, &cp, safe, end); err != nil {
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
// to the end, else safe, the last token whose keys are all read. Once the window is drained
// every key read up to safe is stored or was skipped (a delta pass's unchanged keys, which never
// enter the window: its own position would lag behind them).
func (sc *scanner) commit(ctx context.Context, w *window, i int, cp *checkpoint.ScanRange, safe int64, end bool) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	if err := w.drain(ctx); err != nil {
		return err
	}
	cp.Last = safe
	if end {
		cp.Last, cp.Done = sc.plan.Ranges[i].End, true
	}
	sc.cps[i] = *cp
	sc.covered[i].Store(uint64(cp.Last) - uint64(sc.plan.Ranges[i].Start))
	b, _ := json.Marshal(cp)
	return sc.s.putCheckpoint(ctx, sc.rangeKey+"."+strconv.Itoa(i), b)
}

// fraction is the part of the ring whose keys are all published.
func (sc *scanner) fraction() float64 {
	var sum uint64
	for i := range sc.covered {
		sum += sc.covered[i].Load()
	}
	return covered(sum)
}
