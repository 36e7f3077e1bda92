package fetcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bytesize"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// Config is the fetcher's flags.
type Config struct {
	Concurrency int
	// ConcurrencyFlag names --concurrency in errors: ferry run calls it --fetcher-concurrency.
	ConcurrencyFlag string
	ReadRate        float64 // reads/s, 0 unlimited
	ByteRate        float64 // bytes/s, 0 unlimited
	InlineLimit     int64
	MaxSize         int64
	Adaptive        bool // adaptive concurrency under --concurrency
	Settings        bus.Settings
}

// Flags are the fetcher's flags.
func (c *Config) Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 64, EnvVars: []string{"FERRY_FETCHER_CONCURRENCY"}, Destination: &c.Concurrency, Usage: "concurrent Cassandra reads at most ('ferry throttle --concurrency' lowers it live)"},
		&cli.BoolFlag{Name: "adaptive", EnvVars: []string{"FERRY_ADAPTIVE", "FERRY_FETCHER_ADAPTIVE"}, Destination: &c.Adaptive, Usage: "adapt the reads in flight to Cassandra's latency and timeouts, under --concurrency"},
		&cli.Float64Flag{Name: "read-rate", EnvVars: []string{"FERRY_READ_RATE"}, Destination: &c.ReadRate, Usage: "cap on Cassandra reads/s of this process until 'ferry throttle' sets one for all fetchers (0: none)"},
		bytesize.RateFlag("byte-rate", "FERRY_BYTE_RATE", &c.ByteRate, "cap on blob bytes/s read by this process (200MB, 50MiB) until 'ferry throttle' sets one"),
		bytesize.Flag("inline-limit", 1<<20, "FERRY_INLINE_LIMIT", &c.InlineLimit, "blobs larger than this (1MiB, 512KiB, …) travel through the object store (clamped below the server's max_payload)"),
		bytesize.Flag("max-size", 256<<20, "FERRY_MAX_SIZE", &c.MaxSize, "blobs larger than this (256MiB, 1GiB, …) are dead-lettered as too_large"),
	}, c.Settings.Flags()...)
}

// Validate checks the flags.
func (c *Config) Validate() error {
	var errs []error
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("--%s %d: must be 1..4096", cmp.Or(c.ConcurrencyFlag, "concurrency"), c.Concurrency))
	}
	if c.ReadRate < 0 || c.ByteRate < 0 {
		errs = append(errs, errors.New("--read-rate and --byte-rate must not be negative"))
	}
	if c.InlineLimit < 1024 {
		errs = append(errs, fmt.Errorf("--inline-limit %s: must be at least 1KiB", bytesize.Format(c.InlineLimit)))
	}
	if c.MaxSize < 1 {
		errs = append(errs, fmt.Errorf("--max-size %d: must be positive", c.MaxSize))
	}
	return config.Invalid(errors.Join(errs...))
}

// Command is `ferry fetcher`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "fetcher",
		Usage: "read each key's blob from Cassandra (ordered read targets, with fallback) into BLOBS",
		Flags: append(cfg.Flags(), service.AdvisorFlag()),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			env, err := service.Open(c.Context, c, service.Options{Name: bus.StageFetcher, Settings: cfg.Settings, NeedConfig: true})
			if err != nil {
				return err
			}
			defer env.Close()
			env.StartAdvisorIf(c)
			return Run(c.Context, env, cfg)
		},
	}
}

// Run consumes KEYS until ctx ends.
func Run(ctx context.Context, env *service.Env, cfg Config) error {
	svc, err := New(ctx, env, cfg)
	if err != nil {
		return err
	}
	return svc.Serve(ctx)
}

// New sets the fetcher up: its Cassandra sessions, gate, limits and consumer.
func New(ctx context.Context, env *service.Env, cfg Config) (_ *stage.Service, err error) {
	job := env.Job()
	rules, err := keyrules.Compile(job.Keys)
	if err != nil {
		return nil, err
	}
	var readers []Reader
	var sessions []*cass.Reader
	closeAll := func() {
		for _, r := range sessions {
			r.Close()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	for _, t := range job.Source.Targets {
		r, err := cass.NewReader(ctx, t, cfg.Concurrency)
		if err != nil {
			return nil, fmt.Errorf("fetcher: %w", err)
		}
		readers, sessions = append(readers, r), append(sessions, r)
	}
	objects, err := env.JS.ObjectStore(ctx, env.Names.Objects)
	if err != nil {
		return nil, fmt.Errorf("fetcher: object store %s: %w", env.Names.Objects, err)
	}
	// One gauge per BLOBS partition: keys spread evenly, and a full one refuses its keys' blobs.
	gauges := []Gauge{ObjectsGauge("object store", objects)}
	for _, name := range env.Names.Streams(env.Names.Blobs) {
		blobs, err := env.JS.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("fetcher: stream %s: %w", name, err)
		}
		gauges = append(gauges, StreamGauge(name, blobs))
	}
	// Headers and protocol need room below max_payload.
	inline := int(min(cfg.InlineLimit, env.NC.MaxPayload()-64<<10))
	limits := &limit.Limits{Stage: bus.StageFetcher, RateKind: "reads",
		Rates:   limit.NewRates(cfg.ReadRate, cfg.ByteRate),
		Limiter: limit.NewLimiter(cfg.Concurrency, cfg.Adaptive),
		PerSec:  cfg.ReadRate, BytesPerSec: cfg.ByteRate, Concurrency: cfg.Concurrency}
	f := &Fetcher{
		Names: env.Names, JS: env.JS, Objects: objects, Readers: readers, Rules: rules,
		InlineLimit: inline, MaxSize: cfg.MaxSize, Limits: limits.Rates,
		Gate: StartGate(ctx, 500*time.Millisecond, env.Log, gauges...),
	}
	f.Register(env.Registry)
	if err := limit.WatchThrottle(ctx, env.JS, env.Names, limits, env.Registry, env.Log); err != nil {
		return nil, fmt.Errorf("fetcher: %w", err)
	}
	cons, err := bus.Consumers(ctx, env.JS, env.Names, env.Names.Keys, env.Names.Fetcher)
	if err != nil {
		return nil, fmt.Errorf("fetcher: %w", err)
	}
	env.Log.Info("fetcher started", "targets", len(readers), "concurrency", cfg.Concurrency, "adaptive", cfg.Adaptive, "inline_limit", inline)
	return &stage.Service{Consumers: cons, Handler: f.Handle, Close: closeAll, Options: stage.Options{
		Stage: bus.StageFetcher, Names: env.Names, JS: env.JS, Workers: cfg.Concurrency, Limiter: limits.Limiter,
		ExhaustedReason: bus.ReasonSourceError, Metrics: env.Metrics, Log: env.Log,
		KeyOf: func(in stage.Msg) string { return string(in.Body) },
	}}, nil
}
