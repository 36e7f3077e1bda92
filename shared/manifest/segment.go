// Package manifest keeps the DONE ledger bounded: a drain reads DONE in sequence order, writes
// its entries as compressed segments (CSV, gzip) to S3, records the running totals in the job's
// KV and only then purges what it wrote. `ferry status`, `ferry report` and `ferry run` read the
// totals and DONE's sequence, not every entry; a segment is also what S3 Batch Operations reads
// (after gunzip: bucket and URL-encoded key come first) and what `ferry producer --keys` can be
// fed (the source-key column).
package manifest

import (
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// Columns of a segment line, in order. Keys are URL-encoded (as S3 Batch Operations wants the
// object key), so a key with a comma, a quote or a line break stays one field on one line.
var Columns = []string{"bucket", "s3_key", "source_key", "size", "md5", "crc32c", "writetime_us", "verified", "superseded_us", "done_seq", "pass", "ferry_id", "read_target", "etag"}

// Entry is one DONE entry: a verified key (or a message superseded by newer bytes of its key).
type Entry struct {
	Seq    uint64    // DONE sequence
	Stored time.Time // when DONE stored it: the key's verified time
	Record bus.Record
}

// encode writes entries as one gzip'd CSV segment.
func encode(bucket string, entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w := csv.NewWriter(zw)
	for _, e := range entries {
		r := e.Record
		crc := ""
		if r.HasCRC32C {
			crc = strconv.FormatUint(uint64(r.CRC32C), 10)
		}
		if err := w.Write([]string{bucket, url.QueryEscape(r.S3Key), url.QueryEscape(r.Key), strconv.FormatInt(r.Size, 10),
			hex.EncodeToString(r.MD5), crc, strconv.FormatInt(r.WriteTime, 10), e.Stored.UTC().Format(time.RFC3339Nano),
			strconv.FormatInt(r.Superseded, 10), strconv.FormatUint(e.Seq, 10), strconv.Itoa(r.Pass), r.ID, r.Source, r.ETag}); err != nil {
			return nil, err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode reads a segment, calling fn for each entry in order.
func Decode(r io.Reader, fn func(Entry) error) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	cr := csv.NewReader(zr)
	cr.FieldsPerRecord = len(Columns)
	cr.ReuseRecord = true
	for line := 1; ; line++ {
		f, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("segment line %d: %w", line, err)
		}
		e, err := parse(f)
		if err != nil {
			return fmt.Errorf("segment line %d: %w", line, err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

func parse(f []string) (Entry, error) {
	var e Entry
	var err error
	var errs []error
	num := func(s string) int64 {
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil {
			errs = append(errs, perr)
		}
		return n
	}
	r := &e.Record
	if r.S3Key, err = url.QueryUnescape(f[1]); err != nil {
		errs = append(errs, err)
	}
	if r.Key, err = url.QueryUnescape(f[2]); err != nil {
		errs = append(errs, err)
	}
	r.Size = num(f[3])
	if r.MD5, err = hex.DecodeString(f[4]); err != nil {
		errs = append(errs, err)
	}
	if f[5] != "" {
		c, perr := strconv.ParseUint(f[5], 10, 32)
		if perr != nil {
			errs = append(errs, perr)
		}
		r.CRC32C, r.HasCRC32C = uint32(c), true
	}
	r.WriteTime = num(f[6])
	if e.Stored, err = time.Parse(time.RFC3339Nano, f[7]); err != nil {
		errs = append(errs, err)
	}
	r.Superseded = num(f[8])
	e.Seq = uint64(num(f[9]))
	r.Pass = int(num(f[10]))
	r.ID, r.Source, r.ETag = f[11], f[12], f[13]
	return e, errors.Join(errs...)
}
