// Package seed is `ferry seed`: it fills the job's Cassandra tables with deterministic blobs and
// writes the matching key list, for the demo, the tests and the benchmarks. Every key, size and
// byte follows from the seed number, so a test can recompute what a blob must hold from its key.
package seed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/progress"
)

// Config is the seed's flags.
type Config struct {
	Count       int    // seeded keys with drawn sizes
	KeysOut     string // key list file
	Absent      int    // keys listed but written nowhere
	Fallback    int    // keys written only to the second target's table
	Sizes       string // comma-separated explicit sizes, one extra key each
	Concurrency int    // writes in flight
	Consistency string // write consistency
	Replication string // "dc:n,dc:n" for keyspaces the seed creates
	Seed        int    // same seed, same keys
}

// Flags are the seed's flags.
func (c *Config) Flags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "count", Value: 1000, EnvVars: []string{"FERRY_SEED_COUNT"}, Destination: &c.Count, Usage: "keys written with realistic sizes (median ~30 KiB, a few 1-2 MiB)"},
		&cli.StringFlag{Name: "keys-out", Value: "keys.txt", EnvVars: []string{"FERRY_SEED_KEYS_OUT"}, Destination: &c.KeysOut, Usage: "write every key, one per line, to this file"},
		&cli.IntFlag{Name: "absent", EnvVars: []string{"FERRY_SEED_ABSENT"}, Destination: &c.Absent, Usage: "keys listed but not written anywhere (they end in the DLQ as not_found)"},
		&cli.IntFlag{Name: "fallback", EnvVars: []string{"FERRY_SEED_FALLBACK"}, Destination: &c.Fallback, Usage: "keys written only to the second read target's table (served by fallback)"},
		&cli.StringFlag{Name: "sizes", EnvVars: []string{"FERRY_SEED_SIZES"}, Destination: &c.Sizes, Usage: "extra keys with these exact blob sizes in bytes, e.g. 0,3145728"},
		&cli.IntFlag{Name: "concurrency", Value: 32, EnvVars: []string{"FERRY_SEED_CONCURRENCY"}, Destination: &c.Concurrency, Usage: "writes in flight"},
		&cli.StringFlag{Name: "consistency", Value: "ALL", EnvVars: []string{"FERRY_SEED_CONSISTENCY"}, Destination: &c.Consistency, Usage: "write consistency; ALL: every DC holds every row when the seed returns"},
		&cli.StringFlag{Name: "replication", Value: "dc1:1,dc2:1", EnvVars: []string{"FERRY_SEED_REPLICATION"}, Destination: &c.Replication, Usage: "NetworkTopologyStrategy replicas per DC for keyspaces the seed creates"},
		&cli.IntFlag{Name: "seed", Value: 1, EnvVars: []string{"FERRY_SEED_SEED"}, Destination: &c.Seed, Usage: "the same seed gives the same keys and blobs, so seeding again is idempotent"},
	}
}

// Validate checks the flags on their own; Run checks them against the job.
func (c *Config) Validate() error {
	var errs []error
	if c.Count < 0 || c.Absent < 0 || c.Fallback < 0 {
		errs = append(errs, errors.New("--count, --absent and --fallback must not be negative"))
	}
	if c.KeysOut == "" {
		errs = append(errs, errors.New("--keys-out: a file name is required"))
	}
	if _, err := parseSizes(c.Sizes); err != nil {
		errs = append(errs, err)
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("--concurrency %d: must be 1..1024", c.Concurrency))
	}
	if _, err := gocql.ParseConsistencyWrapper(c.Consistency); err != nil {
		errs = append(errs, fmt.Errorf("--consistency %q: %w", c.Consistency, err))
	}
	if _, err := parseReplication(c.Replication); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// parseSizes reads "0,3145728,17825792".
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > maxExplicit {
			return nil, fmt.Errorf("--sizes: %q is not a size in bytes (0..%d)", f, maxExplicit)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

type replica struct {
	dc string
	n  int
}

var dcName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// parseReplication reads "dc1:1,dc2:1".
func parseReplication(s string) ([]replica, error) {
	var rs []replica
	for f := range strings.SplitSeq(s, ",") {
		dc, n, ok := strings.Cut(strings.TrimSpace(f), ":")
		count, err := strconv.Atoi(n)
		if !ok || !dcName.MatchString(dc) || err != nil || count < 1 {
			return nil, fmt.Errorf("--replication: %q is not dc:replicas (e.g. dc1:1,dc2:1)", f)
		}
		rs = append(rs, replica{dc, count})
	}
	return rs, nil
}

// Command is `ferry seed`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "seed",
		Usage: "write deterministic test blobs to the job's Cassandra tables and their key list to a file",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			job, err := config.Load(c.String("config"))
			if err != nil {
				return err
			}
			sum, err := Run(c.Context, job, cfg, c.App.ErrWriter)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, sum)
			return err
		},
	}
}

// Summary is what a seed run did.
type Summary struct {
	Main, Sized, Fallback, Absent int    // keys of each kind (Main includes Sized)
	MainTable, FallbackTable      string // where they went
	Bytes                         int64  // blob bytes written
	Elapsed                       time.Duration
	KeysFile                      string
	Lines                         int
}

func (s Summary) String() string {
	secs := max(s.Elapsed.Seconds(), 1e-3)
	var b strings.Builder
	fmt.Fprintf(&b, "seeded %d blobs to %s (%d with explicit sizes)", s.Main, s.MainTable, s.Sized)
	if s.Fallback > 0 {
		fmt.Fprintf(&b, ", %d only to %s", s.Fallback, s.FallbackTable)
	}
	fmt.Fprintf(&b, ", %d absent; %.1f MB in %s (%.0f blobs/s, %.1f MB/s); %d keys in %s",
		s.Absent, float64(s.Bytes)/1e6, s.Elapsed.Round(time.Millisecond),
		float64(s.Main+s.Fallback)/secs, float64(s.Bytes)/1e6/secs, s.Lines, s.KeysFile)
	return b.String()
}

// Run seeds the job's tables: the first target's table gets the seeded and sized keys, the second
// target's table (if any) the fallback keys. Progress goes to out: a bar on a terminal, else a
// line a second.
func Run(ctx context.Context, job *config.Job, cfg Config, out io.Writer) (Summary, error) {
	start := time.Now()
	if out == nil {
		out = io.Discard
	}
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	sizes, _ := parseSizes(cfg.Sizes)
	repl, _ := parseReplication(cfg.Replication)
	cl, _ := gocql.ParseConsistencyWrapper(cfg.Consistency)

	targets := job.Source.Targets
	if len(targets) == 0 || targets[0].Query != "" {
		return Summary{}, errors.New("seed: the first read target must name a table (not a query) to write to")
	}
	first := targets[0]
	var second *config.Target
	if len(targets) > 1 && targets[1].Query == "" {
		second = &targets[1]
	}
	if cfg.Fallback > 0 && second == nil {
		return Summary{}, errors.New("seed: --fallback needs a second read target that names a table")
	}

	keys := PlanKeys(cfg.Seed, cfg.Count, cfg.Fallback, cfg.Absent, sizes)
	sum := Summary{Main: len(keys.Main), Sized: len(sizes), Fallback: len(keys.Fallback), Absent: len(keys.Absent),
		MainTable: first.Table, KeysFile: cfg.KeysOut}

	w1, err := openWriter(ctx, first, cfg.Concurrency, cl)
	if err != nil {
		return sum, err
	}
	defer w1.close()
	if err := w1.ensureSchema(ctx, repl); err != nil {
		return sum, err
	}
	w2 := w1
	if second != nil {
		sum.FallbackTable = second.Table
		// Another cluster needs its own session; the same contact points do not. In one cluster
		// the DDL below is then a no-op for a keyspace that already exists.
		session := w1.session
		if !slices.Equal(second.Hosts, first.Hosts) {
			ws, err := openWriter(ctx, *second, cfg.Concurrency, cl)
			if err != nil {
				return sum, err
			}
			defer ws.close()
			session = ws.session
		}
		w2 = newWriter(*second, session)
		if err := w2.ensureSchema(ctx, repl); err != nil {
			return sum, err
		}
	}

	jobs := make([]write, 0, len(keys.Main)+len(keys.Fallback))
	for _, k := range keys.Main {
		jobs = append(jobs, write{w1, k})
	}
	for _, k := range keys.Fallback {
		jobs = append(jobs, write{w2, k})
	}
	if sum.Bytes, err = writeAll(ctx, jobs, cfg.Concurrency, out); err != nil {
		return sum, err
	}

	all := keys.All()
	if err := writeKeyFile(cfg.KeysOut, all); err != nil {
		return sum, err
	}
	sum.Lines = len(all)
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// writer writes blobs to one target's table.
type writer struct {
	target    config.Target
	session   *gocql.Session
	insertCQL string
}

func newWriter(t config.Target, s *gocql.Session) *writer {
	return &writer{target: t, session: s,
		insertCQL: fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, ?)", t.Table, t.KeyColumn, t.BlobColumn)}
}

// openWriter opens a session on t's hosts without t's DC filter: the seed writes through any node
// and, at consistency ALL, into every DC.
func openWriter(ctx context.Context, t config.Target, concurrency int, cl gocql.Consistency) (*writer, error) {
	c, err := cass.ClusterConfig(t, concurrency)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	c.HostFilter = nil
	c.Consistency = cl
	// Nothing redelivers a failed seed write, so the driver retries it (an INSERT of the same
	// bytes is idempotent); a write at ALL of a multi-MiB blob to two DCs on a small machine does
	// time out now and then.
	c.RetryPolicy = transientRetry{&gocql.ExponentialBackoffRetryPolicy{NumRetries: 5, Min: 200 * time.Millisecond, Max: 3 * time.Second}}
	s, err := cass.Open(ctx, t, c)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	return newWriter(t, s), nil
}

// transientRetry retries only what a retry can fix: a rejected mutation (a blob over the node's
// limit) or a bad statement is returned at once instead of being sent five more times.
type transientRetry struct {
	*gocql.ExponentialBackoffRetryPolicy
}

func (p transientRetry) GetRetryType(err error) gocql.RetryType {
	if cass.IsTransient(err) {
		return gocql.RetryNextHost
	}
	return gocql.Rethrow
}

func (w *writer) close() { w.session.Close() }

// ensureSchema creates the target's keyspace and table if they are missing. An existing keyspace
// keeps its replication: the seed never alters what it did not create.
func (w *writer) ensureSchema(ctx context.Context, repl []replica) error {
	ks, _, _ := strings.Cut(w.target.Table, ".")
	var r strings.Builder
	r.WriteString("{'class': 'NetworkTopologyStrategy'")
	for _, x := range repl {
		fmt.Fprintf(&r, ", '%s': %d", x.dc, x.n)
	}
	r.WriteString("}")
	// Identifiers are safe to splice in: config validated them as plain names.
	stmts := []string{
		fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s", ks, r.String()),
		// The blobs are random bytes, as incompressible as real JPEGs: compressing them would only
		// spend the CPU of a small machine.
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s text PRIMARY KEY, %s blob) WITH compression = {'enabled': 'false'}",
			w.target.Table, w.target.KeyColumn, w.target.BlobColumn),
	}
	for _, stmt := range stmts {
		// The driver waits for schema agreement after DDL, so the writes that follow find the table.
		if err := w.session.Query(stmt).WithContext(ctx).Exec(); err != nil {
			return fmt.Errorf("seed: target %s (%s): %s: %w", w.target.Name, strings.Join(w.target.Hosts, ","), stmt, err)
		}
	}
	return nil
}

func (w *writer) insert(ctx context.Context, key string, blob []byte) error {
	q := w.session.Query(w.insertCQL, key, blob).WithContext(ctx).Idempotent(true)
	defer q.Release()
	if err := q.Exec(); err != nil {
		return fmt.Errorf("seed: write key %q (%d bytes) to %s on target %s: %w", key, len(blob), w.target.Table, w.target.Name, err)
	}
	return nil
}

type write struct {
	w   *writer
	key string
}

// writeAll runs the writes with at most concurrency in flight; the first error stops the rest.
func writeAll(ctx context.Context, jobs []write, concurrency int, out io.Writer) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done, bytes atomic.Int64
	next := make(chan write)
	var wg sync.WaitGroup
	for range min(concurrency, max(len(jobs), 1)) {
		wg.Go(func() {
			for j := range next {
				blob := Content(j.key)
				if err := j.w.insert(ctx, j.key, blob); err != nil {
					cancel(err)
					return
				}
				done.Add(1)
				bytes.Add(int64(len(blob)))
			}
		})
	}

	// On a terminal a bar; otherwise (and in tests, which pass their own writer) a line a second.
	start := time.Now()
	status := func() progress.Status {
		secs := max(time.Since(start).Seconds(), 0.001)
		n, b := done.Load(), bytes.Load()
		return progress.Status{Done: float64(n), Total: float64(len(jobs)), Text: fmt.Sprintf(
			"%d/%d blobs, %.0f/s, %.1f MB written (%.1f MB/s)", n, len(jobs), float64(n)/secs, float64(b)/1e6, float64(b)/1e6/secs)}
	}
	opts := progress.Options{Out: out, Every: time.Second}
	if f, ok := out.(*os.File); !ok || !progress.IsTerminal(f) {
		tty := false
		opts.TTY = &tty
		opts.Log = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			}}))
	}
	rep := progress.Start("seed", status, opts)

feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	rep.Stop()
	if err := context.Cause(ctx); err != nil {
		return bytes.Load(), err
	}
	return bytes.Load(), nil
}

// writeKeyFile writes the keys, one per line, through a temporary file renamed into place, so a
// reader never sees half a list.
func writeKeyFile(path string, keys []string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("seed: key file %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // after the rename there is nothing left to remove
	bw := bufio.NewWriter(f)
	for _, k := range keys {
		bw.WriteString(k)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("seed: key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("seed: key file %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("seed: key file %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("seed: key file %s: %w", path, err)
	}
	return nil
}
