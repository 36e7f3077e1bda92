// Package verifier consumes UPLOADED and checks every object in S3: it exists, its size is right
// and its checksum matches (ETag for a single PUT, the stored MD5 for multipart); a sampled
// fraction is also read back and hashed. Each verified key is recorded in DONE, the job's proof.
//
// Rewrites: the newest writetime wins. When S3 holds other bytes, written for the same source key
// with a later Cassandra writetime than the message's, the message was superseded by a rewrite at
// the source (its newer bytes are verified by their own message): its DONE entry is written all
// the same, marked Ferry-Superseded (the object's writetime), so every KEYS message still ends in
// DONE or the DLQ. So is a message whose key S3 holds other bytes of at the same writetime:
// Cassandra keeps the greater of two values written with one writetime, and the uploader replaces
// an object of a tied writetime only with greater bytes, so the object's are the ones the source
// kept (the verifier has only the message's checksums, not its bytes, to compare). Other bytes
// that are older, of unknown age, or of another key are a mismatch.
//
// The deep check (--deep-sample) reads the version the HEAD judged (If-Match on its ETag): when a
// rewrite replaced the object in between, it HEADs again and judges the new version.
package verifier

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/fault"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/refusal"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// Store is the S3 side the verifier needs; *blobstore.Client is the real one.
type Store interface {
	Head(ctx context.Context, key string) (blobstore.HeadResult, error)
	// GetIfMatch reads the object only at the ETag a HEAD saw; a replaced one is ErrChanged.
	GetIfMatch(ctx context.Context, key, etag string) ([]byte, error)
}

// deepRounds bounds the HEAD-then-GET rounds of a deep check whose object keeps being replaced
// between the two: then the message is retried later.
const deepRounds = 3

// Verifier is the UPLOADED handler.
type Verifier struct {
	Names  bus.Names
	JS     jetstream.JetStream
	Store  Store
	Sample float64 // fraction of objects read back and hashed
	// Rules are the job's key rules: the verifier maps Ferry-Key itself and checks only the object
	// they name (nil: trust the message; tests only).
	Rules *keyrules.Rules

	readOnce   sync.Once
	reads      refusal.Judge      // HEAD refused: of this object, or of every object? (see refused)
	superseded prometheus.Counter // nil: not registered
}

// Register registers the verifier's metrics.
func (v *Verifier) Register(reg prometheus.Registerer) {
	v.superseded = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_verifier_superseded_total",
		Help:        "UPLOADED messages whose bytes S3 no longer holds because newer bytes of their key (a later writetime, or the greater bytes of the same writetime) replaced them: recorded in DONE as superseded.",
		ConstLabels: prometheus.Labels{"job": v.Names.Job}})
	reg.MustRegister(v.superseded)
}

// Handle is the stage.Handler: an UPLOADED message in, the object checked in S3 against the
// source's checksums, its DONE entry (the body is the key) out.
func (v *Verifier) Handle(ctx context.Context, msg stage.Msg) (*stage.Output, error) {
	rec := msg.Record
	key, s3Key, size, sum := rec.Key, rec.S3Key, rec.Size, rec.MD5
	if msg.Malformed != nil || s3Key == "" || size < 0 || sum == nil {
		return nil, stage.Permanent(bus.ReasonVerifyMismatch, fmt.Errorf("key %q: malformed UPLOADED message (S3 key %q, size %d, md5 %x): %v", key, s3Key, size, sum, msg.Malformed))
	}
	if v.Rules != nil {
		if want, err := v.Rules.Map(key); err != nil || want != s3Key {
			return nil, stage.Permanent(bus.ReasonVerifyMismatch, fmt.Errorf("key %q: the message names S3 key %q, the job's key rules %q (%v): not this job's object", key, s3Key, want, err))
		}
	}
	crc := ""
	if rec.HasCRC32C {
		crc = blobstore.CRC32COf(rec.CRC32C)
	}
	deep := v.Sample > 0 && rand.Float64() < v.Sample
	for round := 1; ; round++ {
		head, err := v.Store.Head(ctx, s3Key)
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
			return nil, stage.Permanent(bus.ReasonVerifyMissing, fmt.Errorf("key %q: %w", key, err))
		case err != nil && blobstore.IsAccessDenied(err):
			return nil, v.refused(ctx, s3Key, fmt.Errorf("key %q: %w", key, err))
		case err != nil:
			return nil, fmt.Errorf("key %q: %w", key, err) // its kind is the client's (fault)
		}
		v.reads.Good(s3Key)
		// The source's CRC32C against S3's own, and ferry's MD5 in the metadata: never the ETag alone
		// when those are there (with SSE-KMS or SSE-C it is not the MD5).
		if err := head.Check(blobstore.Want{Size: size, MD5: sum, CRC32C: crc}); err != nil {
			if supersedes(head, rec) {
				return v.supersededBy(rec, head.WriteTime), nil
			}
			return nil, stage.Permanent(bus.ReasonVerifyMismatch, fmt.Errorf("key %q: %w", key, err))
		}
		if !deep {
			return v.done(rec), nil
		}
		body, err := v.Store.GetIfMatch(ctx, s3Key, head.ETag)
		switch {
		case errors.Is(err, blobstore.ErrChanged) || errors.Is(err, blobstore.ErrNotFound):
			// Replaced (a rewrite at the source) or deleted since the HEAD: judge what is there now.
			if round < deepRounds {
				continue
			}
			return nil, stage.Transient(bus.ReasonVerifyMismatch, fmt.Errorf("key %q: deep check: s3://%s changed between its HEAD and GET %d times in a row: %w", key, s3Key, deepRounds, err))
		case err != nil:
			return nil, fmt.Errorf("key %q: deep check: %w", key, err)
		}
		if got := md5.Sum(body); !bytes.Equal(got[:], sum) {
			// The version the HEAD vouched for reads back with other bytes.
			return nil, stage.Permanent(bus.ReasonVerifyMismatch, fmt.Errorf("key %q: deep check: s3://%s reads back with md5 %x, want %x", key, s3Key, got, sum))
		}
		return v.done(rec), nil
	}
}

// supersedes says whether the object, which does not hold rec's bytes, holds those the source
// kept over them: bytes of rec's own key written later, or at the same writetime (a tie, which
// Cassandra and the uploader both settle for the greater bytes). An object without a writetime,
// or a message without one, never supersedes.
func supersedes(head blobstore.HeadResult, rec bus.Record) bool {
	owner, _ := blobstore.OwnerOf(head.Metadata, rec.Key)
	return owner == blobstore.OwnerKey && rec.WriteTime > 0 && head.WriteTime >= rec.WriteTime
}

// done is rec's DONE entry (the body is the key).
func (v *Verifier) done(rec bus.Record) *stage.Output {
	done := rec
	done.Object, done.ContentType = "", ""
	return &stage.Output{Subject: v.Names.DoneSubject, Stream: v.Names.Done, ID: bus.MsgID("done", rec.ID), Record: done, Body: []byte(rec.Key)}
}

// supersededBy is rec's DONE entry when S3 holds newer bytes of its key (or the greater of a
// writetime tie), of writetime wt.
func (v *Verifier) supersededBy(rec bus.Record, wt int64) *stage.Output {
	rec.Superseded = wt
	out := v.done(rec)
	out.Stored = func(context.Context) {
		if v.superseded != nil {
			v.superseded.Inc()
		}
	}
	return out
}

// probeName is the key the read probe HEADs, "<dir>.ferry-probe-<job>", when no object is known
// to be readable: ferry never writes it, and a 404 proves read access as well as a 200 would.
const probeName = ".ferry-probe-"

// refused decides what a refused HEAD of s3Key means (AccessDenied, or a bare 403: HEAD answers
// have no body); err names the key. The read probe HEADs the last object this process verified,
// else the job's last verified key (DONE), else a key that does not exist in s3Key's top-level
// directory (without s3:ListBucket S3 answers 403 for that one: the probe counts as refused).
//
// If the probe is answered, the refusal belongs to the object (a deny on its prefix, an SSE-C
// object, a KMS key the verifier may not use): the key is dead-lettered verify_missing, the
// closest reason, since the verifier cannot see the object ferry wrote (verify_mismatch would
// claim other bytes); a replay runs the key again once its access is fixed. Stopping instead
// would not end: on every restart the same message comes first. If the probe is refused too,
// every HEAD would be: the verifier stops, as for bad credentials.
func (v *Verifier) refused(ctx context.Context, s3Key string, err error) error {
	v.readOnce.Do(func() {
		v.reads.Target = func(known, dir string) string {
			if known != "" {
				return known
			}
			return dir + probeName + v.Names.Job
		}
		v.reads.Probe = func(ctx context.Context, key string) error {
			if _, err := v.Store.Head(ctx, key); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
				return err
			}
			return nil
		}
		v.reads.Known = refusal.LastDone(v.JS, v.Names)
	})
	perr := v.reads.Check(ctx, s3Key)
	switch {
	case perr == nil:
		return stage.Permanent(bus.ReasonVerifyMissing, fmt.Errorf("%w: S3 refuses HEAD of this object but answers for others (a policy on its prefix, an SSE-C or KMS key the verifier may not use); fix that and replay the key", err))
	case blobstore.IsAccessDenied(perr) || fault.KindOf(perr) == fault.Fatal:
		return stage.Fatal(fmt.Errorf("%w (a read probe was refused too: %v)", err, perr))
	case fault.KindOf(perr) == fault.Outage:
		return stage.Outage(fmt.Errorf("%w (the read probe found S3 unreachable: %v)", err, perr))
	}
	return fault.Mark(fmt.Errorf("%w (the read probe failed: %v)", err, perr), fault.Transient) // retried
}

// Config is the verifier's flags.
type Config struct {
	Concurrency int
	// ConcurrencyFlag names --concurrency in errors: ferry run calls it --verifier-concurrency.
	ConcurrencyFlag string
	Sample          float64
	Settings        bus.Settings
}

// Flags are the verifier's flags.
func (c *Config) Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 64, EnvVars: []string{"FERRY_VERIFIER_CONCURRENCY"}, Destination: &c.Concurrency, Usage: "concurrent HEAD checks"},
		&cli.Float64Flag{Name: "deep-sample", EnvVars: []string{"FERRY_DEEP_SAMPLE"}, Destination: &c.Sample, Usage: "fraction (0..1) of objects also read back in full and hashed"},
	}, c.Settings.Flags()...)
}

// Validate checks the flags.
func (c *Config) Validate() error {
	var errs []error
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("--%s %d: must be 1..4096", cmp.Or(c.ConcurrencyFlag, "concurrency"), c.Concurrency))
	}
	if c.Sample < 0 || c.Sample > 1 {
		errs = append(errs, fmt.Errorf("--deep-sample %g: must be between 0 and 1", c.Sample))
	}
	return config.Invalid(errors.Join(errs...))
}

// Command is `ferry verifier`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "verifier",
		Usage: "check every uploaded object in S3 (exists, size, checksum) and record it in DONE",
		Flags: append(cfg.Flags(), service.AdvisorFlag()),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			env, err := service.Open(c.Context, c, service.Options{Name: bus.StageVerifier, Settings: cfg.Settings, NeedConfig: true})
			if err != nil {
				return err
			}
			defer env.Close()
			env.StartAdvisorIf(c)
			return Run(c.Context, env, cfg)
		},
	}
}

// Run consumes UPLOADED until ctx ends.
func Run(ctx context.Context, env *service.Env, cfg Config) error {
	svc, err := New(ctx, env, cfg)
	if err != nil {
		return err
	}
	return svc.Serve(ctx)
}

// New sets the verifier up: its S3 client (checked) and consumer.
func New(ctx context.Context, env *service.Env, cfg Config) (*stage.Service, error) {
	store, err := blobstore.New(ctx, env.Job().Destination, cfg.Concurrency)
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	if err := store.Check(ctx); err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	rules, err := keyrules.Compile(env.Job().Keys)
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	v := &Verifier{Names: env.Names, JS: env.JS, Store: store, Sample: cfg.Sample, Rules: rules}
	v.Register(env.Registry)
	cons, err := bus.Consumers(ctx, env.JS, env.Names, env.Names.Uploaded, env.Names.Verifier)
	if err != nil {
		return nil, fmt.Errorf("verifier: %w", err)
	}
	env.Log.Info("verifier started", "concurrency", cfg.Concurrency, "deep_sample", cfg.Sample)
	return &stage.Service{Consumers: cons, Handler: v.Handle, Options: stage.Options{
		Stage: bus.StageVerifier, Names: env.Names, JS: env.JS, Workers: cfg.Concurrency,
		Metrics: env.Metrics, Log: env.Log,
	}}, nil
}
