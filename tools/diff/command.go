// Package diff is `ferry diff`: the set difference of two huge key lists (`ferry diff A B`),
// or the source keys whose S3 object is missing from a bucket (`ferry diff --source LIST --bucket
// s3://bucket/prefix`), in bounded memory: an external sort (radix-sorted chunks spilled to a
// temporary folder, then merged) whatever the size of the lists.
package diff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bytesize"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keylist"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/telemetry"
)

// Config is `ferry diff`'s flags.
type Config struct {
	Out     string
	OnlyA   string
	OnlyB   string
	JSON    bool
	Mem     string
	Tmp     string
	Source  string
	Bucket  string
	Missing string
	Listers int

	mem int64 // parsed Mem
}

// minMem is the smallest --mem: the Go runtime and the I/O buffers need some of it.
const minMem = 32 << 20

// Flags are the command's flags.
func (c *Config) Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Value: ".", EnvVars: []string{"FERRY_DIFF_OUT"}, Destination: &c.Out, Usage: "folder for the result files (`DIR`), made if missing"},
		&cli.StringFlag{Name: "only-a", Value: OnlyInA, EnvVars: []string{"FERRY_DIFF_ONLY_A"}, Destination: &c.OnlyA, Usage: "file name, in --out, of the keys only in A; - writes them to stdout"},
		&cli.StringFlag{Name: "only-b", Value: OnlyInB, EnvVars: []string{"FERRY_DIFF_ONLY_B"}, Destination: &c.OnlyB, Usage: "file name, in --out, of the keys only in B; - writes them to stdout"},
		&cli.BoolFlag{Name: "json", Destination: &c.JSON, Usage: "print the summary as JSON (on stderr when a result goes to stdout)"},
		&cli.StringFlag{Name: "mem", Value: "512MiB", EnvVars: []string{"FERRY_DIFF_MEM"}, Destination: &c.Mem, Usage: "memory cap (e.g. 512MiB, 2GiB): the sort spills to --tmp beyond it"},
		&cli.StringFlag{Name: "tmp", Value: os.TempDir(), EnvVars: []string{"FERRY_DIFF_TMP"}, Destination: &c.Tmp, Usage: "folder for the sort's spill files (`DIR`, about the inputs' uncompressed size); removed at the end"},
		&cli.StringFlag{Name: "source", EnvVars: []string{"FERRY_DIFF_SOURCE"}, Destination: &c.Source, Usage: "source key list (`LIST`: file, .gz, .zst, s3://bucket/key or -): with --bucket, find its keys missing in S3"},
		&cli.StringFlag{Name: "bucket", EnvVars: []string{"FERRY_DIFF_BUCKET"}, Destination: &c.Bucket, Usage: "`s3://bucket/prefix` to list and compare with --source mapped by the job's key rules"},
		&cli.StringFlag{Name: "missing", Value: MissingInS3, EnvVars: []string{"FERRY_DIFF_MISSING"}, Destination: &c.Missing, Usage: "file name, in --out, of the source keys missing in S3; - writes them to stdout"},
		&cli.IntFlag{Name: "listers", Value: 16, EnvVars: []string{"FERRY_DIFF_LISTERS"}, Destination: &c.Listers, Usage: "concurrent ListObjectsV2 calls over disjoint key ranges"},
	}
}

// Validate checks the flags and the arguments.
func (c *Config) Validate(args []string) error {
	var errs []error
	mem, err := parseSize(c.Mem)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("--mem: %w", err))
	case mem < minMem:
		errs = append(errs, fmt.Errorf("--mem %s: must be at least 32MiB", c.Mem))
	}
	c.mem = mem
	if st, err := os.Stat(c.Out); err == nil && !st.IsDir() {
		errs = append(errs, fmt.Errorf("--out %q: not a folder", c.Out))
	}
	for _, f := range []struct{ flag, name string }{{"--only-a", c.OnlyA}, {"--only-b", c.OnlyB}, {"--missing", c.Missing}} {
		if f.name == "" || strings.ContainsRune(f.name, filepath.Separator) {
			errs = append(errs, fmt.Errorf("%s %q: want a file name, or - for stdout", f.flag, f.name))
		}
	}
	if c.OnlyA == Stdout && c.OnlyB == Stdout {
		errs = append(errs, errors.New("--only-a and --only-b cannot both be - (stdout)"))
	}
	if st, err := os.Stat(c.Tmp); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("--tmp %q: not a folder", c.Tmp))
	}
	if c.Source == "" && c.Bucket == "" {
		if i := slicesIndexFlag(args); i >= 0 {
			errs = append(errs, fmt.Errorf("%s: flags go before A and B (ferry diff [flags] A B)", args[i]))
		} else if len(args) != 2 {
			errs = append(errs, fmt.Errorf("want two key lists, A and B (got %d), or --source LIST --bucket s3://bucket/prefix", len(args)))
		} else if args[0] == keylist.Stdin && args[1] == keylist.Stdin {
			errs = append(errs, errors.New("only one of A and B can be - (stdin)"))
		}
	} else {
		if len(args) != 0 {
			errs = append(errs, fmt.Errorf("--source and --bucket take no arguments (got %s)", strings.Join(args, " ")))
		}
		if c.Source == "" || c.Bucket == "" {
			errs = append(errs, errors.New("--source and --bucket go together"))
		}
		if b, _, ok := keylist.ParseS3(c.Bucket); c.Bucket != "" && (!ok || b == "") {
			errs = append(errs, fmt.Errorf("--bucket %q: want s3://bucket or s3://bucket/prefix", c.Bucket))
		}
		if c.Listers < 1 || c.Listers > 1024 {
			errs = append(errs, fmt.Errorf("--listers %d: must be 1..1024", c.Listers))
		}
	}
	return config.Invalid(errors.Join(errs...))
}

// slicesIndexFlag is the index of the first argument that looks like a flag, else -1.
func slicesIndexFlag(args []string) int {
	for i, a := range args {
		if strings.HasPrefix(a, "-") && a != keylist.Stdin {
			return i
		}
	}
	return -1
}

// budget is the memory the sort's chunks and scratch may hold: the cap less the runtime's and the
// I/O buffers' share.
func budget(mem int64) int64 { return mem*7/8 - 16<<20 }

// Command is `ferry diff`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:      "diff",
		Usage:     "compare key lists in bounded memory: keys only in A or only in B, or source keys missing in S3",
		ArgsUsage: "A B",
		Description: "ferry diff A B writes only-in-A and only-in-B (sorted, one key a line) to --out. A and B are\n" +
			"files, .gz or .zst, s3://bucket/key or - (stdin); keys are trimmed like the producer's, blank\n" +
			"lines skipped, compared bytewise (LC_ALL=C).\n\n" +
			"ferry diff --source LIST --bucket s3://bucket/prefix maps each key of LIST with the job's key\n" +
			"rules (--config) and writes the source keys whose object is not in the bucket to missing-in-s3,\n" +
			"ready for ferry producer --keys, and the keys the rules refuse to invalid-keys (key TAB reason).\n\n" +
			"It prints a summary and the files it wrote (--json: the summary as JSON); a result file named -\n" +
			"(--only-a -, --only-b -, --missing -) goes to stdout and the summary to stderr. Exit status, as\n" +
			"diff(1): 0 the sets are the same, 1 they differ (or the diff failed), 2 a usage error.",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			log, err := telemetry.NewLogger(c.String("log-level"), c.String("log-format"))
			if err != nil {
				return config.Invalid(err)
			}
			slog.SetDefault(log)
			if err := cfg.Validate(c.Args().Slice()); err != nil {
				return err
			}
			return run(c.Context, c, cfg)
		},
	}
}

// ErrDiffer is what `ferry diff` returns when the sets differ (keys only in A or B, source keys
// missing in S3 or refused): exit 1, like diff(1); the summary has said it.
var ErrDiffer = errors.New("the key sets differ")

func run(ctx context.Context, c *cli.Context, cfg Config) error {
	debug.SetMemoryLimit(cfg.mem)
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	d := &differ{out: cfg.Out, onlyA: cfg.OnlyA, onlyB: cfg.OnlyB, stdout: c.App.Writer, tmp: cfg.Tmp, budget: budget(cfg.mem)}
	// The summary goes where no result goes.
	summary := c.App.Writer
	if cfg.OnlyA == Stdout || cfg.OnlyB == Stdout || cfg.Source != "" && cfg.Missing == Stdout {
		summary = c.App.ErrWriter
	}
	args := c.Args().Slice()
	needS3 := cfg.Bucket != ""
	for _, n := range append(args, cfg.Source) {
		if _, _, ok := keylist.ParseS3(n); ok {
			needS3 = true
		}
	}
	var client *blobstore.Client
	var job *config.Job
	if needS3 {
		var err error
		if job, err = config.Load(c.String("config")); err != nil {
			return fmt.Errorf("s3:// lists and --bucket need the job file for the S3 endpoint: %w", err)
		}
		if client, err = blobstore.New(ctx, job.Destination, max(cfg.Listers, 4)); err != nil {
			return err
		}
		d.s3 = client
	}
	d.progress = newProgress()
	defer d.progress.done()
	if cfg.Source == "" {
		res, err := d.diffLists(ctx, args[0], args[1])
		if err != nil {
			return interrupted(ctx, err)
		}
		return report(summary, cfg.JSON, res, res.Files, res.Differ())
	}
	rules, err := keyrules.Compile(job.Keys)
	if err != nil {
		return config.Invalid(err)
	}
	bucket, prefix, _ := keylist.ParseS3(cfg.Bucket)
	res, err := d.bucketDiff(ctx, cfg.Source, rules, client, bucket, prefix, cfg.Listers, cfg.Missing)
	if err != nil {
		return interrupted(ctx, err)
	}
	return report(summary, cfg.JSON, res, res.Files, res.Differ())
}

// report writes the summary (or its JSON) and the files written, and returns ErrDiffer when the
// sets differ.
func report(w io.Writer, asJSON bool, res fmt.Stringer, files map[string]string, differ bool) error {
	if asJSON {
		if err := json.NewEncoder(w).Encode(res); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(w, res)
		names := slices.Sorted(maps.Keys(files))
		for _, name := range names {
			if files[name] != Stdout {
				fmt.Fprintf(w, "wrote %s\n", files[name])
			}
		}
	}
	if differ {
		return ErrDiffer
	}
	return nil
}

// interrupted says so plainly when the user stopped the run.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.New("interrupted; spill files removed, no result written")
	}
	return err
}

// parseSize reads --mem: a positive byte count with units (shared/bytesize).
func parseSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err == nil && n == 0 {
		err = fmt.Errorf("%q: want a size such as 512MiB or 2GiB", s)
	}
	return n, err
}
