// Package seed is `ferry seed`: it fills the job's Cassandra tables with deterministic blobs and
// writes the matching key list, for the demo, the tests and the benchmarks. Every key, size and
// byte follows from the seed number, so a test can recompute what a blob must hold from its key.
package seed

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/gocql/gocql"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
)

// Config is the seed's flags.
type Config struct {
	Count       int    // seeded keys with drawn sizes
	KeysOut     string // key list file
	Absent      int    // keys listed but written nowhere
	Fallback    int    // keys written only to the second target's table
	Sizes       string // comma-separated explicit sizes, one extra key each
	Concurrency int    // writes in flight
	Consistency string // write consistency
	Replication string // "dc:n,dc:n" for keyspaces the seed creates
	Seed        int    // same seed, same keys
}

// Flags are the seed's flags.
func (c *Config) Flags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "count", Value: 1000, EnvVars: []string{"FERRY_SEED_COUNT"}, Destination: &c.Count, Usage: "keys written with realistic sizes (median ~30 KiB, a few 1-2 MiB)"},
		&cli.StringFlag{Name: "keys-out", Value: "keys.txt", EnvVars: []string{"FERRY_SEED_KEYS_OUT"}, Destination: &c.KeysOut, Usage: "write every key, one per line, to this file"},
		&cli.IntFlag{Name: "absent", EnvVars: []string{"FERRY_SEED_ABSENT"}, Destination: &c.Absent, Usage: "keys listed but not written anywhere (they end in the DLQ as not_found)"},
		&cli.IntFlag{Name: "fallback", EnvVars: []string{"FERRY_SEED_FALLBACK"}, Destination: &c.Fallback, Usage: "keys written only to the second read target's table (served by fallback)"},
		&cli.StringFlag{Name: "sizes", EnvVars: []string{"FERRY_SEED_SIZES"}, Destination: &c.Sizes, Usage: "extra keys with these exact blob sizes in bytes, e.g. 0,3145728"},
		&cli.IntFlag{Name: "concurrency", Value: 32, EnvVars: []string{"FERRY_SEED_CONCURRENCY"}, Destination: &c.Concurrency, Usage: "writes in flight"},
		&cli.StringFlag{Name: "consistency", Value: "ALL", EnvVars: []string{"FERRY_SEED_CONSISTENCY"}, Destination: &c.Consistency, Usage: "write consistency; ALL: every DC holds every row when the seed returns"},
		&cli.StringFlag{Name: "replication", Value: "dc1:1,dc2:1", EnvVars: []string{"FERRY_SEED_REPLICATION"}, Destination: &c.Replication, Usage: "NetworkTopologyStrategy replicas per DC for keyspaces the seed creates"},
		&cli.IntFlag{Name: "seed", Value: 1, EnvVars: []string{"FERRY_SEED_SEED"}, Destination: &c.Seed, Usage: "the same seed gives the same keys and blobs, so seeding again is idempotent"},
	}
}

// Validate checks the flags on their own; Write checks them against the job.
func (c *Config) Validate() error {
	var errs []error
	if c.Count < 0 || c.Absent < 0 || c.Fallback < 0 {
		errs = append(errs, errors.New("--count, --absent and --fallback must not be negative"))
	}
	if c.KeysOut == "" {
		errs = append(errs, errors.New("--keys-out: a file name is required"))
	}
	if _, err := parseSizes(c.Sizes); err != nil {
		errs = append(errs, err)
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("--concurrency %d: must be 1..1024", c.Concurrency))
	}
	if _, err := gocql.ParseConsistencyWrapper(c.Consistency); err != nil {
		errs = append(errs, fmt.Errorf("--consistency %q: %w", c.Consistency, err))
	}
	if _, err := parseReplication(c.Replication); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// parseSizes reads "0,3145728,17825792".
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > maxExplicit {
			return nil, fmt.Errorf("--sizes: %q is not a size in bytes (0..%d)", f, maxExplicit)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

type replica struct {
	dc string
	n  int
}

var dcName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// parseReplication reads "dc1:1,dc2:1".
func parseReplication(s string) ([]replica, error) {
	var rs []replica
	for f := range strings.SplitSeq(s, ",") {
		dc, n, ok := strings.Cut(strings.TrimSpace(f), ":")
		count, err := strconv.Atoi(n)
		if !ok || !dcName.MatchString(dc) || err != nil || count < 1 {
			return nil, fmt.Errorf("--replication: %q is not dc:replicas (e.g. dc1:1,dc2:1)", f)
		}
		rs = append(rs, replica{dc, count})
	}
	return rs, nil
}

// Command is `ferry seed`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "seed",
		Usage: "write deterministic test blobs to the job's Cassandra tables and their key list to a file",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			job, err := config.Load(c.String("config"))
			if err != nil {
				return err
			}
			sum, err := Write(c.Context, job, cfg, c.App.ErrWriter)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, sum)
			return err
		},
	}
}
