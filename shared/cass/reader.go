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
	if _, _, err := r.scan(ctx, probeKey); err != nil && !errors.Is(err, gocql.ErrNotFound) {
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

// Blob is one read: the blob's bytes and their writetime.
type Blob struct {
	// Data is the blob; a blob of 0 bytes is an empty, non-nil slice.
	Data []byte
	// WriteTime is the blob cell's Cassandra writetime, microseconds since the epoch: the second
	// column of the target's SELECT (writetime(blob) for a table target). 0 means unknown: a
	// custom query that selects the blob alone.
	WriteTime int64
}

// ReadBlob returns the blob stored under key and its writetime, in one query. A missing row and
// a row whose blob is NULL (never written, deleted, expired) are both ErrNotFound: the target
// does not have the blob, so the fetcher asks the next one (or dead-letters the key) instead of
// migrating an empty object in its place. Its errors carry their fault.Kind (Classify).
func (r *Reader) ReadBlob(ctx context.Context, key string) (Blob, error) {
	b, wt, err := r.scan(ctx, key)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		err = fmt.Errorf("cassandra target %s: key %q: %w", r.name, key, ErrNotFound)
	case err != nil:
		err = fmt.Errorf("cassandra target %s: read key %q: %w", r.name, key, err)
	case b == nil:
		err = fmt.Errorf("cassandra target %s: key %q: blob is null: %w", r.name, key, ErrNotFound)
	}
	if err != nil {
		return Blob{}, fault.Mark(err, Classify(err))
	}
	bytesRead.WithLabelValues(r.name).Add(float64(len(b)))
	return Blob{Data: b, WriteTime: max(wt, 0)}, nil
}

// Read is ReadBlob without the writetime, for the tools that only compare bytes.
func (r *Reader) Read(ctx context.Context, key string) ([]byte, error) {
	b, err := r.ReadBlob(ctx, key)
	return b.Data, err
}

// scan runs the SELECT for key; the blob is nil if and only if it is NULL. The driver prepares the
// statement on first use and caches it per node. Scanning costs one copy out of the response
// frame and nothing more: no reflection, no map, no second buffer. A second column is the
// blob's writetime (bigint); a query without one gives 0.
func (r *Reader) scan(ctx context.Context, key string) (blobCell, int64, error) {
	q := r.session.Query(r.cql, key).WithContext(ctx).Idempotent(true)
	defer q.Release()
	iter := q.Iter()
	var b blobCell
	var wt int64
	dest := []any{&b}
	cols := iter.Columns()
	if err := checkColumns(cols); err != nil {
		_ = iter.Close()
		return nil, 0, err
	}
	if len(cols) == 2 {
		dest = append(dest, &wt)
	}
	found := iter.Scan(dest...)
	if err := iter.Close(); err != nil {
		return nil, 0, err
	}
	if !found {
		return nil, 0, gocql.ErrNotFound
	}
	return b, wt, nil
}

// checkColumns says whether a result's columns are the blob, optionally followed by its writetime.
// The error is a gocql.UnmarshalError so that it counts as configuration, not as transient (a
// custom query that selects something else fails NewReader, not every key).
func checkColumns(cols []gocql.ColumnInfo) error {
	switch {
	case len(cols) > 2:
		return gocql.UnmarshalError(fmt.Sprintf("the query selects %d columns; want the blob, optionally followed by writetime(blob)", len(cols)))
	case len(cols) == 2 && cols[1].TypeInfo.Type() != gocql.TypeBigInt:
		return gocql.UnmarshalError(fmt.Sprintf("the query's second column %s is of type %s; it must be the blob's writetime (bigint, writetime(blob))", cols[1].Name, cols[1].TypeInfo.Type()))
	}
	return nil
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
