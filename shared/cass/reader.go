package cass

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/fault"
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

// Read returns the blob stored under key. A missing row and a row whose blob is NULL are both
// ErrNotFound: the target does not have the blob, so the fetcher asks the next one (or
// dead-letters not_found) instead of migrating an empty object in its place. A blob of 0 bytes
// is a real, empty blob and gives an empty, non-nil slice.
// Its errors carry their fault.Kind (Classify).
func (r *Reader) Read(ctx context.Context, key string) ([]byte, error) {
	b, err := r.scan(ctx, key)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		err = fmt.Errorf("cassandra target %s: key %q: %w", r.name, key, ErrNotFound)
	case err != nil:
		err = fmt.Errorf("cassandra target %s: read key %q: %w", r.name, key, err)
	case b == nil:
		err = fmt.Errorf("cassandra target %s: key %q: blob is null: %w", r.name, key, ErrNotFound)
	}
	if err != nil {
		return nil, fault.Mark(err, Classify(err))
	}
	bytesRead.WithLabelValues(r.name).Add(float64(len(b)))
	return b, nil
}

// scan runs the SELECT for key; the blob is nil if and only if it is NULL. The driver prepares the
// statement on first use and caches it per node. Scanning costs one copy out of the response
// frame and nothing more: no reflection, no map, no second buffer.
func (r *Reader) scan(ctx context.Context, key string) ([]byte, error) {
	q := r.session.Query(r.cql, key).WithContext(ctx).Idempotent(true)
	defer q.Release()
	var b blobCell
	err := q.Scan(&b)
	return b, err
}

// blobCell keeps NULL and 0 bytes apart: the driver's own *[]byte scan turns both into nil. The
// driver hands UnmarshalCQL nil for NULL and an empty, non-nil slice for 0 bytes, and reuses the
// frame's buffer afterwards, hence the copy.
type blobCell []byte

func (c *blobCell) UnmarshalCQL(_ gocql.TypeInfo, data []byte) error {
	*c = bytes.Clone(data)
	return nil
}

// Close closes the session. Reads after Close fail.
func (r *Reader) Close() { r.session.Close() }
