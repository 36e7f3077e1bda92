package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/config"
)

// Summary is what a seed run did.
type Summary struct {
	Main, Sized, Fallback, Absent int    // keys of each kind (Main includes Sized)
	MainTable, FallbackTable      string // where they went
	Bytes                         int64  // blob bytes written
	Elapsed                       time.Duration
	KeysFile                      string
	Lines                         int
}

func (s Summary) String() string {
	secs := max(s.Elapsed.Seconds(), 1e-3)
	var b strings.Builder
	fmt.Fprintf(&b, "seeded %d blobs to %s (%d with explicit sizes)", s.Main, s.MainTable, s.Sized)
	if s.Fallback > 0 {
		fmt.Fprintf(&b, ", %d only to %s", s.Fallback, s.FallbackTable)
	}
	fmt.Fprintf(&b, ", %d absent; %.1f MB in %s (%.0f blobs/s, %.1f MB/s); %d keys in %s",
		s.Absent, float64(s.Bytes)/1e6, s.Elapsed.Round(time.Millisecond),
		float64(s.Main+s.Fallback)/secs, float64(s.Bytes)/1e6/secs, s.Lines, s.KeysFile)
	return b.String()
}

// Write seeds the job's tables and writes the key list to cfg.KeysOut: the first target's table
// gets the seeded and sized keys, the second target's table (if any) the fallback keys. Progress
// goes to out: a bar on a terminal, else a line a second.
func Write(ctx context.Context, job *config.Job, cfg Config, out io.Writer) (Summary, error) {
	start := time.Now()
	if out == nil {
		out = io.Discard
	}
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	sizes, _ := parseSizes(cfg.Sizes)
	repl, _ := parseReplication(cfg.Replication)
	cl, _ := gocql.ParseConsistencyWrapper(cfg.Consistency)

	targets := job.Source.Targets
	if len(targets) == 0 || targets[0].Query != "" {
		return Summary{}, errors.New("seed: the first read target must name a table (not a query) to write to")
	}
	first := targets[0]
	var second *config.Target
	if len(targets) > 1 && targets[1].Query == "" {
		second = &targets[1]
	}
	if cfg.Fallback > 0 && second == nil {
		return Summary{}, errors.New("seed: --fallback needs a second read target that names a table")
	}

	keys := PlanKeys(cfg.Seed, cfg.Count, cfg.Fallback, cfg.Absent, sizes)
	sum := Summary{Main: len(keys.Main), Sized: len(sizes), Fallback: len(keys.Fallback), Absent: len(keys.Absent),
		MainTable: first.Table, KeysFile: cfg.KeysOut}

	w1, err := openWriter(ctx, first, cfg.Concurrency, cl)
	if err != nil {
		return sum, err
	}
	defer w1.close()
	if err := w1.ensureSchema(ctx, repl); err != nil {
		return sum, err
	}
	w2 := w1
	if second != nil {
		sum.FallbackTable = second.Table
		// Another cluster needs its own session; the same contact points do not. In one cluster
		// the DDL below is then a no-op for a keyspace that already exists.
		session := w1.session
		if !slices.Equal(second.Hosts, first.Hosts) {
			ws, err := openWriter(ctx, *second, cfg.Concurrency, cl)
			if err != nil {
				return sum, err
			}
			defer ws.close()
			session = ws.session
		}
		w2 = newWriter(*second, session)
		if err := w2.ensureSchema(ctx, repl); err != nil {
			return sum, err
		}
	}

	writes := make([]write, 0, len(keys.Main)+len(keys.Fallback))
	for _, k := range keys.Main {
		writes = append(writes, write{w1, k})
	}
	for _, k := range keys.Fallback {
		writes = append(writes, write{w2, k})
	}
	if sum.Bytes, err = writeAll(ctx, writes, cfg.Concurrency, out); err != nil {
		return sum, err
	}

	all := keys.All()
	if err := writeKeyFile(cfg.KeysOut, all); err != nil {
		return sum, err
	}
	sum.Lines = len(all)
	sum.Elapsed = time.Since(start)
	return sum, nil
}
