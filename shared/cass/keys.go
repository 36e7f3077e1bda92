package cass

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

// KeyScan reads every key of a table, with its blob's writetime, by token ranges: what `ferry
// prune` and its proof compare with the bucket. Unlike the producer's scan it keeps no
// checkpoint: its result is only worth anything when every range was read to its end, so a range
// that still fails after Retries makes the whole scan fail.
type KeyScan struct {
	Session     *gocql.Session
	Table       string // keyspace.table
	KeyColumn   string
	BlobColumn  string
	Ranges      []checkpoint.Range // together the whole ring, no gap and no overlap
	Concurrency int                // ranges read at once; default 4
	PageSize    int                // default 5000
	// Retries is how many times a failed page is read again (from the last whole token, in a new
	// query) before its range, and the scan, fail; default 10. Only transient errors are retried.
	Retries int
	// Backoff is the first wait before a retry, doubled each time up to 10 s; default 500 ms.
	Backoff time.Duration
}

// KeyRow is one row a KeyScan read. WriteTime is the blob's writetime in microseconds; a row
// whose blob is NULL has none (Null), and the fetcher treats it as missing.
type KeyRow struct {
	Token     int64
	Key       []byte // reused after the callback returns
	WriteTime int64
	Null      bool
}

// ScanStats are what a KeyScan read.
type ScanStats struct {
	Rows    int64 // rows read, re-reads after a retried page included
	Retries int64 // pages read again after an error
}

// CQL is the range query: the token, the key and the blob's writetime.
func (s *KeyScan) CQL() string {
	return fmt.Sprintf("SELECT token(%[1]s), %[1]s, writetime(%[2]s) FROM %[3]s WHERE token(%[1]s) > ? AND token(%[1]s) <= ?",
		s.KeyColumn, s.BlobColumn, s.Table)
}

// Run reads every range and calls fn for each row; fn is called from one goroutine at a time.
// Keys of a page read again after an error are given again (fn must tolerate repeats). It
// returns the first error: a range that failed after its retries, or fn's.
func (s *KeyScan) Run(ctx context.Context, fn func(KeyRow) error) (ScanStats, error) {
	conc, page, retries, backoff := s.Concurrency, s.PageSize, s.Retries, s.Backoff
	if conc < 1 {
		conc = 4
	}
	if page < 1 {
		page = 5000
	}
	if retries <= 0 {
		retries = 10
	}
	if backoff <= 0 {
		backoff = 500 * time.Millisecond
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex // serialises fn and the stats
	var st ScanStats
	work := make(chan checkpoint.Range)
	var wg sync.WaitGroup
	for range min(conc, len(s.Ranges)) {
		wg.Go(func() {
			for r := range work {
				if err := s.scanRange(ctx, r, page, retries, backoff, &mu, &st, fn); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, r := range s.Ranges {
		select {
		case work <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// scanRange reads range r page by page. A failed page is read again from the last token whose
// keys were all given (a paging state may not survive the node that made it).
func (s *KeyScan) scanRange(ctx context.Context, r checkpoint.Range, page, retries int, backoff time.Duration,
	mu *sync.Mutex, st *ScanStats, fn func(KeyRow) error) error {
	cql := s.CQL()
	safe, from := r.Start, r.Start
	var state []byte
	var row KeyRow
	var wt *int64
	var cur int64
	have := false
	for attempt := 0; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		q := s.Session.Query(cql, from, r.End).WithContext(ctx).Idempotent(true).PageSize(page).PageState(state)
		iter := q.Iter()
		next := iter.PageState()
		rows := iter.Scanner()
		for rows.Next() {
			if err := rows.Scan(&row.Token, &row.Key, &wt); err != nil {
				_ = rows.Err()
				q.Release()
				return fmt.Errorf("scan %s range %v: read a row: %w", s.Table, r, err)
			}
			if have && row.Token != cur {
				safe = cur
			}
			cur, have = row.Token, true
			row.Null = wt == nil
			row.WriteTime = 0
			if wt != nil {
				row.WriteTime = *wt
			}
			mu.Lock()
			st.Rows++
			err := fn(row)
			mu.Unlock()
			if err != nil {
				_ = rows.Err()
				q.Release()
				return err
			}
		}
		err := rows.Err()
		q.Release()
		switch {
		case err == nil && len(next) == 0:
			return nil
		case err == nil:
			state, attempt = next, 0
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !IsTransient(err): // a configuration error (no such table, a column of another type) only repeats
			return fmt.Errorf("scan %s range %v after token %d: %w", s.Table, r, safe, err)
		}
		attempt++
		if attempt > retries {
			return fmt.Errorf("scan %s range %v after token %d: failed %d times: %w", s.Table, r, safe, attempt, err)
		}
		mu.Lock()
		st.Retries++
		mu.Unlock()
		state, from, have = nil, safe, false
		wait := min(backoff<<min(attempt-1, 5), 10*time.Second)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// RingTokens are every node's tokens, in every DC: cutting the ring at them gives ranges with one
// replica set each (producer.Split).
func RingTokens(ctx context.Context, s *gocql.Session) ([]int64, error) {
	var all []int64
	for _, q := range []string{"SELECT tokens FROM system.local", "SELECT tokens FROM system.peers"} {
		iter := s.Query(q).WithContext(ctx).Iter()
		var tokens []string
		for iter.Scan(&tokens) {
			for _, t := range tokens {
				v, err := strconv.ParseInt(t, 10, 64)
				if err != nil {
					_ = iter.Close()
					return nil, fmt.Errorf("token %q: not a Murmur3 token (only Murmur3Partitioner is supported): %w", t, err)
				}
				all = append(all, v)
			}
		}
		if err := iter.Close(); err != nil {
			return nil, fmt.Errorf("read the token ring (%s): %w", q, err)
		}
	}
	if len(all) == 0 {
		return nil, errors.New("read the token ring: no tokens in system.local and system.peers")
	}
	return all, nil
}

// ClusterName is the cluster's name (system.local), which tells two read targets of one cluster
// (two DCs) from two clusters that hold a table of the same name.
func ClusterName(ctx context.Context, s *gocql.Session) (string, error) {
	var name string
	if err := s.Query("SELECT cluster_name FROM system.local").WithContext(ctx).Scan(&name); err != nil {
		return "", fmt.Errorf("read the cluster name: %w", err)
	}
	return name, nil
}

// consistencyRank orders the read levels by how many replicas answer, for "at least as strong
// as": ANY < ONE = LOCAL_ONE < TWO < THREE < LOCAL_QUORUM < QUORUM < EACH_QUORUM < ALL. It is a
// choice, not a law (TWO and LOCAL_QUORUM are not comparable in every topology); documented in
// docs/operations.md.
var consistencyRank = map[gocql.Consistency]int{
	gocql.Any: 0, gocql.One: 1, gocql.LocalOne: 1, gocql.Two: 2, gocql.Three: 3,
	gocql.LocalQuorum: 4, gocql.Quorum: 5, gocql.EachQuorum: 6, gocql.All: 7,
}

// AtLeast reports whether level got is at least as strong as want (consistencyRank). Unknown
// levels are an error.
func AtLeast(got, want string) (bool, error) {
	g, err := gocql.ParseConsistencyWrapper(got)
	if err != nil {
		return false, fmt.Errorf("consistency %q: unknown level", got)
	}
	w, err := gocql.ParseConsistencyWrapper(want)
	if err != nil {
		return false, fmt.Errorf("consistency %q: unknown level", want)
	}
	return consistencyRank[g] >= consistencyRank[w], nil
}
