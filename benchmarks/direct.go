package main

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keylist"
	"github.com/ferry-migrate/ferry/shared/keyrules"
)

// workerConfig are the flags the direct and seed-design workers share.
type workerConfig struct {
	Config      string // job file: read targets, bucket, key rules
	Keys        string // key list
	Concurrency int
	Head        bool // HEAD each object after its PUT and compare size and MD5
	Retries     int  // retries of a read and of a PUT, with 1s, 2s, 4s… between them
	Out         string
}

func (c *workerConfig) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Required: true, Destination: &c.Config, Usage: "job file"},
		&cli.StringFlag{Name: "keys", Required: true, Destination: &c.Keys, Usage: "key list, one a line"},
		&cli.IntFlag{Name: "concurrency", Value: 64, Destination: &c.Concurrency, Usage: "workers"},
		&cli.BoolFlag{Name: "head", Destination: &c.Head, Usage: "HEAD each object after its PUT (size and MD5)"},
		&cli.IntFlag{Name: "retries", Value: 3, Destination: &c.Retries, Usage: "retries of a failed read or PUT (1s, 2s, 4s backoff)"},
		&cli.StringFlag{Name: "out", Required: true, Destination: &c.Out, Usage: "write the result as JSON here"},
	}
}

// workerResult is what a worker process reports; times are Unix nanoseconds so the harness can
// measure them from the moment it started the process.
type workerResult struct {
	Files    int64  `json:"files"`  // keys migrated (PUT, and HEAD-checked with --head)
	Failed   int64  `json:"failed"` // keys given up on after the retries: lost, as in the old system
	Reads    int64  `json:"reads"`  // Cassandra reads, fallbacks and retries included
	Retries  int64  `json:"retries"`
	LastPut  int64  `json:"last_put_unix_nano"`
	LastHead int64  `json:"last_head_unix_nano"` // 0 without --head
	Error    string `json:"error,omitempty"`     // first failure, for the report
}

// migrator copies one key: read (first target, then the next), PUT with Content-MD5, HEAD.
type migrator struct {
	rules   *keyrules.Rules
	readers []*cass.Reader
	store   *blobstore.Client
	head    bool
	retries int

	files, failed, reads, retried atomic.Int64
	lastPut, lastHead             atomic.Int64
	firstErr                      sync.Once
	errText                       atomic.Value
}

// openMigrator connects to every read target and to the bucket of the job file, with the same
// client settings as ferry's fetcher and uploader.
func openMigrator(ctx context.Context, cfg workerConfig) (*migrator, error) {
	job, err := config.Load(cfg.Config)
	if err != nil {
		return nil, err
	}
	m := &migrator{head: cfg.Head, retries: cfg.Retries}
	if m.rules, err = keyrules.Compile(job.Keys); err != nil {
		return nil, err
	}
	for _, t := range job.Source.Targets {
		r, err := cass.NewReader(ctx, t, cfg.Concurrency)
		if err != nil {
			m.close()
			return nil, err
		}
		m.readers = append(m.readers, r)
	}
	if m.store, err = blobstore.New(ctx, job.Destination, cfg.Concurrency); err != nil {
		m.close()
		return nil, err
	}
	if err := m.store.Check(ctx); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

func (m *migrator) close() {
	for _, r := range m.readers {
		r.Close()
	}
}

// migrate copies key, counting it as migrated or failed.
func (m *migrator) migrate(ctx context.Context, key string) {
	if err := m.copy(ctx, key); err != nil {
		if ctx.Err() != nil {
			return // interrupted: neither migrated nor failed
		}
		m.failed.Add(1)
		m.firstErr.Do(func() { m.errText.Store(err.Error()) })
		return
	}
	m.files.Add(1)
}

func (m *migrator) copy(ctx context.Context, key string) error {
	s3Key, err := m.rules.Map(key)
	if err != nil {
		return err
	}
	var blob []byte
	if err := m.retry(ctx, func() error {
		blob, err = m.read(ctx, key)
		return err
	}); err != nil {
		return err
	}
	sum := md5.Sum(blob)
	if err := m.retry(ctx, func() error {
		_, err := m.store.Put(ctx, blobstore.PutInput{
			Key: s3Key, Body: blob, MD5: sum[:], ContentType: m.rules.ContentType(s3Key),
			Metadata: map[string]string{"ferry-source-key": key}, // as the uploader's owner record, for equal work
		})
		return err
	}); err != nil {
		return err
	}
	storeMax(&m.lastPut, time.Now().UnixNano())
	if !m.head {
		return nil
	}
	if err := m.retry(ctx, func() error {
		h, err := m.store.Head(ctx, s3Key)
		if err != nil {
			return err
		}
		return h.Matches(int64(len(blob)), sum[:])
	}); err != nil {
		return err
	}
	storeMax(&m.lastHead, time.Now().UnixNano())
	return nil
}

// read tries the targets in order, like ferry's fetcher: any failure moves on to the next.
func (m *migrator) read(ctx context.Context, key string) ([]byte, error) {
	var errs []error
	for _, r := range m.readers {
		m.reads.Add(1)
		b, err := r.Read(ctx, key)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// retry runs f, and again up to m.retries times after 1s, 2s, 4s… The seed system did this.
func (m *migrator) retry(ctx context.Context, f func() error) error {
	wait := time.Second
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || attempt >= m.retries || ctx.Err() != nil {
			return err
		}
		m.retried.Add(1)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (m *migrator) result() workerResult {
	r := workerResult{Files: m.files.Load(), Failed: m.failed.Load(), Reads: m.reads.Load(),
		Retries: m.retried.Load(), LastPut: m.lastPut.Load(), LastHead: m.lastHead.Load()}
	if s, ok := m.errText.Load().(string); ok {
		r.Error = s
	}
	return r
}

// progress prints a line on stderr every 5 seconds until ctx ends.
func (m *migrator) progress(ctx context.Context, name string, total int) {
	start := time.Now()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := m.files.Load()
			fmt.Fprintf(os.Stderr, "  %s: %d/%d files, %.0f files/s, %d failed\n", name, n, total,
				float64(n)/time.Since(start).Seconds(), m.failed.Load())
		}
	}
}

func storeMax(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

func writeResult(path string, r workerResult) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if k := keylist.Key(sc.Bytes(), first); len(k) > 0 { // trimmed as the producer trims
			keys = append(keys, string(k))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return keys, nil
}

// directCommand is the direct worker: the bound, with no queue at all.
func directCommand() *cli.Command {
	var cfg workerConfig
	return &cli.Command{
		Name:   "direct",
		Usage:  "worker: N goroutines each take a key, read it from Cassandra and PUT it to S3 (no broker)",
		Hidden: true,
		Flags:  cfg.flags(),
		Action: func(c *cli.Context) error { return runDirect(c.Context, cfg) },
	}
}

func runDirect(ctx context.Context, cfg workerConfig) error {
	keys, err := readKeys(cfg.Keys)
	if err != nil {
		return err
	}
	m, err := openMigrator(ctx, cfg)
	if err != nil {
		return fmt.Errorf("direct: %w", err)
	}
	defer m.close()
	pctx, stopProgress := context.WithCancel(ctx)
	go m.progress(pctx, "direct", len(keys))
	next := make(chan string)
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for k := range next {
				m.migrate(ctx, k)
			}
		})
	}
feed:
	for _, k := range keys {
		select {
		case next <- k:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	stopProgress()
	if err := writeResult(cfg.Out, m.result()); err != nil {
		return err
	}
	return ctx.Err()
}
