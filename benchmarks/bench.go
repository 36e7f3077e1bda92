package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
)

// Variant names, in the order they run.
const (
	vDirect     = "direct"
	vSeedDesign = "seed-design"
	vSplit      = "ferry-split"
	vRun        = "ferry-run"
	// vRunSync2m is ferry run with --nats-sync-interval 2m: nats-server's default background
	// sync instead of an fsync per write, to measure what the safe default costs.
	vRunSync2m = "ferry-run-sync-2m"
	// vRunStreams is ferry run with --fused=false: every key through BLOBS and UPLOADED, to
	// measure what the fused path saves.
	vRunStreams = "ferry-run-streams"
)

// allVariants run by default; knownVariants may be chosen with --variants.
var (
	allVariants   = []string{vDirect, vSeedDesign, vSplit, vRun}
	knownVariants = append(slices.Clone(allVariants), vRunSync2m, vRunStreams)
)

// options are the harness's flags; `make bench` sets them from BENCH_* variables.
type options struct {
	Keys           int
	Concurrency    int
	Seed           int
	Variants       string
	Config         string
	NATS           string
	NATSPidFile    string
	Ferry          string
	RedisServer    string
	Work           string
	Results        string
	ProfileSeconds int
	KeepObjects    bool
	Repeat         int
}

func (o *options) flags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "keys", Value: 50000, EnvVars: []string{"BENCH_KEYS"}, Destination: &o.Keys, Usage: "seeded keys to migrate"},
		&cli.IntFlag{Name: "concurrency", Value: 64, EnvVars: []string{"BENCH_CONCURRENCY"}, Destination: &o.Concurrency, Usage: "workers of every variant (and of each ferry stage)"},
		&cli.IntFlag{Name: "seed", Value: 1000, EnvVars: []string{"BENCH_SEED"}, Destination: &o.Seed, Usage: "'ferry seed --seed': the same seed gives the same keys, so seeding is done once"},
		&cli.StringFlag{Name: "variants", Value: strings.Join(allVariants, ","), EnvVars: []string{"BENCH_VARIANTS"}, Destination: &o.Variants, Usage: "which variants to run, comma-separated"},
		&cli.StringFlag{Name: "config", Value: "deploy/local/ferry.yaml", EnvVars: []string{"FERRY_CONFIG"}, Destination: &o.Config, Usage: "job file of the local stack (each variant writes under its own S3 prefix)"},
		&cli.StringFlag{Name: "nats", Value: "nats://127.0.0.1:4222", EnvVars: []string{"FERRY_NATS"}, Destination: &o.NATS, Usage: "the local nats-server (ferry-split)"},
		&cli.StringFlag{Name: "nats-pid-file", Value: ".local/run/nats.pid", Destination: &o.NATSPidFile, Usage: "pid file of the local nats-server, for its CPU time"},
		&cli.StringFlag{Name: "ferry", EnvVars: []string{"BENCH_FERRY"}, Destination: &o.Ferry, Usage: "ferry binary (default: beside ferry-bench)"},
		&cli.StringFlag{Name: "redis-server", Value: "redis-server", EnvVars: []string{"BENCH_REDIS_SERVER"}, Destination: &o.RedisServer, Usage: "redis-server binary"},
		&cli.StringFlag{Name: "work", Value: ".local/bench", EnvVars: []string{"BENCH_WORK"}, Destination: &o.Work, Usage: "scratch folder: key lists, seed marker, logs of each run"},
		&cli.StringFlag{Name: "results", Value: "benchmarks/results", EnvVars: []string{"BENCH_RESULTS"}, Destination: &o.Results, Usage: "where the report and profiles go"},
		&cli.IntFlag{Name: "profile-seconds", Value: 15, EnvVars: []string{"BENCH_PROFILE_SECONDS"}, Destination: &o.ProfileSeconds, Usage: "CPU profile length taken from each ferry-split process (0: none)"},
		&cli.IntFlag{Name: "repeat", Value: 1, EnvVars: []string{"BENCH_REPEAT"}, Destination: &o.Repeat, Usage: "run the variants this many times, taking turns (noise on the machine hits each alike); the report adds each variant's median and range"},
		&cli.BoolFlag{Name: "keep-objects", EnvVars: []string{"BENCH_KEEP_OBJECTS"}, Destination: &o.KeepObjects, Usage: "leave each variant's objects in the bucket"},
	}
}

func (o *options) validate() error {
	var errs []error
	if o.Keys < 1 {
		errs = append(errs, fmt.Errorf("--keys %d: must be positive", o.Keys))
	}
	if o.Concurrency < 1 || o.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("--concurrency %d: must be 1..4096", o.Concurrency))
	}
	for v := range strings.SplitSeq(o.Variants, ",") {
		if !slices.Contains(knownVariants, strings.TrimSpace(v)) {
			errs = append(errs, fmt.Errorf("--variants: unknown %q (want some of %s)", v, strings.Join(knownVariants, ",")))
		}
	}
	if o.Repeat < 1 || o.Repeat > 100 {
		errs = append(errs, fmt.Errorf("--repeat %d: must be 1..100", o.Repeat))
	}
	if o.Ferry == "" {
		self, err := os.Executable()
		if err != nil {
			errs = append(errs, err)
		}
		o.Ferry = filepath.Join(filepath.Dir(self), "ferry")
	}
	if _, err := os.Stat(o.Ferry); err != nil {
		errs = append(errs, fmt.Errorf("ferry binary: %w (make build)", err))
	}
	for _, p := range []*string{&o.Config, &o.Work, &o.Results, &o.Ferry, &o.NATSPidFile} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			errs = append(errs, err)
		}
		*p = abs
	}
	return errors.Join(errs...)
}

func (o *options) variants() []string {
	var vs []string
	for v := range strings.SplitSeq(o.Variants, ",") {
		vs = append(vs, strings.TrimSpace(v))
	}
	return vs
}

// bench is one harness run.
type bench struct {
	o      options
	job    *config.Job // the local stack's job file
	id     string      // run id: names jobs, S3 prefixes and the scratch folder
	dir    string      // scratch folder of this run
	self   string      // this binary, for the worker subcommands
	commit string
	runs   int // ferry runs so far: each gets its own job and data folder

	blobSize int        // seeded blobs are all this size (0: drawn sizes, median ~30 KiB)
	drain    *drainSpec // the soak's: the ferry variants drain DONE into manifests, and report the store
}

func newBench(o options) (*bench, error) {
	job, err := config.Load(o.Config)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, job: job, self: self, id: "b" + time.Now().Format("0102-150405"), commit: gitCommit()}
	b.dir = filepath.Join(o.Work, "runs", b.id)
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	return b, nil
}

func benchCommand() *cli.Command {
	var o options
	return &cli.Command{
		Name:  "bench",
		Usage: "seed once, then migrate the key set with each variant in turn and report (make bench)",
		Flags: o.flags(),
		Action: func(c *cli.Context) error {
			if err := o.validate(); err != nil {
				return err
			}
			b, err := newBench(o)
			if err != nil {
				return err
			}
			return b.run(c.Context)
		},
	}
}

// run is `make bench`.
func (b *bench) run(ctx context.Context) error {
	o := b.o
	logf("ferry bench %s: %d keys, concurrency %d, %d cores, commit %s; logs in %s",
		b.id, o.Keys, o.Concurrency, runtime.NumCPU(), b.commit, b.dir)
	keys, err := b.ensureSeeded(ctx, o.Keys)
	if err != nil {
		return err
	}
	if err := b.cleanObjects(ctx, benchPrefix+"/"); err != nil {
		return err
	}
	name := time.Now().Format("2006-01-02") + "-" + b.commit
	if o.Keys != 50000 {
		name += fmt.Sprintf("-n%d", o.Keys)
	}
	rep := &report{
		Date: time.Now().UTC().Format(time.RFC3339), Commit: b.commit, Cores: runtime.NumCPU(),
		GoVersion: runtime.Version(), Keys: o.Keys, Concurrency: o.Concurrency, Seed: o.Seed, RunID: b.id,
	}
	profDir := filepath.Join(o.Results, name)
	for i := range o.Repeat {
		for _, v := range o.variants() {
			if o.Repeat > 1 {
				logf("== %s (round %d of %d)", v, i+1, o.Repeat)
			} else {
				logf("== %s", v)
			}
			busy := startBusy()
			var r *variantResult
			switch v {
			case vDirect:
				r, err = b.runWorker(ctx, vDirect, keys, true)
			case vSeedDesign:
				r, err = b.runSeedDesign(ctx, keys)
			case vSplit:
				r, err = b.runSplit(ctx, keys, o.Keys, profDir)
			case vRun, vRunSync2m, vRunStreams:
				r, err = b.runFerry(ctx, v, keys, o.Keys, profDir)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", v, err)
			}
			r.MachineBusy = busy.percent()
			logf("%s", r.summary())
			rep.Variants = append(rep.Variants, *r)
			if err := b.cleanObjects(ctx, b.prefix(v)+"/"); err != nil {
				return err
			}
		}
	}
	if o.Repeat > 1 {
		rep.medians(o.variants())
	}
	rep.ratios()
	fmt.Println()
	fmt.Print(rep.table())
	md, js, err := rep.write(o.Results, name)
	if err != nil {
		return err
	}
	logf("report: %s, %s", md, js)
	return nil
}

// prefix is where variant v writes in the bucket.
func (b *bench) prefix(v string) string { return benchPrefix + "/" + b.id + "/" + v }

// benchPrefix is the part of the bucket the benchmark owns; it is emptied at the start.
const benchPrefix = "bench"

// variantConfig writes the job file for variant v: the local one with v's S3 prefix in front of
// the key template, so every variant starts from an empty prefix and its verification proves its
// own uploads.
func (b *bench) variantConfig(v string) (string, error) {
	j := *b.job
	j.Keys.Template = b.prefix(v) + "/" + j.Keys.Template
	// ferry run drains DONE on its own (after 2m): its segments go under the variant's prefix too,
	// so cleaning the prefix removes them, and no later job adopts them.
	j.Manifest.Prefix = b.prefix(v) + "/ferry-manifests/"
	return writeJobFile(filepath.Join(b.dir, v+".yaml"), &j)
}

// gitCommit is the short commit, with -dirty when the tree has changes.
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "-dirty"
	}
	return c
}

// logf prints a progress line with the time.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
