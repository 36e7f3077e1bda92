package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
)

func TestReportText(t *testing.T) {
	lat := Latency{Count: 10, P50: 1500 * time.Microsecond, P99: 25 * time.Millisecond, Max: 40 * time.Millisecond}
	var b bytes.Buffer
	src := SourceReport{Keys: "keys.txt", KeyLines: 100, Sampled: 10, Concurrency: 4, Targets: []TargetResult{
		{Target: "dc1", Reads: 10, Found: 9, NotFound: 1, ReadsPerSec: 5, MBPerSec: 1.25, Latency: lat},
		{Target: "dc2", Unmeasurable: "connect: refused"},
	}, Interrupted: true}
	if err := src.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10 keys sampled of 100", "dc1     10        5   1.2      9          1       0  1.50ms  25ms  40ms",
		"dc2: not measured: connect: refused", "interrupted"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("source report lacks %q:\n%s", want, b.String())
		}
	}

	b.Reset()
	dst := DestReport{Bucket: "b", Prefix: "p/run/", Concurrency: 4, Deleted: 7, Sizes: []SizeResult{
		{Label: "16KiB", Put: OpResult{OK: 7, FilesPerSec: 70, MBPerSec: 1.1, Latency: lat}},
	}}
	if err := dst.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "PUT") || strings.Contains(out, "HEAD") || !strings.Contains(out, "deleted 7 objects under s3://b/p/run/") {
		t.Errorf("dest report, no HEAD measured:\n%s", out)
	}
}

// Bad flags fail before anything connects, as usage errors (exit status 2).
func TestCommandRejectsBadFlags(t *testing.T) {
	job := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(job, []byte("source:\n  targets:\n    - {name: only, hosts: [127.0.0.1], table: ks.t}\ndestination: {bucket: some-bucket}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(keys, []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"source"}, "--keys"},
		{[]string{"source", "--keys", keys, "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"source", "--keys", keys, "--duration", "0s"}, "--duration 0s"},
		{[]string{"source", "--keys", keys, "--sample", "0"}, "--sample 0"},
		{[]string{"source", "--keys", keys, "--target", "nope"}, `--target "nope"`},
		{[]string{"dest", "--sizes", "16KiB,lots"}, `size "lots"`},
		{[]string{"dest", "--count", "-1"}, "--count -1"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			app := &cli.App{Name: "ferry", Flags: []cli.Flag{
				&cli.StringFlag{Name: "config"}, &cli.StringFlag{Name: "log-level", Value: "error"}, &cli.StringFlag{Name: "log-format", Value: "text"},
			}, Commands: []*cli.Command{Command()}}
			err := app.Run(append([]string{"ferry", "--config", job, "bench"}, tt.args...))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !config.IsInvalid(err) {
				t.Fatalf("err = %v; want a usage error about %s", err, tt.want)
			}
		})
	}
}
