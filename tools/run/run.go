// Package run is `ferry run`: every stage in one process, on an embedded JetStream server unless
// --nats is given. It publishes the key lists, waits until every key is verified or
// dead-lettered, and prints a summary. Run it again to resume: the broker holds the progress.
package run

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/fetcher"
	"github.com/ferry-migrate/ferry/producer"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bytesize"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/keylist"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/progress"
	"github.com/ferry-migrate/ferry/shared/runstore"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/shared/stage"
	"github.com/ferry-migrate/ferry/uploader"
	"github.com/ferry-migrate/ferry/verifier"
)

// Config is `ferry run`'s flags.
type Config struct {
	Data     string // the global --data: the embedded server's store folder
	Listen   string // the embedded server's host:port
	Producer producer.Config
	Fetcher  fetcher.Config
	Uploader uploader.Config
	Verifier verifier.Config
	Manifest manifest.Config
	Settings bus.Settings
	Wait     bool // keep running when the work is done (a long-lived single-machine service)
	// NATSSync is --nats-sync-interval; Validate parses it into Sync.
	NATSSync string
	Sync     bus.Sync
	Adaptive bool // adaptive concurrency for the fetcher and the uploader
	// Fused runs read, upload and verify of a key in one handler on KEYS (stage.Fuse): the blob
	// never crosses the broker; trouble after the read hands the key to BLOBS or UPLOADED.
	Fused bool
}

// Flags are the flags of `ferry run`.
func (c *Config) Flags() []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0", EnvVars: []string{"FERRY_LISTEN"}, Destination: &c.Listen, Usage: "address of the embedded NATS server (port 0: any free one); ferry run prints the URL that reaches it (unused with --nats)"},
		&cli.StringFlag{Name: "nats-sync-interval", Value: "always", EnvVars: []string{"FERRY_NATS_SYNC_INTERVAL"}, Destination: &c.NATSSync, Usage: "how the embedded JetStream server puts its store on disk: always (fsync before it confirms; survives a power loss) or an interval such as 2m (nats-server's default; faster, but a host crash loses up to that much confirmed work); unused with --nats"},
		&cli.StringSliceFlag{Name: "keys", Aliases: []string{"k"}, EnvVars: []string{"FERRY_KEYS"}, Destination: &c.Producer.Keys, Usage: "key list(s) to publish first (files, globs, s3://, .gz, .zst); none and no --scan: finish the backlog"},
		&cli.BoolFlag{Name: "progress", Value: true, EnvVars: []string{"FERRY_PROGRESS"}, Destination: &c.Producer.Progress, Usage: "print progress on stderr"},
		&cli.BoolFlag{Name: "wait", EnvVars: []string{"FERRY_WAIT"}, Destination: &c.Wait, Usage: "keep running after the backlog is done, until interrupted"},
		// The services' --concurrency, one a stage; the old names stay, hidden, for a release.
		&cli.IntFlag{Name: "fetcher-concurrency", Value: 64, EnvVars: []string{"FERRY_FETCHER_CONCURRENCY"}, Destination: &c.Fetcher.Concurrency, Usage: "concurrent Cassandra reads (the fetcher's --concurrency)"},
		&cli.IntFlag{Name: "uploader-concurrency", Value: 64, EnvVars: []string{"FERRY_UPLOADER_CONCURRENCY"}, Destination: &c.Uploader.Concurrency, Usage: "concurrent S3 uploads (the uploader's --concurrency)"},
		&cli.IntFlag{Name: "verifier-concurrency", Value: 64, EnvVars: []string{"FERRY_VERIFIER_CONCURRENCY"}, Destination: &c.Verifier.Concurrency, Usage: "concurrent HEAD checks (the verifier's --concurrency)"},
		&cli.IntFlag{Name: "fetchers", Value: 64, Hidden: true, Destination: &c.Fetcher.Concurrency, Usage: "old name of --fetcher-concurrency"},
		&cli.IntFlag{Name: "uploaders", Value: 64, Hidden: true, Destination: &c.Uploader.Concurrency, Usage: "old name of --uploader-concurrency"},
		&cli.IntFlag{Name: "verifiers", Value: 64, Hidden: true, Destination: &c.Verifier.Concurrency, Usage: "old name of --verifier-concurrency"},
		&cli.BoolFlag{Name: "adaptive", EnvVars: []string{"FERRY_ADAPTIVE"}, Destination: &c.Adaptive, Usage: "adapt the fetchers' and uploaders' work in flight to Cassandra's and S3's latency, under --fetcher-concurrency and --uploader-concurrency"},
		&cli.BoolFlag{Name: "fused", Value: true, EnvVars: []string{"FERRY_FUSED"}, Destination: &c.Fused, Usage: "read, upload and verify each key in one step (--fetcher-concurrency of them at once, uploads under --uploader-concurrency and ferry throttle --stage uploader --concurrency) and record it in DONE, without BLOBS and UPLOADED in between; a key that fails after its read goes on through BLOBS or UPLOADED as without it. --fused=false: every key through the streams"},
		&cli.Float64Flag{Name: "read-rate", EnvVars: []string{"FERRY_READ_RATE"}, Destination: &c.Fetcher.ReadRate, Usage: "cap on Cassandra reads/s until 'ferry throttle' sets one (0: none)"},
		bytesize.RateFlag("byte-rate", "FERRY_BYTE_RATE", &c.Fetcher.ByteRate, "cap on blob bytes/s read (200MB, 50MiB)"),
		bytesize.Flag("inline-limit", 1<<20, "FERRY_INLINE_LIMIT", &c.Fetcher.InlineLimit, "blobs larger than this (1MiB, 512KiB, …) travel through the object store"),
		bytesize.Flag("max-size", 256<<20, "FERRY_MAX_SIZE", &c.Fetcher.MaxSize, "blobs larger than this (256MiB, 1GiB, …) are dead-lettered as too_large"),
		bytesize.Flag("multipart-threshold", 16<<20, "FERRY_MULTIPART_THRESHOLD", &c.Uploader.PartSize, "blobs above this many bytes are uploaded in parts of this size"),
		&cli.BoolFlag{Name: "skip-existing", EnvVars: []string{"FERRY_SKIP_EXISTING"}, Destination: &c.Uploader.SkipExisting, Usage: "skip the PUT when S3 already holds the same object"},
		&cli.Float64Flag{Name: "deep-sample", EnvVars: []string{"FERRY_DEEP_SAMPLE"}, Destination: &c.Verifier.Sample, Usage: "fraction of objects read back in full and hashed"},
		&cli.BoolFlag{Name: "restart", EnvVars: []string{"FERRY_PRODUCER_RESTART"}, Destination: &c.Producer.Restart, Usage: "ignore key-list checkpoints; with --scan, start a new scan pass (the passes before stay recorded)"},
	}
	settings := c.Settings.Flags()
	for _, fl := range settings {
		// In one process a deep BLOBS buffer only costs memory: smaller caps, shown in --help.
		if g, ok := fl.(*cli.GenericFlag); ok {
			switch g.Name {
			case "blobs-max-bytes":
				c.Settings.BlobsMaxBytes, g.DefaultText = runBlobsMaxBytes, bytesize.Format(runBlobsMaxBytes)
			case "objects-max-bytes":
				c.Settings.ObjectsMaxBytes, g.DefaultText = runObjectsMaxBytes, bytesize.Format(runObjectsMaxBytes)
			}
		}
	}
	f = append(f, c.Manifest.Flags("manifest-")...)
	return append(append(f, c.Producer.Scan.Flags()...), settings...)
}

// Validate checks the flags.
func (c *Config) Validate() error {
	c.Producer.InFlight, c.Producer.HighWater, c.Producer.Parallel = 1024, 1_000_000, 4
	c.Fetcher.Adaptive, c.Uploader.Adaptive = c.Adaptive, c.Adaptive
	c.Fetcher.ConcurrencyFlag, c.Uploader.ConcurrencyFlag, c.Verifier.ConcurrencyFlag = "fetcher-concurrency", "uploader-concurrency", "verifier-concurrency"
	for _, s := range []*bus.Settings{&c.Producer.Settings, &c.Fetcher.Settings, &c.Uploader.Settings, &c.Verifier.Settings} {
		*s = c.Settings
	}
	errs := []error{c.Fetcher.Validate(), c.Uploader.Validate(), c.Verifier.Validate(), c.Manifest.Validate("manifest-")}
	if _, _, err := listenAddr(cmp.Or(c.Listen, "127.0.0.1:0")); err != nil {
		errs = append(errs, err)
	}
	var err error
	if c.Sync, err = bus.ParseSync(c.NATSSync); err != nil {
		errs = append(errs, fmt.Errorf("--nats-sync-interval %w", err))
	}
	if len(c.Producer.Keys.Value()) > 0 || c.Producer.Scan.Enabled || c.Producer.Scan.Since != "" {
		errs = append(errs, c.Producer.Validate())
	}
	return config.Invalid(errors.Join(errs...))
}

// runBlobsMaxBytes is ferry run's BLOBS cap: at 1 GiB, fetchers run ~18k blobs ahead of the
// uploaders and the process peaks at 1.4 GiB RSS, mostly the embedded server's block cache.
const runBlobsMaxBytes = 128 << 20

// runObjectsMaxBytes is ferry run's cap of the object store of large blobs, for the same reason:
// half the 1 GiB elsewhere, and still room for two blobs at the default --max-size (256 MiB).
const runObjectsMaxBytes = 512 << 20

// Command is `ferry run`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "run",
		Usage: "run every stage in one process (embedded JetStream unless --nats is set) until all keys are verified or dead-lettered",
		Flags: cfg.Flags(),
		Description: "In one process a deep BLOBS buffer only costs memory (the embedded server keeps it\n" +
			"cached), so --blobs-max-bytes defaults to 128MiB here instead of 1GiB, and\n" +
			"--objects-max-bytes to 512MiB.",
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			if err := checkKeyLists(c.Context, cfg.Producer.Keys.Value()); err != nil {
				return err
			}
			url := ""
			if !c.IsSet("nats") || service.RunStore(c) { // the embedded server, as the other commands decide
				cfg.Data = c.String("data")
				// Held until the server is down: no other process may serve this store.
				owner, err := runstore.Lock(cfg.Data)
				if err != nil {
					return err
				}
				defer owner.Close()
				srv, err := startEmbedded(cfg)
				if err != nil {
					return err
				}
				defer srv.Shutdown()
				url = srv.URL()
				if err := owner.Publish(url); err != nil {
					return err
				}
			}
			env, err := service.Open(c.Context, c, service.Options{Name: "run", NatsURL: url, Settings: cfg.Settings, NeedConfig: true})
			if err != nil {
				return err
			}
			defer env.Close()
			if url != "" {
				env.Log.Info("embedded NATS server listening: ferry --data "+cfg.Data+" status (or dlq, report …) reaches this job, now or after the run",
					"url", url, "data", cfg.Data)
			}
			if url != "" && !cfg.Sync.Always {
				env.Log.Warn("the embedded NATS server syncs its store to disk in the background: a power loss or kernel crash of this host loses up to that much confirmed work, keys that then never arrive (--nats-sync-interval always prevents it)",
					"sync_interval", cfg.Sync)
			}
			s, err := All(c.Context, env, cfg)
			if s.Started { // a run that never started has nothing to sum up: its error says why
				s.Print(c.App.Writer)
			}
			return err
		},
	}
}

// stages sets up the fetcher, the uploader and the verifier; fused, the fetcher's runner serves
// all three handlers chained, and the other two serve what it hands to BLOBS and UPLOADED.
func stages(ctx context.Context, env *service.Env, cfg Config) ([]*stage.Service, error) {
	f, err := fetcher.New(ctx, env, cfg.Fetcher)
	if err != nil {
		return nil, err
	}
	u, err := uploader.New(ctx, env, cfg.Uploader)
	if err == nil {
		var v *stage.Service
		if v, err = verifier.New(ctx, env, cfg.Verifier); err == nil {
			if cfg.Fused {
				fellBack := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_run_fused_fallbacks_total",
					Help: "keys the fused path handed to a stage's stream after that stage failed on them"}, []string{"stage"})
				prometheus.WrapRegistererWith(prometheus.Labels{"job": env.Names.Job}, env.Registry).MustRegister(fellBack)
				f.Handler = stage.Fuse(func(st string, err error) {
					fellBack.WithLabelValues(st).Inc()
					env.Log.Debug("fused path: handed on to the stage's stream", "stage", st, "err", err)
				}, f, u, v)
			}
			return []*stage.Service{f, u, v}, nil
		}
	}
	if f.Close != nil {
		f.Close()
	}
	return nil, err
}

// startEmbedded starts the embedded JetStream server in <--data>/nats, syncing as
// --nats-sync-interval says.
func startEmbedded(cfg Config) (*bus.Embedded, error) {
	dir, err := filepath.Abs(runstore.NATSDir(cfg.Data))
	if err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	host, port, err := listenAddr(cmp.Or(cfg.Listen, "127.0.0.1:0"))
	if err != nil {
		return nil, err
	}
	return bus.StartEmbeddedAt(dir, cfg.Sync, host, port)
}

// listenAddr reads --listen: host:port, port 0 for any free one.
func listenAddr(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err == nil && host == "" {
		err = errors.New("no host")
	}
	var port int
	if err == nil {
		port, err = strconv.Atoi(p)
	}
	if err != nil || port < 0 || port > 65535 {
		return "", 0, config.Invalid(fmt.Errorf("--listen %q: want host:port, such as 127.0.0.1:4222 (port 0: any free one)", s))
	}
	if port == 0 {
		port = -1 // nats-server's "random port"; its 0 means 4222
	}
	return host, port, nil
}

// checkKeyLists checks the local key lists of --keys (paths and glob patterns) before anything
// starts: a missing file is a usage error said first, not a producer failure after the stages
// came up. S3 lists are the producer's to check: that needs the bucket's client.
func checkKeyLists(ctx context.Context, names []string) error {
	var local []string
	for _, n := range names {
		if _, _, isS3 := keylist.ParseS3(n); !isS3 && n != keylist.Stdin {
			local = append(local, n)
		}
	}
	if _, err := keylist.Expand(ctx, local, nil); err != nil {
		return config.Invalid(fmt.Errorf("--keys: %w", err))
	}
	return nil
}

// Summary is what a run did.
type Summary struct {
	Started            bool // the stages came up: there is something to sum up
	Job                string
	Verified           uint64 // keys in DONE: verified in S3, over all runs of the job
	VerifiedThisRun    uint64
	DeadLetters        deadletter.Counts
	Backlog            uint64 // keys still in the work queues (interrupted runs)
	Elapsed            time.Duration
	Published, Invalid int64
}

// Print writes the summary.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "\nferry run, job %s: %d keys verified in S3 (%d in this run), %d dead-lettered, %d still in the pipeline\n",
		s.Job, s.Verified, s.VerifiedThisRun, s.DeadLetters.Total(), s.Backlog)
	rate := float64(s.VerifiedThisRun) / max(s.Elapsed.Seconds(), 0.001)
	fmt.Fprintf(w, "elapsed %s, %.0f files/s verified; producer published %d keys, %d invalid lines\n",
		s.Elapsed.Round(time.Millisecond), rate, s.Published, s.Invalid)
	if s.DeadLetters.Total() > 0 {
		fmt.Fprintln(w, "dead letters (ferry dlq ls | export | replay):")
		s.DeadLetters.Print(w)
	}
}

// All runs every stage in this process until the key lists are published and every work queue is empty, or ctx
// ends, or a stage fails.
func All(ctx context.Context, env *service.Env, cfg Config) (Summary, error) {
	start := time.Now()
	sum := Summary{Job: env.Names.Job}
	before, err := manifest.Verified(ctx, env.JS, env.Names)
	if err != nil {
		return sum, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	stageErr := func(name string, err error) {
		if err != nil && !errors.Is(err, context.Canceled) {
			cancel(fmt.Errorf("%s: %w", name, err))
		}
	}
	svcs, err := stages(ctx, env, cfg)
	if err != nil {
		return sum, err
	}
	sum.Started = true
	for _, s := range svcs {
		wg.Go(func() { stageErr(s.Options.Stage, s.Serve(ctx)) })
	}
	wg.Go(func() { stageErr("manifest", manifest.Run(ctx, env, cfg.Manifest)) })
	env.StartAdvisor(ctx)

	prog := newRunProgress(env, before, start, cfg.Producer.Progress)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		if len(cfg.Producer.Keys.Value()) == 0 && !cfg.Producer.Scan.Enabled {
			return
		}
		pcfg := cfg.Producer
		pcfg.Progress = false // one bar for the whole run
		st, err := producer.Run(ctx, env, pcfg)
		sum.Published, sum.Invalid = st.Published, st.Invalid
		stageErr("producer", err)
	}()

	err = waitDone(ctx, env, produced, cfg.Wait, prog.sample)
	prog.stop()
	cancel(nil)
	wg.Wait()
	<-produced
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	// Fresh context: the summary must print after an interrupt too.
	qctx, qcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer qcancel()
	sum.Elapsed = time.Since(start)
	if v, err := manifest.Verified(qctx, env.JS, env.Names); err == nil {
		sum.Verified, sum.VerifiedThisRun = v, v-before
	}
	sum.DeadLetters, _ = deadletter.Count(qctx, env.JS, env.Names)
	sum.Backlog, _ = backlog(qctx, env)
	return sum, err
}

// waitDone returns once the producer is done and the work queues have stayed empty for a moment.
func waitDone(ctx context.Context, env *service.Env, produced <-chan struct{}, wait bool, sample func(context.Context)) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	empty := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		sample(ctx)
		select {
		case <-produced:
		default:
			continue
		}
		n, err := backlog(ctx, env)
		if err != nil {
			continue // transient; the stages report real trouble
		}
		if n > 0 || wait {
			empty = 0
			continue
		}
		if empty++; empty >= 3 {
			return nil
		}
	}
}

// backlog is the number of messages in the job's work queues.
func backlog(ctx context.Context, env *service.Env) (uint64, error) {
	var total uint64
	for _, base := range []string{env.Names.Keys, env.Names.Blobs, env.Names.Uploaded} {
		q, err := service.WorkQueue(ctx, env.JS, env.Names, base)
		if err != nil {
			return 0, err
		}
		total += q.Msgs
	}
	s, err := env.JS.Stream(ctx, env.Names.Advisories)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", env.Names.Advisories, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info %s: %w", env.Names.Advisories, err)
	}
	return total + info.State.Msgs, nil
}

// runProgress shows the whole pipeline's state (one bar: the producer's own is off in ferry run),
// from counts it samples in NATS every 2 seconds.
type runProgress struct {
	env    *service.Env
	before uint64 // DONE when the run began
	start  time.Time
	rep    *progress.Reporter
	last   time.Time

	mu                                    sync.Mutex
	published, verified, dead, inPipeline uint64
}

func newRunProgress(env *service.Env, before uint64, start time.Time, on bool) *runProgress {
	p := &runProgress{env: env, before: before, start: start}
	if on {
		p.rep = progress.Start("ferry run", p.status, progress.Options{})
	}
	return p
}

// sample reads the counts, at most every 2 seconds.
func (p *runProgress) sample(ctx context.Context) {
	if p.rep == nil || time.Since(p.last) < 2*time.Second {
		return
	}
	p.last = time.Now()
	done, err := manifest.Verified(ctx, p.env.JS, p.env.Names)
	if err != nil {
		return
	}
	n, _ := backlog(ctx, p.env)
	dead, _ := deadletter.Count(ctx, p.env.JS, p.env.Names)
	var published uint64
	if q, err := service.WorkQueue(ctx, p.env.JS, p.env.Names, p.env.Names.Keys); err == nil {
		published = q.LastSeq
	}
	p.mu.Lock()
	p.published, p.verified, p.dead, p.inPipeline = published, done, dead.Total(), n
	p.mu.Unlock()
}

func (p *runProgress) status() progress.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	el := time.Since(p.start)
	finished := float64(p.verified + p.dead)
	total := finished + float64(p.inPipeline)
	rate := float64(p.verified-min(p.before, p.verified)) / max(el.Seconds(), 0.001)
	return progress.Status{Done: finished, Total: total, Text: fmt.Sprintf(
		"published %d, verified %d, dead-lettered %d, in the pipeline %d, %.0f files/s, ETA %s",
		p.published, p.verified, p.dead, p.inPipeline, rate, progress.ETA(el, float64(p.before), finished, total))}
}

func (p *runProgress) stop() {
	if p.rep != nil {
		p.last = time.Time{}
		p.sample(context.Background())
		p.rep.Stop()
	}
}
