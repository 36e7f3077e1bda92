package prune

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/tools/diff"
)

// Config is `ferry prune`'s flags.
type Config struct {
	Out         string
	Tmp         string
	Mem         string
	Delete      bool
	Quarantine  string
	MaxDelete   string
	Consistency string
	Targets     cli.StringSlice
	Ranges      int
	Concurrency int
	PageSize    int
	Retries     int
	Listers     int
	Workers     int
	ClockSkew   time.Duration
	CheckAll    bool

	mem       int64
	maxDelete Threshold
}

// Flags are the command's flags.
func (c *Config) Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "out", Value: ".", EnvVars: []string{"FERRY_PRUNE_OUT"}, Destination: &c.Out, Usage: "folder for " + FileCandidates + ", " + FileMissing + ", " + FileStale + ", " + FileRecent + " and " + FileInvalid + " (`DIR`)"},
		&cli.BoolFlag{Name: "delete", EnvVars: []string{"FERRY_PRUNE_DELETE"}, Destination: &c.Delete, Usage: "delete (or, with --quarantine, move) the objects only in S3; without it prune is a dry run"},
		&cli.StringFlag{Name: "quarantine", EnvVars: []string{"FERRY_PRUNE_QUARANTINE"}, Destination: &c.Quarantine, Usage: "with --delete, move each object to `PREFIX` + its key (server-side copy, then delete) instead of deleting it; objects under PREFIX are never candidates"},
		&cli.StringFlag{Name: "max-delete", Value: DefaultMaxDelete, EnvVars: []string{"FERRY_PRUNE_MAX_DELETE"}, Destination: &c.MaxDelete, Usage: "refuse the whole run when more objects than this would go: a count (1000) or a percentage of the objects listed (0.1%)"},
		&cli.StringFlag{Name: "consistency", EnvVars: []string{"FERRY_PRUNE_CONSISTENCY"}, Destination: &c.Consistency, Usage: "read level of the key scan: the job file's prune.consistency (QUORUM) or stronger, never weaker"},
		&cli.StringSliceFlag{Name: "target", EnvVars: []string{"FERRY_PRUNE_TARGET"}, Destination: &c.Targets, Usage: "read target whose table is scanned (repeat for several); default: every target (a table the fetcher can fall back to holds source keys too)"},
		&cli.IntFlag{Name: "ranges", EnvVars: []string{"FERRY_PRUNE_RANGES"}, Destination: &c.Ranges, Usage: "token ranges per table; 0: 4 per node token, at least 64"},
		&cli.IntFlag{Name: "scan-concurrency", Value: 4, EnvVars: []string{"FERRY_PRUNE_SCAN_CONCURRENCY"}, Destination: &c.Concurrency, Usage: "token ranges read at once"},
		&cli.IntFlag{Name: "page-size", Value: 5000, EnvVars: []string{"FERRY_PRUNE_PAGE_SIZE"}, Destination: &c.PageSize, Usage: "rows per page of the key scan"},
		&cli.IntFlag{Name: "retries", Value: 10, EnvVars: []string{"FERRY_PRUNE_RETRIES"}, Destination: &c.Retries, Usage: "re-reads of a failed page before the scan, and the run, fail"},
		&cli.IntFlag{Name: "listers", Value: 16, EnvVars: []string{"FERRY_PRUNE_LISTERS"}, Destination: &c.Listers, Usage: "concurrent ListObjectsV2 calls over disjoint key ranges"},
		&cli.IntFlag{Name: "workers", Value: 16, EnvVars: []string{"FERRY_PRUNE_WORKERS"}, Destination: &c.Workers, Usage: "concurrent HEADs (the stale check) and deletions"},
		&cli.DurationFlag{Name: "clock-skew", Value: time.Minute, EnvVars: []string{"FERRY_PRUNE_CLOCK_SKEW"}, Destination: &c.ClockSkew, Usage: "objects modified after the scan start less this are never deleted (S3's clock against this host's)"},
		&cli.BoolFlag{Name: "check-all", EnvVars: []string{"FERRY_PRUNE_CHECK_ALL"}, Destination: &c.CheckAll, Usage: "check every key's object for staleness (a HEAD per key), not only those written since pass 1 began less the largest --since-margin (at least 10m): catches rows rewritten with USING TIMESTAMP in the past"},
		&cli.StringFlag{Name: "mem", Value: "512MiB", EnvVars: []string{"FERRY_PRUNE_MEM"}, Destination: &c.Mem, Usage: "memory cap of the sort (spills to --tmp beyond it)"},
		&cli.StringFlag{Name: "tmp", Value: os.TempDir(), EnvVars: []string{"FERRY_PRUNE_TMP"}, Destination: &c.Tmp, Usage: "folder for the sort's spill files (`DIR`); removed at the end"},
	}
}

// Validate checks the flags against the job file.
func (c *Config) Validate(job *config.Job) error {
	var errs []error
	var err error
	if c.maxDelete, err = ParseThreshold(c.MaxDelete); err != nil {
		errs = append(errs, err)
	}
	if c.mem, err = diff.ParseSize(c.Mem); err != nil {
		errs = append(errs, fmt.Errorf("--mem: %w", err))
	} else if c.mem < 32<<20 {
		errs = append(errs, fmt.Errorf("--mem %s: must be at least 32MiB", c.Mem))
	}
	for _, d := range []struct{ flag, dir string }{{"--out", c.Out}, {"--tmp", c.Tmp}} {
		if st, err := os.Stat(d.dir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("%s %q: not a folder", d.flag, d.dir))
		}
	}
	if err := c.checkConsistency(job.Prune.Consistency); err != nil {
		errs = append(errs, err)
	}
	if c.Quarantine != "" {
		if strings.HasPrefix(c.Quarantine, "/") || strings.Contains(c.Quarantine, "//") || strings.ContainsAny(c.Quarantine, "\n\x00") {
			errs = append(errs, fmt.Errorf("--quarantine %q: want a key prefix such as pruned/ (no leading slash)", c.Quarantine))
		} else if err := CheckQuarantine(Prefix(job.Keys.Template), c.Quarantine); err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range []struct {
		flag string
		n    int
		lo   int
		hi   int
	}{{"--scan-concurrency", c.Concurrency, 1, 256}, {"--page-size", c.PageSize, 1, 100_000}, {"--retries", c.Retries, 1, 1000},
		{"--listers", c.Listers, 1, 1024}, {"--workers", c.Workers, 1, 1024}, {"--ranges", c.Ranges, 0, 1 << 20}} {
		if v.n < v.lo || v.n > v.hi {
			errs = append(errs, fmt.Errorf("%s %d: must be %d..%d", v.flag, v.n, v.lo, v.hi))
		}
	}
	if c.ClockSkew < 0 {
		errs = append(errs, fmt.Errorf("--clock-skew %s: must not be negative", c.ClockSkew))
	}
	return config.Invalid(errors.Join(errs...))
}

// checkConsistency sets c.Consistency to the level to read at: the job's, or --consistency when it
// is at least as strong. A weaker --consistency is refused: a key that a lagging replica lacks
// would look deleted.
func (c *Config) checkConsistency(required string) error {
	if required == "" {
		required = config.DefaultPruneConsistency
	}
	if c.Consistency == "" {
		c.Consistency = required
		return nil
	}
	ok, err := cass.AtLeast(c.Consistency, required)
	if err != nil {
		return fmt.Errorf("--consistency: %w", err)
	}
	if !ok || strings.EqualFold(c.Consistency, "ANY") {
		return fmt.Errorf("--consistency %s is weaker than the job file's prune.consistency %s: prune reads at least that (a key a replica missed would look deleted); raise it in the job file's prune: section to change it", c.Consistency, required)
	}
	c.Consistency = strings.ToUpper(c.Consistency)
	return nil
}

// Command is `ferry prune`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "prune",
		Usage: "delete the objects whose source key no longer exists (a dry run unless --delete), and prove the cut-over",
		Description: "ferry prune scans every key of the source (token ranges, at the job file's prune.consistency,\n" +
			"QUORUM by default), lists the bucket under the key rules' prefix, and compares them by S3\n" +
			"key. It writes " + FileCandidates + " (objects only in S3: the candidates), " + FileMissing + ",\n" +
			FileStale + " (objects older than their source row) and " + FileRecent + " to --out, stores the\n" +
			"proof summary for ferry report, and with --delete deletes the candidates (or moves them under\n" +
			"--quarantine), recording each in FERRY_<job>_PRUNED. A scan that did not finish, or more\n" +
			"candidates than --max-delete, deletes nothing. Run it as a NATS user that may create streams.",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return config.Invalid(fmt.Errorf("prune takes no arguments (got %s)", strings.Join(c.Args().Slice(), " ")))
			}
			job, err := config.Load(c.String("config"))
			if err != nil {
				return err
			}
			if err := cfg.Validate(job); err != nil {
				return err
			}
			return run(c.Context, c, job, cfg)
		},
	}
}

func run(ctx context.Context, c *cli.Context, job *config.Job, cfg Config) error {
	debug.SetMemoryLimit(cfg.mem)
	nc, js, n, err := service.ConnectJob(ctx, c, "prune")
	if err != nil {
		return err
	}
	defer nc.Close()
	keys, err := service.JobStream(ctx, js, n, n.Keys)
	if err != nil {
		return err
	}
	if err := bus.EnsurePruned(ctx, js, n, keys.CachedInfo().Config.Replicas); err != nil { // as many replicas as the job's
		return err
	}
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		return fmt.Errorf("kv %s: %w", n.KV, err)
	}
	rules, err := keyrules.Compile(job.Keys)
	if err != nil {
		return config.Invalid(err)
	}
	client, err := blobstore.New(ctx, job.Destination, max(cfg.Listers, cfg.Workers))
	if err != nil {
		return err
	}
	if err := client.Check(ctx); err != nil {
		return err
	}
	src, err := openSource(ctx, job, ScanConfig{Targets: cfg.Targets.Value(), Consistency: cfg.Consistency, Ranges: cfg.Ranges,
		Concurrency: cfg.Concurrency, PageSize: cfg.PageSize, Retries: cfg.Retries, Recheck: cfg.Delete})
	if err != nil {
		if !config.IsInvalid(err) { // the source is unreachable: no proof now
			p := Proof{Time: time.Now().UTC(), Consistency: cfg.Consistency, Required: job.Prune.Consistency, DryRun: !cfg.Delete, Error: err.Error()}
			err = errors.Join(err, SaveProof(context.WithoutCancel(ctx), kv, p))
		}
		return err
	}
	defer src.Close()
	var targets []config.Target
	for _, t := range src.tables {
		targets = append(targets, t.target)
	}
	floor, err := firstPassStart(ctx, kv, targets)
	if err != nil {
		return err
	}
	margin, err := largestMargin(ctx, kv, targets)
	if err != nil {
		return err
	}
	if cfg.CheckAll {
		floor = 0
	}
	excl, err := quarantines(ctx, kv)
	if err != nil {
		return err
	}
	if cfg.Delete {
		if err := addQuarantine(ctx, kv, excl, cfg.Quarantine); err != nil {
			return err
		}
	}
	// The manifests' prefix (when they share the bucket) holds no key's object: the rules refuse it.
	excl = append(excl, job.Keys.Reserved...)
	o := Options{Out: cfg.Out, Tmp: cfg.Tmp, Mem: cfg.mem, Prefix: Prefix(job.Keys.Template), Quarantine: cfg.Quarantine,
		Exclude: excl, Delete: cfg.Delete, MaxDelete: cfg.maxDelete, Listers: cfg.Listers, Workers: cfg.Workers,
		ClockSkew: cfg.ClockSkew, Floor: floor, Margin: margin, Bucket: job.Destination.Bucket, Log: slog.Warn}
	start := time.Now()
	res, err := Run(ctx, src, bucketOf(client), rules, natsRecorder{js: js, n: n}, o)
	if res == nil {
		// The scan or the listing did not finish: the last proof is replaced by one that says
		// so, so an older PROVEN does not stand for the bucket as it is now.
		p := Proof{Time: time.Now().UTC(), ScanStart: start.UTC(), Consistency: cfg.Consistency, Required: job.Prune.Consistency,
			Tables: src.Tables(), DryRun: !cfg.Delete, Quarantine: cfg.Quarantine, Error: err.Error()}
		if serr := SaveProof(context.WithoutCancel(ctx), kv, p); serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	}
	p := proofOf(res, o, cfg.Consistency, job.Prune.Consistency, src.Tables())
	if un := src.Unscanned(job); len(un) > 0 {
		// A key only those targets hold is a source key the scan did not see: no proof.
		p.Complete = false
		p.Error = fmt.Sprintf("read targets not scanned: %s (--target, or a custom query prune cannot enumerate)", strings.Join(un, ", "))
	}
	if serr := SaveProof(context.WithoutCancel(ctx), kv, p); serr != nil {
		err = errors.Join(err, serr)
	}
	printResult(res, o, p, err)
	return err
}

// printResult says what the run found and did, in a few lines.
func printResult(res *Result, o Options, p Proof, err error) {
	fmt.Printf("scanned %s source keys (%s), listed %s objects of s3://%s/%s in %s\n", num(res.SourceKeys), strings.Join(p.Tables, ", "),
		num(res.Objects), o.Bucket, o.Prefix, res.ScanEnd.Sub(res.ScanStart).Round(time.Second))
	fmt.Printf("only in S3: %s (%s); missing in S3: %s (%s); stale: %s of %s checked (%s); written during the scan: %s\n",
		num(res.OnlyInS3), filepath.Join(o.Out, FileCandidates), num(res.Missing), filepath.Join(o.Out, FileMissing),
		num(res.Stale), num(res.Checked), filepath.Join(o.Out, FileStale), num(res.Recent))
	if res.Foreign > 0 {
		fmt.Printf("not ferry's (never deleted): %s (%s)\n", num(res.Foreign), filepath.Join(o.Out, FileForeign))
	}
	switch {
	case errors.Is(err, ErrRefused):
		fmt.Printf("refused: nothing deleted (--max-delete %s: %s)\n", o.MaxDelete, num(res.Limit))
	case !o.Delete:
		fmt.Printf("dry run: nothing deleted; --delete would %s %s objects (--max-delete %s: %s)\n", verb(o), num(res.OnlyInS3), o.MaxDelete, num(res.Limit))
	default:
		fmt.Printf("deleted %s, quarantined %s, already gone %s, rewritten since the scan (kept) %s, live at re-check (kept) %s, failed %s\n",
			num(res.Deleted), num(res.Quarantined), num(res.Gone), num(res.Changed), num(res.Live), num(res.Failed))
	}
	if p.Proven() {
		fmt.Println("cut-over PROVEN: the source key set and the bucket listing are equal and no object is stale")
	} else {
		fmt.Printf("cut-over not proven: %s\n", p.Why())
	}
}

func verb(o Options) string {
	if o.Quarantine != "" {
		return "move to " + o.Quarantine
	}
	return "delete"
}

func num(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Prefix is the literal start of the key template, before its first placeholder: every S3 key
// the rules make begins with it, so only objects under it can be the job's.
func Prefix(template string) string {
	if i := strings.IndexByte(template, '{'); i >= 0 {
		return template[:i]
	}
	return template
}

// clientBucket adapts *blobstore.Client to Bucket.
type clientBucket struct{ *blobstore.Client }

func bucketOf(c *blobstore.Client) Bucket { return clientBucket{c} }

// Delete deletes key only while its ETag is etag (If-Match).
func (b clientBucket) Delete(ctx context.Context, key, etag string) error {
	return b.Client.DeleteIf(ctx, key, etag)
}

func (b clientBucket) Ranges(ctx context.Context, prefix string) ([][2]string, error) {
	return diff.ListRanges(ctx, b.Client, b.Client.Bucket(), prefix)
}
