// Package bench is `ferry bench`: it measures what the user's Cassandra read targets and S3
// bucket can serve (reads/s, MB/s, PUT and HEAD files/s, latency percentiles), so that the
// fetchers' and uploaders' concurrency and rate caps can be planned before a migration starts.
// It needs only the job file, not NATS.
package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/telemetry"
)

// Command is `ferry bench`, with the subcommands `source` and `dest`.
func Command() *cli.Command {
	return &cli.Command{
		Name:        "bench",
		Usage:       "measure the capacity of the job's Cassandra read targets and S3 bucket (no NATS needed)",
		Subcommands: []*cli.Command{sourceCommand(), destCommand()},
	}
}

// loadFlags are the flags every measurement has.
func (l *load) flags(duration time.Duration, env string) []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 64, EnvVars: []string{env + "_CONCURRENCY"}, Destination: &l.Concurrency, Usage: "requests in flight"},
		&cli.DurationFlag{Name: "duration", Value: duration, EnvVars: []string{env + "_DURATION"}, Destination: &l.Duration, Usage: "how long each measurement runs"},
		&cli.Int64Flag{Name: "count", EnvVars: []string{env + "_COUNT"}, Destination: &l.Count, Usage: "stop each measurement after this many requests, if that comes before --duration (0: no limit)"},
	}
}

func (l *load) validate() error {
	var errs []error
	if l.Concurrency < 1 || l.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("--concurrency %d: must be 1..4096", l.Concurrency))
	}
	if l.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %s: must be positive", l.Duration))
	}
	if l.Count < 0 {
		errs = append(errs, fmt.Errorf("--count %d: must not be negative", l.Count))
	}
	return errors.Join(errs...)
}

// Flags are `ferry bench source`'s flags.
func (c *SourceConfig) Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "keys", EnvVars: []string{"FERRY_BENCH_KEYS"}, Destination: &c.Keys, Usage: "key list, one key a line (`FILE`, or - for stdin); read once, whatever its size"},
		&cli.IntFlag{Name: "sample", Value: 10000, EnvVars: []string{"FERRY_BENCH_SAMPLE"}, Destination: &c.Sample, Usage: "keys drawn at random from the list; reads pick among them"},
		&cli.StringFlag{Name: "target", EnvVars: []string{"FERRY_BENCH_TARGET"}, Destination: &c.Target, Usage: "measure only this read target (`NAME`); default: every target in turn"},
		&cli.BoolFlag{Name: "json", Destination: &c.JSON, Usage: "print the report as JSON"},
	}, c.Load.flags(30*time.Second, "FERRY_BENCH_SOURCE")...)
}

// Validate checks the flags.
func (c *SourceConfig) Validate() error {
	var errs []error
	if c.Keys == "" {
		errs = append(errs, errors.New("--keys: a key list is required (one key a line)"))
	}
	if c.Sample < 1 || c.Sample > 10_000_000 {
		errs = append(errs, fmt.Errorf("--sample %d: must be 1..10,000,000", c.Sample))
	}
	return config.Invalid(errors.Join(append(errs, c.Load.validate())...))
}

// Flags are `ferry bench dest`'s flags.
func (c *DestConfig) Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "sizes", Value: "16KiB,256KiB,1MiB", EnvVars: []string{"FERRY_BENCH_SIZES"}, Destination: &c.Sizes, Usage: "object sizes to measure, each in turn (e.g. 4096, 16KiB, 1MiB)"},
		&cli.StringFlag{Name: "prefix", Value: "ferry-bench/", EnvVars: []string{"FERRY_BENCH_PREFIX"}, Destination: &c.Prefix, Usage: "scratch prefix; the run writes under <prefix><run id>/ and deletes what it wrote"},
		&cli.BoolFlag{Name: "json", Destination: &c.JSON, Usage: "print the report as JSON"},
	}, c.Load.flags(20*time.Second, "FERRY_BENCH_DEST")...)
}

// Validate checks the flags.
func (c *DestConfig) Validate() error {
	_, err := parseSizes(c.Sizes)
	return config.Invalid(errors.Join(err, c.Load.validate()))
}

// open is what both subcommands start with: the logger and the job file.
func open(c *cli.Context) (*config.Job, *slog.Logger, error) {
	log, err := telemetry.NewLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return nil, nil, err
	}
	slog.SetDefault(log) // the Cassandra driver's messages go through the default logger
	job, err := config.Load(c.String("config"))
	if err != nil {
		return nil, nil, err
	}
	return job, log, nil
}

func sourceCommand() *cli.Command {
	var cfg SourceConfig
	return &cli.Command{
		Name:  "source",
		Usage: "read random keys of a key list from each read target: reads/s, MB/s, found, latency",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			job, log, err := open(c)
			if err != nil {
				return err
			}
			rep, err := RunSource(c.Context, job, cfg, log)
			if err != nil {
				return err
			}
			if cfg.JSON {
				err = writeJSON(c.App.Writer, rep)
			} else {
				err = rep.WriteText(c.App.Writer)
			}
			if err != nil {
				return err
			}
			for _, t := range rep.Targets {
				if t.Unmeasurable != "" {
					return fmt.Errorf("bench source: target %s could not be measured", t.Target)
				}
			}
			return nil
		},
	}
}

func destCommand() *cli.Command {
	var cfg DestConfig
	return &cli.Command{
		Name:  "dest",
		Usage: "PUT then HEAD scratch objects of each size in the job's bucket, then delete them: files/s, MB/s, latency",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			job, log, err := open(c)
			if err != nil {
				return err
			}
			rep, runErr := RunDest(c.Context, job, cfg, log)
			if rep.Bucket == "" { // nothing was measured: the client or the bucket check failed
				return runErr
			}
			if cfg.JSON {
				err = writeJSON(c.App.Writer, rep)
			} else {
				err = rep.WriteText(c.App.Writer)
			}
			return errors.Join(runErr, err)
		},
	}
}
