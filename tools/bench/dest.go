package bench

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/config"
)

// cleanupTimeout bounds deleting what the benchmark wrote. Cleanup runs on a context of its own,
// so Ctrl-C during the measurement still removes every object.
const cleanupTimeout = 10 * time.Minute

// DestConfig is `ferry bench dest`'s flags.
type DestConfig struct {
	Sizes  string // comma-separated object sizes
	Prefix string // scratch prefix; each run writes under Prefix + a random run id + "/"
	Load   load   // per size
	JSON   bool
}

// DestReport is what `ferry bench dest` measured.
type DestReport struct {
	Bucket       string       `json:"bucket"`
	Prefix       string       `json:"prefix"` // where this run wrote: --prefix plus the run id
	Concurrency  int          `json:"concurrency"`
	Sizes        []SizeResult `json:"sizes"`
	Deleted      int64        `json:"deleted"`
	DeleteErrors int64        `json:"delete_errors"`
	Interrupted  bool         `json:"interrupted,omitempty"`
}

// SizeResult is the measurement of one object size.
type SizeResult struct {
	Size  int64     `json:"size"`
	Label string    `json:"label"`
	Put   OpResult  `json:"put"`
	Head  *OpResult `json:"head,omitempty"` // nil: not measured (no object written, or interrupted)
}

// OpResult is one kind of request. OK counts successful PUTs, or HEADs that found the object with
// the size and MD5 written; Errors the rest; Latency covers both.
type OpResult struct {
	OK          int64   `json:"ok"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	FilesPerSec float64 `json:"files_per_sec"`
	MBPerSec    float64 `json:"mb_per_sec"`
	Latency     Latency `json:"latency"`
	FirstError  string  `json:"first_error,omitempty"`
}

// written is what one size's PUT phase left in the bucket: objects 0..started-1, of which the
// failed ones may or may not exist.
type written struct {
	label   string
	started int64
	failed  map[int64]bool
}

// RunDest measures PUT and then HEAD for each size, and deletes every object it wrote before it
// returns, even when ctx ends early (the report is then marked Interrupted and the error is nil).
func RunDest(ctx context.Context, job *config.Job, cfg DestConfig, log *slog.Logger) (rep DestReport, err error) {
	sizes, err := parseSizes(cfg.Sizes)
	if err != nil {
		return rep, err
	}
	bs, err := blobstore.New(ctx, job.Destination, cfg.Load.Concurrency)
	if err != nil {
		return rep, err
	}
	if err := bs.Check(ctx); err != nil {
		return rep, err
	}
	rep = DestReport{Bucket: bs.Bucket(), Prefix: cfg.Prefix + runID() + "/", Concurrency: cfg.Load.Concurrency}

	var objects []*written
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		rep.Deleted, rep.DeleteErrors = cleanup(cctx, bs, rep.Prefix, objects, cfg.Load.Concurrency)
		log.Info("bench dest: scratch objects deleted", "prefix", "s3://"+rep.Bucket+"/"+rep.Prefix,
			"deleted", rep.Deleted, "errors", rep.DeleteErrors)
		if rep.DeleteErrors > 0 && err == nil {
			err = fmt.Errorf("bench dest: %d objects under s3://%s/%s could not be deleted; remove them by hand",
				rep.DeleteErrors, rep.Bucket, rep.Prefix)
		}
	}()

	for _, size := range sizes {
		if ctx.Err() != nil {
			break
		}
		w := &written{label: formatSize(size), failed: map[int64]bool{}}
		objects = append(objects, w)
		rep.Sizes = append(rep.Sizes, benchSize(ctx, bs, rep.Prefix, size, w, cfg.Load, log))
	}
	rep.Interrupted = ctx.Err() != nil
	return rep, nil
}

// runID names one run's scratch folder, so that two runs, or a run and real data under a
// user-chosen prefix, never share an object.
func runID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// objectKey is the seq-th object of a size. A hash prefix spreads the objects over S3 partitions
// as the job's {hash2} template does, so that the measurement is not capped by one hot prefix.
func objectKey(prefix, label string, seq int64) string {
	s := strconv.FormatInt(seq, 10)
	h := md5.Sum([]byte(label + "/" + s))
	return prefix + hex.EncodeToString(h[:1]) + "/" + label + "-" + s
}

func benchSize(ctx context.Context, bs *blobstore.Client, prefix string, size int64, w *written, l load, log *slog.Logger) SizeResult {
	res := SizeResult{Size: size, Label: w.label}
	// One random body per size: incompressible, and its MD5 is computed once, as the fetcher
	// computes it once before the uploader PUTs.
	body := make([]byte, size)
	_, _ = rand.Read(body)
	sum := md5.Sum(body)

	log.Info("bench dest: PUT", "size", w.label, "concurrency", l.Concurrency, "duration", l.Duration, "count", l.Count)
	var mu sync.Mutex
	started, elapsed, total := l.run(ctx, l.Count, func(t *tally, seq int64) {
		begin := time.Now()
		_, err := bs.Put(ctx, blobstore.PutInput{Key: objectKey(prefix, w.label, seq), Body: body, MD5: sum[:]})
		d := time.Since(begin)
		if err != nil {
			mu.Lock()
			w.failed[seq] = true
			mu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		t.hist.record(d)
		if err != nil {
			t.fail(err)
			return
		}
		t.ok++
		t.bytes += size
	})
	w.started = started
	res.Put = opResult(total, elapsed)
	if res.Put.FirstError != "" {
		log.Warn("bench dest: PUT errors", "size", w.label, "errors", res.Put.Errors, "first", res.Put.FirstError)
	}
	if ctx.Err() != nil {
		return res
	}

	if started == 0 {
		return res
	}
	// HEAD each object written, once, in the order written, within the same duration.
	log.Info("bench dest: HEAD", "size", w.label, "objects", started)
	_, elapsed, total = l.run(ctx, started, func(t *tally, seq int64) {
		if w.failed[seq] { // read-only now: the PUT phase is over
			return
		}
		begin := time.Now()
		h, err := bs.Head(ctx, objectKey(prefix, w.label, seq))
		d := time.Since(begin)
		if ctx.Err() != nil {
			return
		}
		t.hist.record(d)
		if err == nil {
			err = h.Matches(size, sum[:])
		}
		if err != nil {
			t.fail(err)
			return
		}
		t.ok++
	})
	head := opResult(total, elapsed)
	head.MBPerSec = 0 // a HEAD moves no body
	res.Head = &head
	if res.Head.FirstError != "" {
		log.Warn("bench dest: HEAD errors", "size", w.label, "errors", res.Head.Errors, "first", res.Head.FirstError)
	}
	return res
}

func opResult(t tally, elapsed time.Duration) OpResult {
	r := OpResult{OK: t.ok, Errors: t.errors, Seconds: elapsed.Seconds(), Latency: t.hist.summary(),
		FilesPerSec: perSec(t.ok, elapsed), MBPerSec: perSec(t.bytes, elapsed) / 1e6}
	if t.firstErr != nil {
		r.FirstError = t.firstErr.Error()
	}
	return r
}

// cleanup deletes every object a PUT was started for, the failed ones too (a PUT that timed out may
// still have landed; deleting a missing object is not an error). It returns how many of the
// objects known to exist were deleted, and how many deletes failed.
func cleanup(ctx context.Context, bs *blobstore.Client, prefix string, objects []*written, concurrency int) (deleted, failed int64) {
	type job struct {
		w   *written
		seq int64
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for j := range jobs {
				err := bs.Delete(ctx, objectKey(prefix, j.w.label, j.seq))
				mu.Lock()
				switch {
				case err != nil:
					failed++
				case !j.w.failed[j.seq]:
					deleted++
				}
				mu.Unlock()
			}
		})
	}
	for _, w := range objects {
		for seq := range w.started {
			jobs <- job{w, seq}
		}
	}
	close(jobs)
	wg.Wait()
	return deleted, failed
}
