package manifest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Name is the drain's process name (and NATS user in deploy/nats/secure.conf).
const Name = "manifest"

// MaxBatch bounds --batch: a round holds its entries in memory, about 400 bytes each with short
// keys (several KiB with 1 KiB keys), so a million is already hundreds of MiB.
const MaxBatch = 1_000_000

// Config is the drain's flags.
type Config struct {
	Every  time.Duration
	MinAge time.Duration
	Batch  int
	Once   bool // drain what is old enough, then exit (a cron job rather than a service)
}

// Flags are the drain's flags; prefix names them inside another command (ferry run: "manifest-").
func (c *Config) Flags(prefix string) []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: prefix + "every", Value: DefaultEvery, EnvVars: []string{"FERRY_MANIFEST_EVERY"}, Destination: &c.Every, Usage: "how often DONE is drained into manifest segments; 0: never (DONE keeps every entry)"},
		&cli.DurationFlag{Name: prefix + "min-age", Value: DefaultMinAge, EnvVars: []string{"FERRY_MANIFEST_MIN_AGE"}, Destination: &c.MinAge, Usage: "DONE entries younger than this stay in DONE (ferry status counts the last minute there: below 1m its rate reads low)"},
		&cli.IntFlag{Name: prefix + "batch", Value: DefaultBatch, EnvVars: []string{"FERRY_MANIFEST_BATCH"}, Destination: &c.Batch, Usage: "DONE entries per segment at most (1..1000000); a round holds them in memory, about 400 bytes each with short keys"},
	}
}

// Validate checks the flags.
func (c *Config) Validate(prefix string) error {
	var errs []error
	if c.Every < 0 {
		errs = append(errs, fmt.Errorf("--%severy %s: must not be negative", prefix, c.Every))
	}
	if c.MinAge < 0 {
		errs = append(errs, fmt.Errorf("--%smin-age %s: must not be negative", prefix, c.MinAge))
	}
	if c.Batch < 1 || c.Batch > MaxBatch {
		errs = append(errs, fmt.Errorf("--%sbatch %d: must be 1..%d", prefix, c.Batch, MaxBatch))
	}
	return config.Invalid(errors.Join(errs...))
}

// StoreFor is the bucket the job's manifests go to.
func StoreFor(ctx context.Context, job *config.Job) (*blobstore.Client, error) {
	d := job.Destination
	if !job.ManifestInDestination() {
		d.Bucket = job.Manifest.Bucket
	}
	c, err := blobstore.New(ctx, d, 4)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return c, nil
}

// Run drains the job's DONE every cfg.Every until ctx ends (nothing when Every is 0), or with
// cfg.Once until what is old enough is drained.
func Run(ctx context.Context, env *service.Env, cfg Config) error {
	if cfg.Every == 0 && !cfg.Once {
		return nil
	}
	store, err := StoreFor(ctx, env.Job())
	if err != nil {
		return err
	}
	d := &Drain{JS: env.JS, Names: env.Names, Store: store, Prefix: env.Job().Manifest.Prefix, Bucket: env.Job().Destination.Bucket, MinAge: cfg.MinAge, Batch: cfg.Batch,
		Log: env.Log.With("component", Name), Now: time.Now}
	// The job as a label, as every ferry metric has: the dashboard selects by it.
	d.register(prometheus.WrapRegistererWith(prometheus.Labels{"job": env.Names.Job}, env.Registry))
	if cfg.Once {
		entries, segments, err := d.DrainAll(ctx)
		if err != nil {
			return err
		}
		st, err := d.State(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("drained %d DONE entries into %d segments (s3://%s/%s); in all %d entries in %d segments, next DONE sequence %d, lost %d\n",
			entries, segments, store.Bucket(), Dir(d.Prefix, env.Names.Job), st.Entries, st.Segments, st.NextSeq, st.Lost)
		return nil
	}
	env.Log.Info("manifest drain running", "bucket", store.Bucket(), "dir", Dir(d.Prefix, env.Names.Job), "every", cfg.Every, "min_age", cfg.MinAge)
	return d.Run(ctx, cfg.Every)
}

func (d *Drain) register(r prometheus.Registerer) {
	d.entries = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_manifest_entries_total", Help: "DONE entries written into manifest segments (adopted ones included)"})
	d.segments = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_manifest_segments_total", Help: "manifest segments recorded"})
	d.failures = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_manifest_round_failures_total", Help: "drain rounds that failed (DONE keeps its entries until a later round)"})
	r.MustRegister(d.entries, d.segments, d.failures)
}

// Command is `ferry manifest`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  Name,
		Usage: "drain DONE into compressed manifest segments in S3 (manifest.prefix) so that DONE stays bounded; one is enough, more are safe",
		Flags: append(cfg.Flags(""), &cli.BoolFlag{Name: "once", Destination: &cfg.Once, Usage: "drain what is older than --min-age, print the totals and exit (run it from cron instead of as a service)"}),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(""); err != nil {
				return err
			}
			if cfg.Every == 0 && !cfg.Once {
				return config.Invalid(errors.New("--every 0 without --once: nothing to do"))
			}
			env, err := service.Open(c.Context, c, service.Options{Name: Name, Settings: bus.DefaultSettings(), NeedConfig: true, OneShot: cfg.Once})
			if err != nil {
				return err
			}
			defer env.Close()
			return Run(c.Context, env, cfg)
		},
	}
}
