package seed

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/progress"
)

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
func writeAll(ctx context.Context, writes []write, concurrency int, out io.Writer) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done, bytes atomic.Int64
	next := make(chan write)
	var wg sync.WaitGroup
	for range min(concurrency, max(len(writes), 1)) {
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
		return progress.Status{Done: float64(n), Total: float64(len(writes)), Text: fmt.Sprintf(
			"%d/%d blobs, %.0f/s, %.1f MB written (%.1f MB/s)", n, len(writes), float64(n)/secs, float64(b)/1e6, float64(b)/1e6/secs)}
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
	for _, j := range writes {
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
