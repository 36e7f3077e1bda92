package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/producer"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// scanTable is the table of a row count: `keys` holds the default million, other counts get their
// own table so a smaller run never truncates the big one.
func scanTable(rows int) string {
	if rows == 1_000_000 {
		return "keys"
	}
	return fmt.Sprintf("keys_%d", rows)
}

// scanBlob is row key's 100 bytes.
func scanBlob(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return bytes.Repeat(sum[:], 4)[:scanBlobSize]
}

// ensureScanTable creates the benchmark table and fills it with rows keys, unless its row in the
// `filled` table (written after a complete fill, in the same keyspace so it goes with the data)
// says it holds them already. Inserts of the same rows are idempotent, so a fill cut short is
// simply run again.
func ensureScanTable(ctx context.Context, t config.Target, rows, concurrency int) error {
	c, err := cass.ClusterConfig(t, concurrency)
	if err != nil {
		return err
	}
	c.HostFilter = nil // writes go to both DCs through any node
	c.Consistency = gocql.LocalOne
	c.Timeout = 20 * time.Second // DDL and a busy 2-core machine
	s, err := cass.Open(ctx, t, c)
	if err != nil {
		return err
	}
	defer s.Close()
	_, table, _ := strings.Cut(t.Table, ".")
	for _, stmt := range []string{
		"CREATE KEYSPACE IF NOT EXISTS " + scanKeyspace + " WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1, 'dc2': 1}",
		"CREATE TABLE IF NOT EXISTS " + t.Table + " (key text PRIMARY KEY, data blob)",
		"CREATE TABLE IF NOT EXISTS " + scanKeyspace + ".filled (tbl text PRIMARY KEY, rows bigint)",
	} {
		if err := s.Query(stmt).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	var have int64
	err = s.Query("SELECT rows FROM "+scanKeyspace+".filled WHERE tbl = ?", table).WithContext(ctx).Scan(&have)
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return fmt.Errorf("read the fill marker: %w", err)
	}
	if have == int64(rows) {
		logf("fill: %s holds %d rows (its fill marker says so), skipping", t.Table, rows)
		return nil
	}
	logf("fill: writing %d rows of %d bytes into %s, %d in flight", rows, scanBlobSize, t.Table, concurrency)
	var done atomic.Int64
	start := time.Now()
	stop := make(chan struct{})
	var pw sync.WaitGroup
	pw.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				n := done.Load()
				logf("  fill: %d/%d rows, %.0f rows/s", n, rows, float64(n)/time.Since(start).Seconds())
			}
		}
	})
	fillErr := writeScanRows(ctx, s, t.Table, concurrency, rows, 0, 1, "insert", &done)
	close(stop)
	pw.Wait()
	if fillErr != nil {
		return fmt.Errorf("fill %s: %w", t.Table, fillErr)
	}
	logf("fill: %d rows in %.0fs", rows, time.Since(start).Seconds())
	return s.Query("INSERT INTO "+scanKeyspace+".filled (tbl, rows) VALUES (?, ?)", table, rows).WithContext(ctx).Exec()
}

// scanSelectCommand is the baseline: one SELECT of every key, paged by the driver.
func scanSelectCommand() *cli.Command {
	var cfgPath, out string
	var pageSize int
	return &cli.Command{
		Name:   "scan-select",
		Usage:  "worker: count the rows of one unsplit SELECT key FROM the first target's table",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Required: true, Destination: &cfgPath, Usage: "job file"},
			&cli.IntFlag{Name: "page-size", Value: 5000, Destination: &pageSize, Usage: "driver page size"},
			&cli.StringFlag{Name: "out", Required: true, Destination: &out, Usage: "write the result as JSON here"},
		},
		Action: func(c *cli.Context) error {
			job, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			t := job.Source.Targets[0]
			s, err := cass.NewSession(c.Context, t, 1)
			if err != nil {
				return err
			}
			defer s.Close()
			iter := s.Query(fmt.Sprintf("SELECT %s FROM %s", t.KeyColumn, t.Table)).WithContext(c.Context).PageSize(pageSize).Iter()
			var rows int64
			var key []byte
			for iter.Scan(&key) {
				rows++
			}
			if err := iter.Close(); err != nil {
				return fmt.Errorf("after %d rows: %w", rows, err)
			}
			raw, _ := json.Marshal(map[string]int64{"rows": rows})
			return os.WriteFile(out, raw, 0o644)
		},
	}
}

// scanRangesCommand reads the table the way `ferry producer --scan` does (its split of the ring,
// manual paging of each range) and only counts the rows: the Cassandra and driver side of a scan.
func scanRangesCommand() *cli.Command {
	var cfgPath, out string
	var pageSize, concurrency int
	var writetime bool
	return &cli.Command{
		Name:   "scan-ranges",
		Usage:  "worker: count the rows of the first target's table, read by token ranges in parallel",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Required: true, Destination: &cfgPath, Usage: "job file"},
			&cli.IntFlag{Name: "page-size", Value: ferryScanPageSize, Destination: &pageSize, Usage: "rows per page"},
			&cli.IntFlag{Name: "concurrency", Value: ferryScanConcurrency, Destination: &concurrency, Usage: "ranges read at once"},
			&cli.StringFlag{Name: "out", Required: true, Destination: &out, Usage: "write the result as JSON here"},
			&cli.BoolFlag{Name: "writetime", Destination: &writetime, Usage: "read writetime(<blob_column>) with each key, as a delta pass does"},
		},
		Action: func(c *cli.Context) error {
			ctx := c.Context
			job, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			t := job.Source.Targets[0]
			s, err := cass.NewSession(ctx, t, concurrency)
			if err != nil {
				return err
			}
			defer s.Close()
			var raw []string
			for _, q := range []string{"SELECT tokens FROM system.local", "SELECT tokens FROM system.peers"} {
				iter := s.Query(q).WithContext(ctx).Iter()
				var tokens []string
				for iter.Scan(&tokens) {
					raw = append(raw, tokens...)
				}
				if err := iter.Close(); err != nil {
					return err
				}
			}
			tokens, err := producer.ParseTokens(raw)
			if err != nil {
				return err
			}
			ranges := producer.Split(tokens, 32*len(tokens)) // ferry's default split
			cql := fmt.Sprintf("SELECT token(%[1]s), %[1]s FROM %[2]s WHERE token(%[1]s) > ? AND token(%[1]s) <= ?", t.KeyColumn, t.Table)
			if writetime {
				cql = fmt.Sprintf("SELECT token(%[1]s), %[1]s, writetime(%[3]s) FROM %[2]s WHERE token(%[1]s) > ? AND token(%[1]s) <= ?", t.KeyColumn, t.Table, t.BlobColumn)
			}
			var rows atomic.Int64
			todo := make(chan checkpoint.Range)
			gctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			var wg sync.WaitGroup
			for range concurrency {
				wg.Go(func() {
					var tok, wt int64
					var key []byte
					dest := []any{&tok, &key}
					if writetime {
						dest = append(dest, &wt)
					}
					for r := range todo {
						var state []byte
						for {
							iter := s.Query(cql, r.Start, r.End).WithContext(gctx).PageSize(pageSize).PageState(state).Iter()
							state = iter.PageState()
							for iter.Scan(dest...) {
								rows.Add(1)
							}
							if err := iter.Close(); err != nil {
								cancel(fmt.Errorf("range %v: %w", r, err))
								return
							}
							if len(state) == 0 {
								break
							}
						}
					}
				})
			}
		feed:
			for _, r := range ranges {
				select {
				case todo <- r:
				case <-gctx.Done():
					break feed
				}
			}
			close(todo)
			wg.Wait()
			if err := context.Cause(gctx); err != nil {
				return err
			}
			b, _ := json.Marshal(map[string]int64{"rows": rows.Load()})
			return os.WriteFile(out, b, 0o644)
		},
	}
}

// copyBinary copies the executable src to dst, streaming: a harness that read 50 MB into memory
// would lend that RSS to every child (see peakRSS).
func copyBinary(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(out, in)
	return dst, errors.Join(err, out.Close())
}

// writeScanRows writes rows first, first+step, ... below rows of the scan table (key and blob as
// the fill makes them: the same bytes again, a new writetime), concurrency at a time, counting
// them in done; the first failure stops the rest.
func writeScanRows(ctx context.Context, s *gocql.Session, table string, concurrency, rows, first, step int, what string, done *atomic.Int64) error {
	insert := "INSERT INTO " + table + " (key, data) VALUES (?, ?)"
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	next.Store(int64(first))
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(int64(step)) - int64(step)
				if i >= int64(rows) {
					return
				}
				key := seed.Key(scanSeed, int(i))
				q := s.Query(insert, key, scanBlob(key)).WithContext(ctx).Idempotent(true).
					RetryPolicy(&gocql.SimpleRetryPolicy{NumRetries: 5})
				err := q.Exec()
				q.Release()
				if err != nil {
					cancel(fmt.Errorf("%s row %d: %w", what, i, err))
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}
