//go:build integration

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// These tests run against the local stack (make up): its job file, Cassandra and versitygw.

func jobFile(t *testing.T) (string, *config.Job) {
	t.Helper()
	job, path := casstest.LocalJob(t)
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
	}
	if os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return path, job
}

// run runs `ferry --config path bench args… --json` as main does and decodes the report.
func run(t *testing.T, ctx context.Context, path string, report any, args ...string) {
	t.Helper()
	app := &cli.App{Name: "ferry", Flags: service.GlobalFlags(), Commands: []*cli.Command{Command()}}
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(ctx, append([]string{"ferry", "--config", path, "--log-level", "warn", "bench"}, append(args, "--json")...))
	t.Logf("ferry bench %v:\n%s%s", args, errOut.String(), out.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), report); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
}

func TestBenchSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	path, job := jobFile(t)
	keys := filepath.Join(t.TempDir(), "keys.txt")
	if _, err := seed.Write(ctx, job, seed.Config{Count: 60, Absent: 10, KeysOut: keys, Concurrency: 8,
		Consistency: "ALL", Replication: "dc1:1,dc2:1", Seed: 92001}, io.Discard); err != nil {
		t.Fatal(err)
	}

	var rep SourceReport
	run(t, ctx, path, &rep, "source", "--keys", keys, "--sample", "50", "--duration", "2s", "--count", "400", "--concurrency", "8")
	if rep.KeyLines != 70 || rep.Sampled != 50 || rep.Interrupted {
		t.Errorf("key lines %d, sampled %d, interrupted %v; want 70, 50, false", rep.KeyLines, rep.Sampled, rep.Interrupted)
	}
	if len(rep.Targets) != len(job.Source.Targets) {
		t.Fatalf("%d targets measured, want every one of %d", len(rep.Targets), len(job.Source.Targets))
	}
	for _, r := range rep.Targets {
		if r.Reads == 0 || r.Reads > 400 || r.ReadsPerSec <= 0 || r.Errors != 0 || r.Latency.Count != uint64(r.Reads) || r.Latency.P50 <= 0 {
			t.Errorf("%s: %+v", r.Target, r)
		}
	}
	// The first target holds the seeded keys, not the absent ones: most reads find a blob.
	if first := rep.Targets[0]; first.Found == 0 || first.NotFound == 0 || first.MBPerSec <= 0 {
		t.Errorf("%s: found %d, not found %d, %.2f MB/s; want both kinds and bytes", first.Target, first.Found, first.NotFound, first.MBPerSec)
	}

	// One target by name.
	var one SourceReport
	run(t, ctx, path, &one, "source", "--keys", keys, "--target", job.Source.Targets[0].Name, "--duration", "1s", "--count", "50", "--concurrency", "4")
	if len(one.Targets) != 1 || one.Targets[0].Target != job.Source.Targets[0].Name || one.Targets[0].Reads != 50 {
		t.Errorf("--target %s --count 50: %+v", job.Source.Targets[0].Name, one.Targets)
	}
}

func TestBenchDest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	path, job := jobFile(t)
	prefix := fmt.Sprintf("bench-it/%d/", time.Now().UnixNano())

	var rep DestReport
	run(t, ctx, path, &rep, "dest", "--sizes", "4KiB,1MiB", "--duration", "2s", "--count", "200", "--concurrency", "8", "--prefix", prefix)
	if len(rep.Sizes) != 2 || rep.Sizes[0].Size != 4<<10 || rep.Sizes[1].Size != 1<<20 {
		t.Fatalf("sizes %+v", rep.Sizes)
	}
	var puts int64
	for _, s := range rep.Sizes {
		if s.Put.OK == 0 || s.Put.OK > 200 || s.Put.Errors != 0 || s.Put.FilesPerSec <= 0 || s.Put.MBPerSec <= 0 || s.Put.Latency.P99 <= 0 {
			t.Errorf("%s PUT: %+v", s.Label, s.Put)
		}
		// Every object written is HEADed (the HEADs are much faster than the PUTs that made them).
		if s.Head == nil {
			t.Fatalf("%s: no HEAD measurement", s.Label)
		}
		if s.Head.OK != s.Put.OK || s.Head.Errors != 0 || s.Head.FilesPerSec <= 0 || s.Head.Latency.P50 <= 0 {
			t.Errorf("%s HEAD: %+v, after %d PUTs", s.Label, s.Head, s.Put.OK)
		}
		puts += s.Put.OK
	}
	if rep.Deleted != puts || rep.DeleteErrors != 0 {
		t.Errorf("deleted %d (%d errors), want the %d objects written", rep.Deleted, rep.DeleteErrors, puts)
	}
	if n := countObjects(t, ctx, job.Destination, prefix); n != 0 {
		t.Errorf("%d objects left under %s", n, prefix)
	}
}

// An interrupted run still deletes what it wrote.
func TestBenchDestCleansUpWhenInterrupted(t *testing.T) {
	_, job := jobFile(t)
	prefix := fmt.Sprintf("bench-it/%d/", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	cfg := DestConfig{Sizes: "64KiB,128KiB", Prefix: prefix, Load: load{Concurrency: 8, Duration: time.Minute}}
	rep, err := RunDest(ctx, job, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || len(rep.Sizes) != 1 || rep.Sizes[0].Put.OK == 0 || rep.Deleted < rep.Sizes[0].Put.OK {
		t.Errorf("interrupted %v, sizes %+v, deleted %d", rep.Interrupted, rep.Sizes, rep.Deleted)
	}
	if n := countObjects(t, context.Background(), job.Destination, prefix); n != 0 {
		t.Errorf("%d objects left under %s after Ctrl-C", n, prefix)
	}
}

// countObjects lists the prefix with the S3 client itself (blobstore has no List).
func countObjects(t *testing.T, ctx context.Context, d config.Destination, prefix string) int {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(d.Region))
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if d.Endpoint != "" {
			o.BaseEndpoint = aws.String(d.Endpoint)
		}
		o.UsePathStyle = d.PathStyle
	})
	n := 0
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(d.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("list s3://%s/%s: %v", d.Bucket, prefix, err)
		}
		n += len(page.Contents)
	}
	return n
}
