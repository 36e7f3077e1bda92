// Package service is what every ferry service opens at start: the global flags, the logger, the
// job's configuration, the NATS connection with the job's streams set up, the metrics registry and
// the readiness checks served on --metrics-addr, and the profiler on --pprof-addr.
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/orphan"
	"github.com/ferry-migrate/ferry/shared/runstore"
	"github.com/ferry-migrate/ferry/shared/stage"
	"github.com/ferry-migrate/ferry/shared/telemetry"
)

// GlobalFlags are the flags of the ferry app itself, shared by every subcommand.
func GlobalFlags() []cli.Flag {
	return []cli.Flag{
		&natsFlag{StringFlag: &cli.StringFlag{Name: "nats", Value: "nats://127.0.0.1:4222", EnvVars: []string{NATSEnv}, Usage: "NATS server URL (JetStream enabled); a cluster's servers separated by commas; a user, password or token in it only through $" + NATSEnv + " (refused on the command line, which ps shows)"}},
		&cli.StringFlag{Name: "nats-creds", EnvVars: []string{"FERRY_NATS_CREDS"}, Category: natsCategory, Usage: "NATS user credentials file (JWT and NKEY seed)"},
		&cli.StringFlag{Name: "nats-nkey", EnvVars: []string{"FERRY_NATS_NKEY"}, Category: natsCategory, Usage: "NATS NKEY seed file"},
		&cli.StringFlag{Name: "nats-user", EnvVars: []string{"FERRY_NATS_USER"}, Category: natsCategory, Usage: "NATS user; its password from $FERRY_NATS_PASSWORD or --nats-password-file"},
		&cli.StringFlag{Name: "nats-password-file", EnvVars: []string{"FERRY_NATS_PASSWORD_FILE"}, Category: natsCategory, Usage: "file holding the --nats-user password (first line)"},
		&cli.StringFlag{Name: "nats-ca", EnvVars: []string{"FERRY_NATS_CA"}, Category: natsCategory, Usage: "PEM file of the CAs that sign the NATS server certificate (TLS)"},
		&cli.StringFlag{Name: "nats-cert", EnvVars: []string{"FERRY_NATS_CERT"}, Category: natsCategory, Usage: "PEM client certificate for NATS (mutual TLS), with --nats-key"},
		&cli.StringFlag{Name: "nats-key", EnvVars: []string{"FERRY_NATS_KEY"}, Category: natsCategory, Usage: "PEM private key of --nats-cert"},
		&cli.BoolFlag{Name: "nats-allow-plaintext", EnvVars: []string{"FERRY_NATS_ALLOW_PLAINTEXT"}, Category: natsCategory, Usage: "a password or token sent to a NATS server that is not loopback without TLS is deliberate: no warning at start"},
		&cli.StringFlag{Name: "nats-inbox-prefix", Value: bus.DefaultInboxPrefix, EnvVars: []string{"FERRY_NATS_INBOX_PREFIX"}, Category: natsCategory, Usage: "subject prefix of the replies this process receives, e.g. _INBOX_fetcher, so that the server can keep each service's replies to its own user"},
		&cli.StringFlag{Name: "data", Value: "ferry-data", EnvVars: []string{DataEnv}, Usage: "ferry run's store folder; given to any other command, it reaches that run's job there, running or stopped (--nats on the command line wins, then --data; in the environment, FERRY_NATS wins)"},
		&cli.StringFlag{Name: "job", Value: "default", EnvVars: []string{"FERRY_JOB"}, Usage: "job name: letters, digits, '_' and '-'; names the streams"},
		&cli.StringFlag{Name: "config", Value: "ferry.yaml", EnvVars: []string{"FERRY_CONFIG"}, Usage: "job file: source read targets, destination, key rules"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"FERRY_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"FERRY_LOG_FORMAT"}, Usage: "text or json"},
		&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"FERRY_METRICS_ADDR"}, Usage: "serve Prometheus /metrics, /healthz and /readyz (nothing else) on this address (e.g. 127.0.0.1:9100); empty: off"},
		&cli.StringFlag{Name: "pprof-addr", EnvVars: []string{"FERRY_PPROF_ADDR"}, Usage: "serve the Go profiler /debug/pprof/ on this address, e.g. 127.0.0.1:6060 (profiles of at most 60 s); it shows goroutine stacks, the heap and the command line: keep it on loopback (a warning otherwise); empty: off"},
	}
}

// NATSEnv holds the --nats URL. A URL with credentials is taken from it, never from the command
// line.
const NATSEnv = "FERRY_NATS"

// ErrCredentialsInArgs: a --nats URL on the command line holds a user, password or token.
var ErrCredentialsInArgs = errors.New("credentials in a URL on the command line, where ps and /debug/pprof/cmdline show them")

// natsFlag is --nats: a string flag that knows whether its value was given on the command line
// (which ps and /debug/pprof/cmdline show) rather than through $FERRY_NATS. urfave/cli applies the
// environment as the flag's default and sets a command-line value through its flag.Value, so a
// Set on that Value is a command-line value.
type natsFlag struct {
	*cli.StringFlag
	onCommandLine bool
}

func (f *natsFlag) Apply(set *flag.FlagSet) error {
	f.onCommandLine = false
	if err := f.StringFlag.Apply(set); err != nil {
		return err
	}
	for _, name := range f.Names() {
		if fl := set.Lookup(name); fl != nil {
			fl.Value = &setSpy{Value: fl.Value, set: &f.onCommandLine}
		}
	}
	return nil
}

// setSpy records that Set was called.
type setSpy struct {
	flag.Value
	set *bool
}

func (s *setSpy) Set(v string) error {
	*s.set = true
	return s.Value.Set(v)
}

func (s *setSpy) Get() any { return s.Value.String() }

// NATSURL returns --nats, checked: it parses as NATS URLs (bus.CheckURLs), and holds no user,
// password or token unless it came from $FERRY_NATS. Errors are usage errors (exit 2) that name
// the URL redacted.
func NATSURL(c *cli.Context) (string, error) {
	url := c.String("nats")
	onCommandLine := c.IsSet("nats") && url != os.Getenv(NATSEnv) // an app without natsFlag (tests)
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil {
			continue
		}
		for _, fl := range ctx.Command.Flags {
			if f, ok := fl.(*natsFlag); ok {
				onCommandLine = f.onCommandLine
			}
		}
	}
	if onCommandLine && strings.Contains(url, "@") {
		return "", config.Invalid(fmt.Errorf("--nats %s: %w: put the URL in $%s instead, or use --nats-creds, --nats-nkey, or --nats-user with $%s or --nats-password-file",
			bus.Redact(url), ErrCredentialsInArgs, NATSEnv, PasswordEnv))
	}
	if err := bus.CheckURLs(url); err != nil {
		return "", err
	}
	return url, nil
}

const natsCategory = "NATS connection (secrets only in files or the environment)"

// PasswordEnv holds the --nats-user password. There is no password flag: a command line shows in
// ps and shell history.
const PasswordEnv = "FERRY_NATS_PASSWORD"

// NATSClient reads the NATS authentication and TLS flags of c; the password comes from
// $FERRY_NATS_PASSWORD or --nats-password-file.
func NATSClient(c *cli.Context) (bus.Client, error) {
	cl := bus.Client{Creds: c.String("nats-creds"), NKey: c.String("nats-nkey"), User: c.String("nats-user"),
		Password: os.Getenv(PasswordEnv), CA: c.String("nats-ca"), Cert: c.String("nats-cert"), Key: c.String("nats-key"),
		InboxPrefix: c.String("nats-inbox-prefix")}
	if f := c.String("nats-password-file"); f != "" {
		if cl.Password != "" {
			return cl, config.Invalid(fmt.Errorf("--nats-password-file and $%s: give one", PasswordEnv))
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return cl, config.Invalid(fmt.Errorf("--nats-password-file: %w", err))
		}
		cl.Password, _, _ = strings.Cut(string(b), "\n")
		cl.Password = strings.TrimRight(cl.Password, "\r")
		if cl.Password == "" {
			return cl, config.Invalid(fmt.Errorf("--nats-password-file %s: empty", f))
		}
	}
	return cl, nil
}

// Connect connects to the --nats servers with the authentication and TLS flags of c, without
// setting anything up: for commands that only read a job or delete it.
func Connect(ctx context.Context, c *cli.Context, name string) (*nats.Conn, jetstream.JetStream, error) {
	return connect(ctx, c, name)
}

func connect(ctx context.Context, c *cli.Context, name string) (*nats.Conn, jetstream.JetStream, error) {
	if RunStore(c) {
		return reachRun(ctx, c.String("data"), name)
	}
	url, err := NATSURL(c)
	if err != nil {
		return nil, nil, err
	}
	cl, err := NATSClient(c)
	if err != nil {
		return nil, nil, err
	}
	opts, err := cl.Options()
	if err != nil {
		return nil, nil, config.Invalid(err)
	}
	nc, js, err := bus.Connect(ctx, url, name, opts...)
	if err != nil {
		return nil, nil, err
	}
	// Warn, not refuse, as for the job file's settings: see shared/config/plaintext.go.
	if r := bus.InClear(nc, cl.User != "" || strings.Contains(url, "@")); r != "" && !c.Bool("nats-allow-plaintext") {
		config.WarnPlaintext(r)
	}
	return nc, js, nil
}

// DataEnv is the environment variable of --data.
const DataEnv = "FERRY_DATA"

// RunStore says whether a command reaches a ferry run's store (--data) rather than --nats: the
// one given on the command line, else the one set in the environment; --nats when both or neither.
func RunStore(c *cli.Context) bool {
	onLine := func(flag, env string) bool { return c.IsSet(flag) && c.String(flag) != os.Getenv(env) }
	switch {
	case onLine("nats", NATSEnv):
		return false
	case onLine("data", DataEnv):
		return true
	}
	return os.Getenv(DataEnv) != "" && os.Getenv(NATSEnv) == ""
}

// reachRun connects to the job of the ferry run whose store folder is dir: through its server
// while it runs, else through one started on its store until Cleanup. Neither needs credentials:
// both listen on loopback only.
func reachRun(ctx context.Context, dir, name string) (*nats.Conn, jetstream.JetStream, error) {
	url, stop, err := runstore.Reach(dir)
	if err != nil {
		return nil, nil, err
	}
	cleanupMu.Lock()
	cleanups = append(cleanups, stop)
	cleanupMu.Unlock()
	return bus.Connect(ctx, url, name)
}

var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

// Cleanup shuts down what this process started to reach a ferry run's store (--data). main
// calls it before exiting; an embedded server cut off by the exit would leave its store to be
// recovered, as after a crash.
func Cleanup() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	for _, stop := range cleanups {
		stop()
	}
	cleanups = nil
}

// Env is an open service environment. Close it when done.
type Env struct {
	Names    bus.Names
	NC       *nats.Conn
	JS       jetstream.JetStream
	Registry *prometheus.Registry
	Metrics  *stage.Metrics // the stage runner's, one set per process
	Log      *slog.Logger
	// Checks are the readiness checks of /readyz and ferry_ready: "nats", "cassandra" (the read
	// targets this process uses, if any), "s3" (the buckets it uses, if any), and any added with
	// AddReadiness.
	Checks *telemetry.Checks
	// SweepInterval is how often StartAdvisor's sweeper requeues orphans; 0 is
	// orphan.SweepInterval (tests shorten it).
	SweepInterval time.Duration

	orphans    *orphan.Metrics
	bg         sync.WaitGroup     // StartAdvisor's goroutines
	stopBg     context.CancelFunc // ends them
	configPath string
	job        *config.Job
	stopServe  func() // ends the metrics and pprof servers, at the very end of Close
}

// Options say what Open needs beyond the global flags.
type Options struct {
	Name       string       // process name shown to NATS
	NatsURL    string       // overrides --nats and its authentication (ferry run's embedded server)
	Settings   bus.Settings // stream settings applied with bus.Setup
	NeedConfig bool         // load and validate the job file
	Update     bool         // apply Settings to existing streams and consumers (ferry setup)
	// OneShot: a command that does its work and exits (ferry setup, ferry manifest --once) serves
	// no metrics or profiler, so it runs beside a service that holds --metrics-addr.
	OneShot bool
}

// Open validates the global flags and connects. Every service calls it first.
func Open(ctx context.Context, c *cli.Context, o Options) (*Env, error) {
	log, err := telemetry.NewLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return nil, config.Invalid(err)
	}
	job := c.String("job")
	if err := config.ValidateJobName(job); err != nil {
		return nil, fmt.Errorf("--job: %w", err)
	}
	e := &Env{Names: bus.For(job), Registry: telemetry.NewRegistry(), configPath: c.String("config"),
		Log: log.With("job", job), Checks: telemetry.NewChecks()}
	e.Metrics = stage.NewMetrics(e.Registry)
	e.instrument()
	slog.SetDefault(e.Log)
	if o.NeedConfig {
		if e.job, err = config.Load(e.configPath); err != nil {
			return nil, err
		}
	}
	if o.NatsURL != "" { // an embedded server: no authentication, no TLS
		e.NC, e.JS, err = bus.Connect(ctx, o.NatsURL, o.Name)
	} else {
		e.NC, e.JS, err = connect(ctx, c, o.Name)
	}
	if err != nil {
		return nil, err
	}
	sctx, cancel := bus.WhileAllowed(ctx, e.NC)
	e.Names, err = bus.Setup(sctx, e.JS, e.Names, o.Settings, o.Update)
	cancel()
	if err != nil {
		if cause := context.Cause(sctx); errors.Is(cause, nats.ErrPermissionViolation) {
			err = fmt.Errorf("%w (refused: %v; check the user's permissions: run ferry setup as a user that may create the streams)", err, cause)
		}
		e.NC.Close()
		return nil, err
	}
	if o.OneShot {
		return e, nil
	}
	stopMetrics, err := telemetry.Serve(ctx, c.String("metrics-addr"), e.Registry, e.Checks, e.Log)
	if err != nil {
		e.NC.Close()
		return nil, err
	}
	stopPprof, err := telemetry.ServePprof(c.String("pprof-addr"), e.Log)
	if err != nil {
		stopMetrics()
		e.NC.Close()
		return nil, err
	}
	e.stopServe = func() { stopPprof(); stopMetrics() }
	return e, nil
}

// instrument registers, once per process registry, the metrics and readiness checks of the
// packages that record on their own (Cassandra sessions, S3 clients, the job's dead letters), with
// the job as a label: Open is called once per process, and `ferry run` shares this Env among its
// stages. Their checks pass while the process uses no read target or bucket.
func (e *Env) instrument() {
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"job": e.Names.Job}, e.Registry)
	reg.MustRegister(cass.Collectors()...)
	reg.MustRegister(blobstore.Collectors()...)
	reg.MustRegister(telemetry.ReadyCollector(e.Checks), dlqCollector{e})
	e.orphans = orphan.NewMetrics(reg)
	e.Checks.Add("nats", e.natsReady)
	e.Checks.Add("cassandra", cass.Ready)
	e.Checks.Add("s3", blobstore.Ready)
}

// AddReadiness adds a readiness check (nil: ready) under name, replacing one of that name. It must
// be cheap and not block: it runs on every /readyz request and scrape.
func (e *Env) AddReadiness(name string, check func() error) { e.Checks.Add(name, check) }

// natsReady is the "nats" check: the connection is up (not reconnecting, draining or closed).
func (e *Env) natsReady() error {
	if e.NC == nil {
		return errors.New("not connected yet")
	}
	if !e.NC.IsConnected() {
		return fmt.Errorf("%s (last error: %v)", strings.ToLower(e.NC.Status().String()), e.NC.LastError())
	}
	return nil
}

// Job is the loaded job file (Open with NeedConfig).
func (e *Env) Job() *config.Job { return e.job }

// SetJob sets the job of an Env built by hand (tests, embedding).
func (e *Env) SetJob(j *config.Job) { e.job = j }

// closeWait bounds how long Close waits for the drain: the subscriptions are stopped by then, so
// what is left is flushing buffered publishes and acks (milliseconds unless NATS is unreachable).
const closeWait = 5 * time.Second

// Close drains the connection and waits until it is closed, so the pending publishes and acks are
// flushed before it returns. Drain alone only starts that: a process that exits right after it
// loses the acks of its last messages, and they come back after the ack wait.
//
// The metrics server stops last: through the drain /healthz stays 200 (no liveness restart
// mid-drain) and /readyz says "shutting down".
func (e *Env) Close() {
	if e.stopServe != nil {
		defer e.stopServe()
	}
	e.stopBackground()
	if e.NC == nil {
		return
	}
	if err := e.NC.Drain(); err != nil { // not connected: nothing can be flushed
		e.NC.Close()
		return
	}
	for deadline := time.Now().Add(closeWait); !e.NC.IsClosed(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.Log.Warn("NATS connection not drained in time; closing it", "wait", closeWait)
			e.NC.Close()
			return
		}
	}
}

// StartAdvisor runs, in the background until ctx ends or Close, the max-deliveries advisor
// (stage.RunAdvisor) and the orphan sweeper (orphan.Sweeper), which requeues messages a work
// queue's consumer will never deliver. Every service runs both, so no extra process is needed;
// the advisor's shared consumer hands each advisory to one of them, and concurrent sweeps store
// one copy of each orphan. Call it once.
func (e *Env) StartAdvisor(ctx context.Context) {
	ctx, e.stopBg = context.WithCancel(ctx)
	e.bg.Go(func() {
		if err := stage.RunAdvisor(ctx, e.JS, e.Names, e.Metrics, e.Log); err != nil {
			e.Log.Error("advisor stopped", "err", err)
		}
	})
	sw := &orphan.Sweeper{JS: e.JS, Names: e.Names, Interval: e.SweepInterval, Metrics: e.orphans, Log: e.Log}
	e.bg.Go(func() { sw.Run(ctx) })
}

// stopBackground ends what StartAdvisor started and waits for it.
func (e *Env) stopBackground() {
	if e.stopBg != nil {
		e.stopBg()
	}
	e.bg.Wait()
}
