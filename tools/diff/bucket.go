package diff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/ferry-migrate/ferry/shared/keylist"
	"github.com/ferry-migrate/ferry/shared/keyrules"
)

// Output file names of `ferry diff --source LIST --bucket s3://bucket/prefix`.
const (
	MissingInS3 = "missing-in-s3"
	InvalidKeys = "invalid-keys"
)

// Lister lists a bucket (*blobstore.Client).
type Lister interface {
	// ListRange calls fn for each key k under prefix with after < k <= upTo (empty: unbounded), in
	// key order.
	ListRange(ctx context.Context, bucket, prefix, after, upTo string, fn func(key string, size int64) error) error
	// CommonPrefixes is the first page of the "folders" under prefix split at delimiter.
	CommonPrefixes(ctx context.Context, bucket, prefix, delimiter string) ([]string, error)
}

// BucketResult is what `ferry diff --source --bucket` found.
type BucketResult struct {
	Source  Counts `json:"source"`
	Invalid int64  `json:"invalid"` // keys the rules refuse, or whose S3 key is outside the listed prefix
	Listed  int64  `json:"listed"`  // objects under the prefix
	Missing int64  `json:"missing"` // distinct source keys whose S3 key is not listed
	Present int64  `json:"present"` // distinct source keys whose S3 key is listed
	// Files are the result files written, by name: their paths, "-" for stdout.
	Files map[string]string `json:"files"`
}

// Differ reports whether source keys are missing in S3 or refused by the key rules.
func (r BucketResult) Differ() bool { return r.Missing > 0 || r.Invalid > 0 }

func (r BucketResult) String() string {
	return fmt.Sprintf("source: %s lines; invalid: %s; listed: %s objects; present: %s keys; missing in S3: %s keys",
		thousands(r.Source.Lines), thousands(r.Invalid), thousands(r.Listed), thousands(r.Present), thousands(r.Missing))
}

// bucketDiff lists s3://bucket/prefix and writes the source keys whose S3 key (by rules) is not
// there to missing, and those the rules refuse to invalid-keys. Source records "s3key\tsourcekey"
// and the listing are external-sorted, then merged by S3 key.
func (d *differ) bucketDiff(ctx context.Context, source string, rules *keyrules.Rules, ls Lister, bucket, prefix string, listers int, missing string) (BucketResult, error) {
	var res BucketResult
	err := d.withSorter(func(s *sorter) error {
		bad, err := createOutput(d.out, InvalidKeys)
		if err != nil {
			return err
		}
		defer bad.abort()
		src, err := d.sortSource(ctx, s, source, rules, bucket, prefix, bad, &res)
		if err != nil {
			return err
		}
		defer s.removeRuns(src)
		d.progress.phase("listing s3://" + bucket + "/" + prefix)
		listed, err := s.sortInput(ctx, func(add func([]byte) error) error {
			n, err := listBucket(ctx, ls, bucket, prefix, listers, add)
			res.Listed = n
			return err
		}, true)
		if err != nil {
			return err
		}
		defer s.removeRuns(listed)
		ms, ml, err := d.mergers(s, src, listed)
		if err != nil {
			return err
		}
		defer ms.close()
		defer ml.close()
		d.progress.phase("comparing")
		out, err := d.createOutput(missing)
		if err != nil {
			return err
		}
		defer out.abort()
		okL := ml.next()
		for n := 0; ms.next(); n++ {
			if n&0xffff == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				d.progress.merged(ms.n)
			}
			s3key, key, _ := bytes.Cut(ms.cur, []byte{'\t'})
			for okL && bytes.Compare(ml.cur, s3key) < 0 {
				okL = ml.next()
			}
			if okL && bytes.Equal(ml.cur, s3key) {
				res.Present++
				continue
			}
			out.line(key)
			res.Missing++
		}
		if err := errors.Join(ms.err, ml.err); err != nil {
			return err
		}
		res.Source.Unique = ms.n
		res.Files = map[string]string{MissingInS3: out.path, InvalidKeys: bad.path}
		return errors.Join(out.commit(), bad.commit())
	})
	d.progress.done()
	return res, err
}

// sortSource maps each key of the source list and sorts the records "s3key\tsourcekey".
func (d *differ) sortSource(ctx context.Context, s *sorter, name string, rules *keyrules.Rules, bucket, prefix string, bad *output, res *BucketResult) (*runs, error) {
	l, err := keylist.Open(ctx, name, 0, d.s3)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	d.progress.list("source", l)
	s.avgLine = 2*s.avgLine + 8 // records hold the key twice, plus the template's prefix
	var rec []byte
	rs, err := s.sortInput(ctx, func(add func([]byte) error) error {
		return readLines(ctx, l, func(key []byte) error {
			s3key, err := rules.Map(string(key))
			switch {
			case err != nil:
				bad.write(fmt.Sprintf("%s\t%s\n", key, oneLine(err.Error())))
				res.Invalid++
				return nil
			case !strings.HasPrefix(s3key, prefix):
				bad.write(fmt.Sprintf("%s\tS3 key %q is outside the listed s3://%s/%s\n", key, s3key, bucket, prefix))
				res.Invalid++
				return nil
			}
			rec = append(append(append(rec[:0], s3key...), '\t'), key...)
			return add(rec)
		})
	}, false)
	if rs != nil {
		res.Source.Lines = rs.lines + res.Invalid
	}
	return rs, err
}

// oneLine keeps a reason on one line of the tab-separated file.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

// splitAlphabet splits a listing when the prefix has no "folders": keys starting with these
// characters (after the prefix) are the usual case; a key starting with any other byte still falls
// in one of the ranges, since they cover the whole key space.
const splitAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// listRanges are key ranges (after, upTo] that together cover every key under prefix exactly once.
func listRanges(ctx context.Context, ls Lister, bucket, prefix string) ([][2]string, error) {
	bounds, err := ls.CommonPrefixes(ctx, bucket, prefix, "/")
	if err != nil {
		return nil, err
	}
	if len(bounds) < 2 {
		bounds = bounds[:0]
		for _, c := range splitAlphabet {
			bounds = append(bounds, prefix+string(c))
		}
	}
	ranges := [][2]string{{"", bounds[0]}}
	for i := 1; i < len(bounds); i++ {
		ranges = append(ranges, [2]string{bounds[i-1], bounds[i]})
	}
	return append(ranges, [2]string{bounds[len(bounds)-1], ""}), nil
}

// listBucket lists prefix with n listers over disjoint key ranges and adds each key; it returns
// how many keys were listed. Keys holding a newline are skipped: no rule maps a key to one.
func listBucket(ctx context.Context, ls Lister, bucket, prefix string, n int, add func([]byte) error) (int64, error) {
	ranges, err := listRanges(ctx, ls, bucket, prefix)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	var listed int64
	var buf []byte
	work := make(chan [2]string)
	var wg sync.WaitGroup
	for range min(n, len(ranges)) {
		wg.Go(func() {
			for r := range work {
				err := ls.ListRange(ctx, bucket, prefix, r[0], r[1], func(key string, _ int64) error {
					if strings.ContainsAny(key, "\n") {
						return nil
					}
					mu.Lock()
					defer mu.Unlock()
					listed++
					buf = append(buf[:0], key...)
					return add(buf)
				})
				if err != nil {
					cancel(err)
				}
			}
		})
	}
	for _, r := range ranges {
		select {
		case work <- r:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return listed, err
	}
	return listed, nil
}
