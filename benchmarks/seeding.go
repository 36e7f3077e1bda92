package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gopkg.in/yaml.v3"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// seedMarker records what `ferry seed` wrote, so a later run skips seeding. Keys are a prefix of
// one sequence per seed (seed.Key(seed, i), or seed.SizedKey(seed, i, size) for one blob size), so
// a marker for 50,000 covers every smaller count.
type seedMarker struct {
	Seed  int    `json:"seed"`
	Count int    `json:"count"`
	Size  int    `json:"size,omitempty"` // every blob this size; 0: drawn sizes
	Table string `json:"table"`
	Hosts string `json:"hosts"`
}

// seedKey is the i-th seeded key: of b.blobSize bytes if set, else of a drawn size.
func (b *bench) seedKey(i int) string {
	if b.blobSize > 0 {
		return seed.SizedKey(b.o.Seed, i, b.blobSize)
	}
	return seed.Key(b.o.Seed, i)
}

// seedPlan is the first n seeded keys.
func (b *bench) seedPlan(n int) seed.Keys {
	if b.blobSize > 0 {
		return seed.PlanKeys(b.o.Seed, 0, 0, 0, slices.Repeat([]int{b.blobSize}, n))
	}
	return seed.PlanKeys(b.o.Seed, n, 0, 0, nil)
}

// seedName names the files of this seed (and blob size) in the work folder.
func (b *bench) seedName() string {
	if b.blobSize > 0 {
		return fmt.Sprintf("seed%d-s%d", b.o.Seed, b.blobSize)
	}
	return fmt.Sprintf("seed%d", b.o.Seed)
}

// ensureSeeded makes sure the first n keys of the seed are in Cassandra and returns the key list
// file for them (every key seeded, none absent, shuffled the way `ferry seed` shuffles).
func (b *bench) ensureSeeded(ctx context.Context, n int) (string, error) {
	if err := os.MkdirAll(b.o.Work, 0o755); err != nil {
		return "", err
	}
	first := b.job.Source.Targets[0]
	want := seedMarker{Seed: b.o.Seed, Size: b.blobSize, Table: first.Table, Hosts: fmt.Sprint(first.Hosts)}
	markerPath := filepath.Join(b.o.Work, "seeded-"+strings.TrimPrefix(b.seedName(), "seed")+".json")
	var have seedMarker
	if raw, err := os.ReadFile(markerPath); err == nil && json.Unmarshal(raw, &have) == nil &&
		have.Count >= n && have.Size == want.Size && have.Table == want.Table && have.Hosts == want.Hosts {
		// The marker may outlive the data (make clean-data): check a sample before trusting it.
		err := b.checkSample(ctx, n)
		if err == nil {
			logf("seed: %d blobs with seed %d already written (%s), skipping", have.Count, b.o.Seed, markerPath)
			return b.keyFile(n)
		}
		logf("seed: the marker says %d blobs, but %v; seeding again", have.Count, err)
	}
	logf("seed: writing %d blobs with seed %d (ferry seed)", n, b.o.Seed)
	tmp := filepath.Join(b.dir, "seed-keys.txt")
	if err := b.seed(ctx, n, tmp); err != nil {
		return "", err
	}
	os.Remove(tmp) // the harness writes its own list, for any count up to the marker's
	want.Count = n
	raw, _ := json.Marshal(want)
	if err := os.WriteFile(markerPath, raw, 0o644); err != nil {
		return "", err
	}
	return b.keyFile(n)
}

// seed writes the first n keys with `ferry seed`. Keys of one blob size are its --sizes, one
// number a key: too long for a command line at a million keys, so that seed runs in this process.
func (b *bench) seed(ctx context.Context, n int, keysOut string) error {
	if b.blobSize > 0 {
		cfg := seed.Config{KeysOut: keysOut, Seed: b.o.Seed, Sizes: strings.Repeat(strconv.Itoa(b.blobSize)+",", n),
			Concurrency: 32, Consistency: "ALL", Replication: "dc1:1,dc2:1"} // ferry seed's defaults
		sum, err := seed.Write(ctx, b.job, cfg, os.Stderr)
		if err != nil {
			return fmt.Errorf("seed %d blobs of %d bytes: %w", n, b.blobSize, err)
		}
		logf("%s", sum)
		return nil
	}
	cmd := exec.CommandContext(ctx, b.o.Ferry, "--config", b.o.Config, "seed",
		"--count", strconv.Itoa(n), "--seed", strconv.Itoa(b.o.Seed), "--keys-out", keysOut)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ferry seed: %w", err)
	}
	return nil
}

// keyFile writes the key list of the first n keys of the seed and returns its path.
func (b *bench) keyFile(n int) (string, error) {
	path := filepath.Join(b.o.Work, fmt.Sprintf("keys-%s-n%d.txt", b.seedName(), n))
	keys := b.seedPlan(n).All()
	return path, writeLines(path, func(emit func(string)) {
		for _, k := range keys {
			emit(k)
		}
	})
}

// checkSample reads a spread of the first n seeded keys (the first and last among them) and
// compares their bytes with what the seed writes.
func (b *bench) checkSample(ctx context.Context, n int) error {
	r, err := cass.NewReader(ctx, b.job.Source.Targets[0], 4)
	if err != nil {
		return err
	}
	defer r.Close()
	const samples = 16
	for i := range samples {
		idx := i * (n - 1) / (samples - 1)
		key := b.seedKey(idx)
		blob, err := r.Read(ctx, key)
		if err != nil {
			return fmt.Errorf("key %d: %w", idx, err)
		}
		if !seed.Matches(key, blob) {
			return fmt.Errorf("key %d (%s) holds other bytes than the seed writes", idx, key)
		}
	}
	return nil
}

// writeLines writes a file line by line through a temporary file renamed into place.
func writeLines(path string, lines func(emit func(string))) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	lines(func(s string) {
		w.WriteString(s)
		w.WriteByte('\n')
	})
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// writeJobFile writes j as YAML to path.
func writeJobFile(path string, j *config.Job) (string, error) {
	raw, err := yaml.Marshal(j)
	if err != nil {
		return "", err
	}
	if _, err := config.Parse(raw, path); err != nil {
		return "", fmt.Errorf("generated job file: %w", err)
	}
	return path, os.WriteFile(path, raw, 0o644)
}

// cleanObjects deletes every object under prefix in the job's bucket: each variant starts from an
// empty prefix and leaves no gigabytes behind (unless --keep-objects).
func (b *bench) cleanObjects(ctx context.Context, prefix string) error {
	if b.o.KeepObjects {
		return nil
	}
	d := b.job.Destination
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(d.Region))
	if err != nil {
		return fmt.Errorf("clean s3://%s/%s: %w", d.Bucket, prefix, err)
	}
	cl := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if d.Endpoint != "" {
			o.BaseEndpoint = aws.String(d.Endpoint)
		}
		o.UsePathStyle = d.PathStyle
	})
	var deleted atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	pages := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: aws.String(d.Bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("clean s3://%s/%s: list: %w", d.Bucket, prefix, err)
		}
		for _, obj := range page.Contents {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				_, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.Bucket), Key: obj.Key})
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				deleted.Add(1)
			})
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("clean s3://%s/%s: %d deletes failed, first: %w", d.Bucket, prefix, len(errs), errs[0])
	}
	if n := deleted.Load(); n > 0 {
		logf("deleted %d objects under s3://%s/%s", n, d.Bucket, prefix)
	}
	return nil
}
