// Package producer publishes keys to the job's KEYS stream: from key lists (plain, gzip or zstd,
// local or in S3, several read in parallel) or by scanning the source table's token ranges. It
// checkpoints how far each list or range has got in the job's KV bucket once the publishes before
// that point are acknowledged, and holds back while the KEYS backlog is above a high-water mark.
// A list's checkpoint records the list's identity and a hash of the part published, so a list
// that grew is resumed and one whose published part changed is refused until --restart.
package producer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keylist"
	"github.com/ferry-migrate/ferry/shared/progress"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Config is the producer's flags.
type Config struct {
	Keys      cli.StringSlice
	Parallel  int   // key lists read at once
	InFlight  int   // async publishes awaiting their PubAck, per list or range
	HighWater int64 // KEYS messages above which the producer waits
	Restart   bool  // ignore checkpoints
	Progress  bool  // a progress line on stderr
	Scan      ScanConfig
	Settings  bus.Settings

	ackTimeout time.Duration // how long a PubAck may take before the key is republished (0: pubAckTimeout); tests shorten it
}

// Flags are the producer's flags.
func (c *Config) Flags() []cli.Flag {
	return append(append([]cli.Flag{
		&cli.StringSliceFlag{Name: "keys", Aliases: []string{"k"}, EnvVars: []string{"FERRY_KEYS"}, Destination: &c.Keys, Usage: "key list(s), one key a line: files, glob patterns, s3://bucket/key or s3://bucket/prefix*; plain, .gz or .zst; - for stdin (not checkpointed)"},
		&cli.IntFlag{Name: "parallel", Value: 4, EnvVars: []string{"FERRY_PRODUCER_PARALLEL"}, Destination: &c.Parallel, Usage: "key lists read at once"},
		&cli.IntFlag{Name: "in-flight", Value: 1024, EnvVars: []string{"FERRY_PRODUCER_IN_FLIGHT"}, Destination: &c.InFlight, Usage: "publishes awaiting acknowledgement, per key list or token range (at most 2048 / readers)"},
		&cli.Int64Flag{Name: "high-water", Value: 1_000_000, EnvVars: []string{"FERRY_PRODUCER_HIGH_WATER"}, Destination: &c.HighWater, Usage: "wait while the KEYS backlog holds more messages than this"},
		&cli.BoolFlag{Name: "restart", EnvVars: []string{"FERRY_PRODUCER_RESTART"}, Destination: &c.Restart, Usage: "ignore checkpoints: publish every list from its start (needed for a list whose lines already published changed since its checkpoint: it is refused otherwise); with --scan, start a new pass (full, or a delta with --since) over a new split of the ring, leaving an incomplete one (earlier passes stay recorded)"},
		&cli.BoolFlag{Name: "progress", Value: true, EnvVars: []string{"FERRY_PROGRESS"}, Destination: &c.Progress, Usage: "print a progress line on stderr when it is a terminal"},
	}, c.Scan.Flags()...), c.Settings.Flags()...)
}

// Flags are the flags of a token-range scan.
func (c *ScanConfig) Flags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "scan", EnvVars: []string{"FERRY_SCAN"}, Destination: &c.Enabled, Usage: "enumerate the keys of the source table by token ranges instead of reading key lists", Category: "scan"},
		&cli.StringFlag{Name: "scan-target", EnvVars: []string{"FERRY_SCAN_TARGET"}, Destination: &c.Target, Usage: "read target (job file) whose table is scanned (default: the first)", Category: "scan"},
		&cli.StringFlag{Name: "scan-dc", EnvVars: []string{"FERRY_SCAN_DC"}, Destination: &c.DC, Usage: "datacenter to scan (default: the target's local_dc)", Category: "scan"},
		&cli.IntFlag{Name: "scan-ranges", EnvVars: []string{"FERRY_SCAN_RANGES"}, Destination: &c.Ranges, Usage: fmt.Sprintf("token ranges (0: %d per node, cut at the node tokens)", rangesPerNode), Category: "scan"},
		&cli.IntFlag{Name: "scan-concurrency", Value: 4, EnvVars: []string{"FERRY_SCAN_CONCURRENCY"}, Destination: &c.Concurrency, Usage: "ranges scanned at once", Category: "scan"},
		&cli.IntFlag{Name: "scan-rate", EnvVars: []string{"FERRY_SCAN_RATE"}, Destination: &c.Rate, Usage: "keys read per second, all ranges together (0: no cap)", Category: "scan"},
		&cli.IntFlag{Name: "scan-page-size", Value: 1000, EnvVars: []string{"FERRY_SCAN_PAGE_SIZE"}, Destination: &c.PageSize, Usage: "rows per page; a restart re-reads at most one page per range. Cassandra reads whole rows, blobs included, so keep page size x concurrency x mean blob size well under its heap", Category: "scan"},
		&cli.StringFlag{Name: "scan-consistency", Value: "LOCAL_ONE", EnvVars: []string{"FERRY_SCAN_CONSISTENCY"}, Destination: &c.Consistency, Usage: "consistency level of the scan", Category: "scan"},
		&cli.StringFlag{Name: "since", EnvVars: []string{"FERRY_SCAN_SINCE"}, Destination: &c.Since, Usage: "a delta pass: publish only the keys whose blob was written at or after this point, less --since-margin: a pass number (that pass's start), last (the last complete pass's start) or an RFC 3339 time. Every key is still read (Cassandra cannot filter on writetime)", Category: "scan"},
		&cli.DurationFlag{Name: "since-margin", Value: 10 * time.Minute, EnvVars: []string{"FERRY_SCAN_SINCE_MARGIN"}, Destination: &c.SinceMargin, Usage: "taken off --since's point: a blob's writetime comes from the clock of the client that wrote it, which may run behind ferry's", Category: "scan"},
	}
}

// Validate checks the flags.
func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.Scan.Enabled && len(c.Keys.Value()) > 0:
		errs = append(errs, errors.New("--scan and --keys: give one or the other (run two producers for both)"))
	case !c.Scan.Enabled && len(c.Keys.Value()) == 0:
		errs = append(errs, errors.New("--keys: give at least one key list (or - for stdin), or --scan"))
	}
	if c.Scan.Enabled {
		errs = append(errs, c.Scan.validate())
	} else if c.Scan.Since != "" {
		errs = append(errs, errors.New("--since: only with --scan (a delta pass of the table scan)"))
	}
	if c.Parallel < 1 || c.Parallel > 256 {
		errs = append(errs, fmt.Errorf("--parallel %d: must be 1..256", c.Parallel))
	}
	if c.InFlight < 1 || c.InFlight > 4000 {
		errs = append(errs, fmt.Errorf("--in-flight %d: must be 1..4000 (the client stalls beyond)", c.InFlight))
	}
	if c.HighWater < 1 {
		errs = append(errs, fmt.Errorf("--high-water %d: must be at least 1", c.HighWater))
	}
	if err := errors.Join(errs...); err != nil {
		return config.Invalid(err)
	}
	return nil
}

// needsJob says whether the run reads the job file: a scan reads its source table, an s3:// key
// list is read with its destination's endpoint and credentials.
func (c *Config) needsJob() bool {
	if c.Scan.Enabled {
		return true
	}
	for _, k := range c.Keys.Value() {
		if strings.HasPrefix(k, "s3://") {
			return true
		}
	}
	return false
}

// Command is `ferry producer`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "producer",
		Usage: "publish keys from key lists, or a scan of the source table, to the KEYS stream, resuming from checkpoints",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			env, err := service.Open(c.Context, c, service.Options{Name: bus.StageProducer, Settings: cfg.Settings, NeedConfig: cfg.needsJob()})
			if err != nil {
				return err
			}
			defer env.Close()
			st, err := Run(c.Context, env, cfg)
			env.Log.Info("producer finished", "read", st.Lines, "published", st.Published, "duplicates", st.Duplicates,
				"invalid", st.Invalid, "blank", st.Blank, "skipped_files", st.SkippedFiles, "unchanged", st.Unchanged)
			return err
		},
	}
}

// Stats count what a run did.
type Stats struct {
	Lines, Published, Duplicates, Invalid, Blank, SkippedFiles int64
	Unchanged                                                  int64 // keys a delta pass read and left: written before its floor
}

// Run publishes every key list of cfg.Keys, or scans the source table with cfg.Scan. It returns
// when all are published or ctx ends; on ctx end it waits for outstanding acks and saves the
// checkpoints, so a restart resumes where this run stopped.
func Run(ctx context.Context, env *service.Env, cfg Config) (Stats, error) {
	if cfg.Parallel == 0 {
		cfg.Parallel = 1
	}
	kv, err := env.JS.KeyValue(ctx, env.Names.KV)
	if err != nil {
		return Stats{}, fmt.Errorf("producer: kv %s: %w", env.Names.KV, err)
	}
	// Every list or range has its own window; together they stay under the connection's cap.
	readers := cfg.Parallel
	if cfg.Scan.Enabled {
		readers = cfg.Scan.Concurrency
	}
	cfg.InFlight = max(1, min(cfg.InFlight, bus.MaxAsyncPending/max(readers, 1)))
	ackTimeout := cmp.Or(cfg.ackTimeout, pubAckTimeout)
	js, err := keysJetStream(env, ackTimeout)
	if err != nil {
		return Stats{}, err
	}
	s := &sink{env: env, cfg: cfg, js: js, kv: kv, ackTimeout: ackTimeout}
	s.gate = &backlogGate{s: s, high: uint64(cfg.HighWater)}
	p := &tracker{s: s, start: time.Now(), on: cfg.Progress}
	stop := p.run()
	defer stop()
	if cfg.Scan.Enabled {
		if env.Job() == nil {
			return Stats{}, config.Invalid(errors.New("--scan: needs the job file (--config) for the source table"))
		}
		err := s.runScan(ctx, env.Job(), p)
		return s.stats(), err
	}
	var s3 *blobstore.Client
	if cfg.needsJob() {
		if env.Job() == nil {
			return Stats{}, config.Invalid(errors.New("--keys s3://...: needs the job file (--config) for the S3 endpoint"))
		}
		if s3, err = blobstore.New(ctx, env.Job().Destination, cfg.Parallel); err != nil {
			return Stats{}, fmt.Errorf("producer: %w", err)
		}
	}
	var lister keylist.Lister
	var getter keylist.Getter
	if s3 != nil {
		lister, getter = s3, s3
	}
	var _ keylist.VersionGetter = s3 // so that an S3 list's checkpoint has its ETag
	names, err := keylist.Expand(ctx, cfg.Keys.Value(), lister)
	if err != nil {
		return Stats{}, config.Invalid(fmt.Errorf("--keys: %w", err))
	}
	err = s.runFiles(ctx, names, getter, p)
	return s.stats(), err
}

// tracker is what the producer shows of itself: a bar on a terminal, a log line every ten
// seconds otherwise (see shared/progress).
type tracker struct {
	s     *sink
	start time.Time
	on    bool
	files atomic.Pointer[fileProgress]
	scan  atomic.Pointer[scanner]
	// the share of the ring covered when this run started, for the ETA
	startFraction float64
	fractionSet   bool
}

// run starts showing progress; the returned func shows the final status and stops.
func (p *tracker) run() (stop func()) {
	if !p.on {
		return func() {}
	}
	return progress.Start("producer", p.status, progress.Options{}).Stop
}

func (p *tracker) status() progress.Status {
	st := p.s.stats()
	el := time.Since(p.start)
	rate := float64(st.Lines) / max(el.Seconds(), 0.001)
	counts := fmt.Sprintf("published %d, duplicates %d, invalid %d, %.0f keys/s", st.Published, st.Duplicates, st.Invalid, rate)
	if sc := p.scan.Load(); sc != nil {
		f := sc.fraction()
		if !p.fractionSet {
			p.startFraction, p.fractionSet = f, true
		}
		return progress.Status{Done: f, Total: 1, Text: fmt.Sprintf("scan %s pass %d: ranges %d/%d, read %d, %s, ETA %s",
			sc.plan.Table, sc.pass.N, sc.done.Load(), len(sc.cps), st.Lines, counts, progress.ETA(el, p.startFraction, f, 1))}
	}
	if fp := p.files.Load(); fp != nil {
		size, read, base := fp.size.Load(), fp.consumed.Load(), fp.startConsumed.Load()
		return progress.Status{Done: float64(read), Total: float64(size), Text: fmt.Sprintf("lists %d/%d, lines %d, %s, ETA %s",
			fp.finished.Load(), fp.files.Load(), st.Lines, counts, progress.ETA(el, float64(base), float64(read), float64(size)))}
	}
	return progress.Status{Text: counts}
}
