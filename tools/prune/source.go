package prune

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/producer"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
)

// ScanConfig is how prune reads the source key set.
type ScanConfig struct {
	Targets     []string // read targets to scan; empty: every target
	Consistency string   // the level read at: at least the job's prune.consistency
	Ranges      int      // token ranges per table; 0: 4 per node token, at least 64
	Concurrency int      // ranges read at once
	PageSize    int
	Retries     int // re-reads of a failed page before the scan fails
	// Recheck opens a reader on every read target of the job (--target or not, custom queries
	// too) for Holds: --delete re-reads each candidate's key on all of them.
	Recheck bool
}

// table is one table to scan: the first read target (in fetch order) that names it.
type table struct {
	index   int // the target's place in the job's fetch order
	target  config.Target
	session *gocql.Session
}

// cassSource scans the tables of the job's read targets. Targets naming the same table of the
// same cluster (two DCs of one cluster) are scanned once; the fetcher falls back across targets,
// so a key in any of their tables is a source key.
type cassSource struct {
	cfg     ScanConfig
	tables  []table
	readers []*cass.Reader // every read target, for Holds
	all     int            // the job's read targets
	covered []int          // the targets whose table is scanned (under their own or another DC's target)
}

// openSource opens a session to each target to scan, at cfg.Consistency, and drops the targets
// that repeat a table of a cluster already taken.
func openSource(ctx context.Context, job *config.Job, cfg ScanConfig) (*cassSource, error) {
	s := &cassSource{cfg: cfg}
	seen := map[string]bool{}
	for i, t := range job.Source.Targets {
		if len(cfg.Targets) > 0 && !slices.Contains(cfg.Targets, t.Name) {
			continue
		}
		if t.Table == "" {
			s.Close()
			return nil, config.Invalid(fmt.Errorf("read target %s has a custom query: prune cannot enumerate its keys; name the targets to scan with --target (every target whose table may hold keys of its own)", t.Name))
		}
		t.Consistency = cfg.Consistency
		sess, err := cass.NewSession(ctx, t, cfg.Concurrency)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("prune: %w; nothing deleted", err)
		}
		cluster, err := cass.ClusterName(ctx, sess)
		if err != nil {
			sess.Close()
			s.Close()
			return nil, fmt.Errorf("prune: target %s: %w; nothing deleted", t.Name, err)
		}
		id := cluster + "\x00" + t.Table + "\x00" + t.KeyColumn
		s.covered = append(s.covered, i)
		if seen[id] {
			sess.Close()
			continue
		}
		seen[id] = true
		s.tables = append(s.tables, table{index: i, target: t, session: sess})
	}
	for _, name := range cfg.Targets {
		if !slices.ContainsFunc(job.Source.Targets, func(t config.Target) bool { return t.Name == name }) {
			s.Close()
			return nil, config.Invalid(fmt.Errorf("--target %q: no read target of that name in the job file", name))
		}
	}
	s.all = len(job.Source.Targets)
	if cfg.Recheck {
		for _, t := range job.Source.Targets {
			t.Consistency = cfg.Consistency
			r, err := cass.NewReader(ctx, t, cfg.Concurrency)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("prune: the re-check reads every read target: %w; nothing deleted", err)
			}
			s.readers = append(s.readers, r)
		}
	}
	return s, nil
}

// Unscanned names the job's read targets whose tables the scan does not read (left out by
// --target, or a custom query): a key only they hold is not in the scanned key set.
func (s *cassSource) Unscanned(job *config.Job) []string {
	var out []string
	for i, t := range job.Source.Targets {
		if !slices.Contains(s.covered, i) {
			out = append(out, t.Name)
		}
	}
	return out
}

// Holds reads key on every read target at the prune consistency: true when any holds a blob.
// A target that cannot answer is an error: the key may be there.
func (s *cassSource) Holds(ctx context.Context, key string) (bool, error) {
	if len(s.readers) == 0 || len(s.readers) < s.all {
		return false, fmt.Errorf("no reader on every read target (opened without Recheck)")
	}
	for _, r := range s.readers {
		_, err := r.ReadBlob(ctx, key)
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, cass.ErrNotFound):
			return false, err
		}
	}
	return false, nil
}

// Tables names what is scanned, for the proof.
func (s *cassSource) Tables() []string {
	var out []string
	for _, t := range s.tables {
		out = append(out, t.target.Name+":"+t.target.Table)
	}
	return out
}

// Scan reads every table whole; any range that fails after its retries fails the scan.
func (s *cassSource) Scan(ctx context.Context, fn func(Row) error) error {
	for _, t := range s.tables {
		tokens, err := cass.RingTokens(ctx, t.session)
		if err != nil {
			return fmt.Errorf("target %s: %w", t.target.Name, err)
		}
		n := s.cfg.Ranges
		if n == 0 {
			n = max(4*len(tokens), 64)
		}
		ks := cass.KeyScan{Session: t.session, Table: t.target.Table, KeyColumn: t.target.KeyColumn, BlobColumn: t.target.BlobColumn,
			Ranges: producer.Split(tokens, n), Concurrency: s.cfg.Concurrency, PageSize: s.cfg.PageSize, Retries: s.cfg.Retries,
			Backoff: 500 * time.Millisecond}
		if _, err := ks.Run(ctx, func(r cass.KeyRow) error {
			return fn(Row{Key: r.Key, WriteTime: r.WriteTime, Null: r.Null, Target: t.index})
		}); err != nil {
			return fmt.Errorf("target %s (%s): %w", t.target.Name, t.target.Table, err)
		}
	}
	return nil
}

// Close closes the sessions.
func (s *cassSource) Close() {
	for _, t := range s.tables {
		t.session.Close()
	}
	for _, r := range s.readers {
		r.Close()
	}
}
