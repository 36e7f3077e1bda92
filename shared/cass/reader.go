package cass

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/config"
)

// ErrNotFound means the target has no row for the key. Read wraps it with the key and target.
var ErrNotFound = errors.New("not found")

// probeKey is read once at start; whether it exists does not matter.
const probeKey = "ferry:probe"

// Reader reads blobs by key from one read target. It is safe for concurrent use.
type Reader struct {
	name    string
	cql     string
	session *gocql.Session
}

// NewReader connects to target t, sized for concurrency reads in flight, and prepares its SELECT.
// A statement the cluster rejects (no such table or column, no permission) fails here, not on
// the first key; a target that is merely unreachable for the probe still gives a Reader, so a
// fetcher can start while a fallback DC is down.
func NewReader(ctx context.Context, t config.Target, concurrency int) (*Reader, error) {
	s, err := NewSession(ctx, t, concurrency)
	if err != nil {
		return nil, err
	}
	r := &Reader{name: t.Name, cql: t.CQL(), session: s}
	if _, err := r.scan(ctx, probeKey); err != nil && !errors.Is(err, gocql.ErrNotFound) {
		err = fmt.Errorf("cassandra target %s: prepare %q: %w", t.Name, r.cql, err)
		if !IsTransient(err) {
			s.Close()
			return nil, err
		}
		slog.Warn("cassandra target not answering at start", "target", t.Name, "err", err)
	}
	return r, nil
}

// Name is the target's name, for the BLOBS Source header and metrics.
func (r *Reader) Name() string { return r.name }

// Read returns the blob stored under key. A missing row is ErrNotFound; a row whose blob is null
// or empty gives an empty, non-nil slice, since a 0-byte object is a valid thing to migrate.
func (r *Reader) Read(ctx context.Context, key string) ([]byte, error) {
	b, err := r.scan(ctx, key)
	if err != nil {
		if errors.Is(err, gocql.ErrNotFound) {
			return nil, fmt.Errorf("cassandra target %s: key %q: %w", r.name, key, ErrNotFound)
		}
		return nil, fmt.Errorf("cassandra target %s: read key %q: %w", r.name, key, err)
	}
	if b == nil {
		b = []byte{}
	}
	bytesRead.WithLabelValues(r.name).Add(float64(len(b)))
	return b, nil
}

// scan runs the SELECT for key. The driver prepares the statement on first use and caches it per
// node. Scanning into a []byte costs one copy out of the response frame and nothing more: no
// reflection, no map, no second buffer.
func (r *Reader) scan(ctx context.Context, key string) ([]byte, error) {
	q := r.session.Query(r.cql, key).WithContext(ctx).Idempotent(true)
	defer q.Release()
	var b []byte
	err := q.Scan(&b)
	return b, err
}

// Close closes the session. Reads after Close fail.
func (r *Reader) Close() { r.session.Close() }
