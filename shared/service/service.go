// Package service is what every ferry service opens at start: the global flags, the logger, the
// job's configuration, the NATS connection with the job's streams set up, the metrics registry and
// the readiness checks served on --metrics-addr.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/stage"
	"github.com/ferry-migrate/ferry/shared/telemetry"
)

// GlobalFlags are the flags of the ferry app itself, shared by every subcommand.
func GlobalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats", Value: "nats://127.0.0.1:4222", EnvVars: []string{"FERRY_NATS"}, Usage: "NATS server URL (JetStream enabled)"},
		&cli.StringFlag{Name: "job", Value: "default", EnvVars: []string{"FERRY_JOB"}, Usage: "job name: letters, digits, '_' and '-'; names the streams"},
		&cli.StringFlag{Name: "config", Value: "ferry.yaml", EnvVars: []string{"FERRY_CONFIG"}, Usage: "job file: source read targets, destination, key rules"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"FERRY_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"FERRY_LOG_FORMAT"}, Usage: "text or json"},
		&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"FERRY_METRICS_ADDR"}, Usage: "serve Prometheus /metrics, /healthz, /readyz and /debug/pprof on this address (e.g. 127.0.0.1:9100); empty: off"},
	}
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

	configPath string
	job        *config.Job
}

// Options say what Open needs beyond the global flags.
type Options struct {
	Name       string       // process name shown to NATS
	NatsURL    string       // overrides the --nats flag (ferry run's embedded server)
	Settings   bus.Settings // stream settings applied with bus.Setup
	NeedConfig bool         // load and validate the job file
	Update     bool         // apply Settings to existing streams and consumers (ferry setup)
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
	url := o.NatsURL
	if url == "" {
		url = c.String("nats")
	}
	if e.NC, e.JS, err = bus.Connect(ctx, url, o.Name); err != nil {
		return nil, err
	}
	if err := bus.Setup(ctx, e.JS, e.Names, o.Settings, o.Update); err != nil {
		e.NC.Close()
		return nil, err
	}
	if err := telemetry.Serve(ctx, c.String("metrics-addr"), e.Registry, e.Checks, e.Log); err != nil {
		e.NC.Close()
		return nil, err
	}
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

// Close drains the connection: pending publishes and acks are flushed before it closes.
func (e *Env) Close() {
	if e.NC != nil {
		_ = e.NC.Drain()
	}
}

// StartAdvisor runs the max-deliveries advisor (stage.RunAdvisor) in the background until ctx ends.
func (e *Env) StartAdvisor(ctx context.Context) {
	go func() {
		if err := stage.RunAdvisor(ctx, e.JS, e.Names, e.Metrics, e.Log); err != nil {
			e.Log.Error("advisor stopped", "err", err)
		}
	}()
}
