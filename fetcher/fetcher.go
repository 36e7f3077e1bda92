// Package fetcher consumes KEYS, reads each blob and its writetime from the job's ordered
// Cassandra read targets (falling back on not-found, timeout and unavailable), and publishes it
// with its checksums and writetime to BLOBS; blobs above the inline limit travel through the
// job's object store. A key that no target holds is dead-lettered not_found, or deleted when a
// scan pass published it: the row was there when the scan read it, so it was deleted or expired
// (TTL) since, which is the source changing, not a failure.
package fetcher

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/fault"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// Reader reads one blob and its writetime from one read target; cass.Reader is the real one.
// A missing row and a NULL blob are both cass.ErrNotFound.
type Reader interface {
	Name() string
	ReadBlob(ctx context.Context, key string) (cass.Blob, error)
}

// Fetcher is the KEYS handler.
type Fetcher struct {
	Names       bus.Names
	JS          jetstream.JetStream
	Objects     jetstream.ObjectStore
	Readers     []Reader // in fallback order
	Rules       *keyrules.Rules
	InlineLimit int          // bytes; larger blobs go through the object store
	MaxSize     int64        // bytes; larger blobs are dead-lettered too_large
	Limits      *limit.Rates // reads/s and bytes/s against Cassandra; nil: none
	Gate        *Gate        // backpressure of BLOBS and the object store; nil: none
	metrics     *metrics
}

type metrics struct {
	reads  *prometheus.CounterVec
	bytes  prometheus.Counter
	served *prometheus.CounterVec
}

// Register registers the fetcher's metrics.
func (f *Fetcher) Register(reg prometheus.Registerer) {
	f.metrics = &metrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_fetcher_reads_total",
			Help: "Cassandra reads by target and result (found, not_found, error)."}, []string{"job", "target", "result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_fetcher_bytes_total",
			Help: "Blob bytes read from Cassandra.", ConstLabels: prometheus.Labels{"job": f.Names.Job}}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_fetcher_served_total",
			Help: "Blobs published, by the read target that served them."}, []string{"job", "target"}),
	}
	reg.MustRegister(f.metrics.reads, f.metrics.bytes, f.metrics.served)
}

// Handle is the stage.Handler: a KEYS message (the key is its body) in, its blob with its
// checksums out to BLOBS (inline, or through the object store above the inline limit).
func (f *Fetcher) Handle(ctx context.Context, in stage.Msg) (*stage.Output, error) {
	key := string(in.Body)
	s3Key, err := f.Rules.Map(key)
	if err != nil {
		return nil, stage.Permanent(bus.ReasonInvalidKey, err)
	}
	if err := f.Gate.Wait(ctx); err != nil {
		return nil, err
	}
	cell, source, err := f.read(ctx, key, in.Record.Pass)
	if err != nil {
		return nil, err
	}
	blob := cell.Data
	if int64(len(blob)) > f.MaxSize {
		return nil, stage.Permanent(bus.ReasonTooLarge, fmt.Errorf("key %q: blob of %d bytes is over the %d-byte limit", key, len(blob), f.MaxSize))
	}
	if err := f.Limits.WaitBytes(ctx, len(blob)); err != nil {
		return nil, err
	}
	sum := md5.Sum(blob)
	rec := bus.Record{ID: in.Record.ID, Key: key, Origin: in.Record.Origin, S3Key: s3Key, Size: int64(len(blob)),
		MD5: sum[:], CRC32C: crc32.Checksum(blob, castagnoli), HasCRC32C: true,
		ContentType: f.Rules.ContentType(s3Key), Source: source, Pass: in.Record.Pass, WriteTime: cell.WriteTime}
	if rec.ID == "" { // published by something other than ferry's producer
		rec.ID = bus.KeyID(f.Names.Job, key)
	}
	stream, subject := f.Names.Route(f.Names.Blobs, rec.ID)
	out := &stage.Output{Subject: subject, Stream: stream, ID: bus.MsgID("blobs", rec.ID), Record: rec,
		Stored: func(context.Context) {
			if f.metrics != nil {
				f.metrics.served.WithLabelValues(f.Names.Job, source).Inc()
				f.metrics.bytes.Add(float64(len(blob)))
			}
		}}
	if len(blob) > f.InlineLimit {
		if err := f.putObject(ctx, key, rec.ID, blob); err != nil {
			return nil, err
		}
		out.Record.Object = rec.ID
	} else {
		out.Body = blob
	}
	return out, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// read tries the targets in order. Not found everywhere is permanent: not_found, or deleted for
// a key of scan pass (> 0), which the scan saw. If any target failed with an error instead, the
// key may exist there, so it is retried.
func (f *Fetcher) read(ctx context.Context, key string, pass int) (cass.Blob, string, error) {
	var failures []string
	unreachable := 0
	for _, r := range f.Readers {
		if err := f.Limits.Wait(ctx); err != nil {
			return cass.Blob{}, "", err
		}
		blob, err := r.ReadBlob(ctx, key)
		result := "found"
		switch {
		case err == nil:
		case errors.Is(err, cass.ErrNotFound):
			result = "not_found"
		default:
			result = "error"
			failures = append(failures, r.Name()+": "+err.Error())
			if fault.KindOf(err) == fault.Outage {
				unreachable++
			}
		}
		if f.metrics != nil {
			f.metrics.reads.WithLabelValues(f.Names.Job, r.Name(), result).Inc()
		}
		if err == nil {
			return blob, r.Name(), nil
		}
		if ctx.Err() != nil {
			return cass.Blob{}, "", ctx.Err()
		}
	}
	if len(failures) > 0 {
		err := fmt.Errorf("key %q: not read from any target: %s", key, strings.Join(failures, "; "))
		if unreachable == len(f.Readers) {
			return cass.Blob{}, "", stage.Outage(err) // the whole source is down: wait, don't burn deliveries
		}
		return cass.Blob{}, "", stage.Transient(bus.ReasonSourceError, err)
	}
	if pass > 0 {
		// The scan read the row, so it existed: it was deleted or expired (TTL) since. A key of a
		// list has no such proof and stays not_found.
		return cass.Blob{}, "", stage.Permanent(bus.ReasonDeleted, fmt.Errorf("key %q: %w on every read target: deleted or expired at the source after scan pass %d read it", key, cass.ErrNotFound, pass))
	}
	return cass.Blob{}, "", stage.Permanent(bus.ReasonNotFound, fmt.Errorf("key %q: %w on every read target", key, cass.ErrNotFound))
}

// putObject stores a blob above the inline limit in the object store. The object name is the
// key's id: a redelivery overwrites the same object. When the store is full (its byte cap) it
// waits and tries again, as publish does for BLOBS: the blob is already read, and a retry by
// redelivery would read it from Cassandra again. Waiters retry with jitter, since a refused Put
// first stores some chunks (the client purges them), and waiters in step would keep refusing
// each other. A blob that would not fit even in an empty store is too_large: waiting cannot help.
func (f *Fetcher) putObject(ctx context.Context, key, id string, blob []byte) error {
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, 2*time.Second) {
		_, err := f.Objects.Put(ctx, jetstream.ObjectMeta{Name: id}, bytes.NewReader(blob))
		if err == nil {
			return nil
		}
		err = fmt.Errorf("key %q: store %d-byte blob in object store: %w", key, len(blob), err)
		if !stage.StreamFull(err) { // checked first: JetStream answers a full stream with a 503
			return bus.Mark(err)
		}
		if maxBytes := f.objectsCap(ctx); maxBytes > 0 && objectBytes(len(blob)) > maxBytes {
			return stage.Permanent(bus.ReasonTooLarge, fmt.Errorf("key %q: blob of %d bytes does not fit in the object store's %d-byte cap (ferry setup --objects-max-bytes)", key, len(blob), maxBytes))
		}
		d := wait/2 + rand.N(wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("key %q: store in object store (full): %w", key, ctx.Err())
		case <-time.After(d):
			limit.Waited(ctx, d) // backpressure, not Cassandra: keep it out of the adaptive limit
		}
	}
}

// objectBytes is what a blob of size bytes takes in the object store: its 128 KiB chunks each
// carry a subject and a record header (under 0.2%), and the object's metadata is one more message.
func objectBytes(size int) int64 { return int64(size) + int64(size)/512 + 16<<10 }

// objectsCap is the object store's byte cap; 0 when unknown or none.
func (f *Fetcher) objectsCap(ctx context.Context) int64 {
	st, err := f.Objects.Status(ctx)
	if err != nil {
		return 0
	}
	if b, ok := st.(*jetstream.ObjectBucketStatus); ok {
		return b.StreamInfo().Config.MaxBytes
	}
	return 0
}
