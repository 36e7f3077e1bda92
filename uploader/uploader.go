// Package uploader consumes BLOBS, PUTs each blob to S3 with its Content-MD5 (multipart above a
// threshold), and publishes the result to UPLOADED. S3 failures are classified: transient ones are
// retried with backoff, an object S3 refuses for good is dead-lettered, and a failure that would
// hit every key (bad credentials, no bucket) stops the uploader instead of dead-lettering millions.
//
// Rewrites: the newest writetime wins. Every object carries the source key it was written for
// and the Cassandra writetime of its bytes (user metadata). The first PUT is conditional
// (If-None-Match: *); when an object of the same key with other bytes is there, a message with a
// newer writetime (or an unknown one, or over an object without a writetime) replaces it with a
// write conditional on the ETag it saw (If-Match), so of two racing uploads only one replaces
// what the other read. A message older than the object (a stale redelivery, an older pass's
// message arriving late) never overwrites it: it is passed on to UPLOADED, where the verifier
// records it as superseded. Two writes of one key with the same writetime are resolved as
// Cassandra resolves them: the greater bytes (unsigned byte order) win, whichever came last, so
// on a tie the object is read and replaced only by greater bytes; smaller ones are superseded.
package uploader

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bytesize"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// Store is the S3 side the uploader needs; *blobstore.Client is the real one.
type Store interface {
	Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error)
	Head(ctx context.Context, key string) (blobstore.HeadResult, error)
	// GetIfMatch reads the object at the ETag a HEAD saw (writetime ties compare bytes).
	GetIfMatch(ctx context.Context, key, etag string) ([]byte, error)
	ProbeWrite(ctx context.Context, probeKey string) error
}

// Uploader is the BLOBS handler.
type Uploader struct {
	Names        bus.Names
	JS           jetstream.JetStream
	Objects      jetstream.ObjectStore
	Store        Store
	PartSize     int64
	StorageClass string
	SkipExisting bool
	Limits       *limit.Rates // PUTs/s and bytes/s to S3; nil: none
	// Rules are the job's key rules: the uploader maps Ferry-Key itself and writes only where they
	// say, whatever the message's S3 key (nil: trust the message; tests only).
	Rules *keyrules.Rules
	// ReplaceUnowned writes over an object that holds other bytes and no ferry owner record
	// (destination.replace_unowned).
	ReplaceUnowned bool

	denials    denials
	superseded prometheus.Counter // nil: not registered
}

// Register registers the uploader's metrics.
func (u *Uploader) Register(reg prometheus.Registerer) {
	u.superseded = prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_uploader_superseded_total",
		Help:        "BLOBS messages not written because S3 already holds newer bytes of their key (a later writetime): passed on to UPLOADED.",
		ConstLabels: prometheus.Labels{"job": u.Names.Job}})
	reg.MustRegister(u.superseded)
}

// Handle is the stage.Handler: a BLOBS message in, its object written to S3 (never over another
// key's), its UPLOADED message out.
func (u *Uploader) Handle(ctx context.Context, msg stage.Msg) (*stage.Output, error) {
	rec := msg.Record
	key, s3Key, object, size, sum := rec.Key, rec.S3Key, rec.Object, rec.Size, rec.MD5
	if msg.Malformed != nil || s3Key == "" || size < 0 || sum == nil {
		return nil, stage.Permanent(bus.ReasonUploadError, fmt.Errorf("key %q: malformed BLOBS message (S3 key %q, size %d, md5 %x): %v", key, s3Key, size, sum, msg.Malformed))
	}
	if err := checkS3Key(u.Rules, key, s3Key); err != nil {
		return nil, stage.Permanent(bus.ReasonUploadError, err)
	}
	crc := ""
	if rec.HasCRC32C {
		crc = blobstore.CRC32COf(rec.CRC32C)
	}
	want := blobstore.Want{Size: size, MD5: sum, CRC32C: crc}
	var headErr error
	var tied bool // S3 holds other bytes of this key at the message's writetime
	if u.SkipExisting || object != "" {
		// A large blob whose object-store copy is gone was uploaded by an earlier delivery that
		// died before its ack; S3 is the proof.
		head, err := u.Store.Head(ctx, s3Key)
		switch {
		case err == nil && holds(head, want, rec):
			return u.uploaded(rec, head.ETag), nil
		case err == nil && newer(head, rec):
			// Newer bytes of the key are there (the object-store copy may even be gone: an
			// earlier delivery uploaded it and died before its ack): nothing to write.
			return u.supersededBy(rec), nil
		case err == nil:
			tied = tie(head, rec)
		case !errors.Is(err, blobstore.ErrNotFound):
			headErr = err
		}
	}
	body := msg.Body
	if object != "" {
		var err error
		body, err = u.objectBytes(ctx, object, size)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			if headErr != nil { // S3 could not say whether an earlier delivery uploaded it: ask again later
				return nil, fmt.Errorf("key %q: large blob %s is gone from the object store and S3 did not answer: %w", key, object, headErr)
			}
			if tied {
				// An earlier delivery settled the tie (its bytes lost, or won and were replaced
				// by greater ones since) and died before its ack.
				return u.supersededBy(rec), nil
			}
			return nil, stage.Permanent(bus.ReasonSourceError, fmt.Errorf("key %q: large blob %s is gone from the object store and not in S3; replay the key", key, object))
		}
		if err != nil {
			return nil, bus.Mark(fmt.Errorf("key %q: get %s from object store: %w", key, object, err))
		}
	}
	if int64(len(body)) != size {
		return nil, stage.Permanent(bus.ReasonUploadError, fmt.Errorf("key %q: blob is %d bytes, its header says %d; replay the key", key, len(body), size))
	}
	meta := map[string]string{blobstore.OwnerMeta: blobstore.OwnerValue(key)}
	if v := blobstore.WriteTimeValue(rec.WriteTime); v != "" {
		meta[blobstore.WriteTimeMeta] = v
	}
	in := blobstore.PutInput{
		Key: s3Key, Body: body, MD5: sum, ContentType: rec.ContentType, Metadata: meta,
		StorageClass: u.StorageClass, PartSize: u.PartSize, IfAbsent: true, CRC32C: crc,
		Progress: msg.Progress,
	}
	if err := u.Limits.Wait(ctx); err != nil {
		return nil, err
	}
	if err := u.Limits.WaitBytes(ctx, len(body)); err != nil {
		return nil, err
	}
	res, err := u.Store.Put(ctx, in)
	if errors.Is(err, blobstore.ErrExists) {
		// Conditional PUT: an object is there. The same bytes are fine whoever wrote them (a re-run,
		// or two keys the rules map to one object on purpose); other bytes of another source key
		// are never overwritten: the first key would be lost while it counts as verified. Other
		// bytes of this key are replaced only by newer ones (by writetime).
		head, herr := u.Store.Head(ctx, s3Key)
		owner, name := blobstore.OwnerOf(head.Metadata, key)
		switch {
		case errors.Is(herr, blobstore.ErrNotFound):
			// Deleted since the PUT was refused (a lifecycle rule, an operator, the other
			// writer's upload aborted): a new conditional PUT decides.
			return nil, stage.Transient(bus.ReasonUploadError, fmt.Errorf("key %q: S3 key %q refused the conditional put, then was gone: %w", key, s3Key, herr))
		case herr != nil:
			err = fmt.Errorf("head after a refused conditional put: %w", herr)
		case holds(head, want, rec):
			return u.uploaded(rec, head.ETag), nil
		case owner == blobstore.OwnerOther:
			return nil, stage.Permanent(bus.ReasonUploadError, fmt.Errorf("key %q: S3 key %q already holds other bytes of source key %q: two source keys map to one S3 key; fix the key rules and replay", key, s3Key, name))
		case owner == blobstore.OwnerNone && !u.ReplaceUnowned:
			return nil, stage.Permanent(bus.ReasonUploadError, fmt.Errorf("key %q: S3 key %q holds other bytes that ferry did not write (no owner record): not overwritten; set destination.replace_unowned to replace such objects", key, s3Key))
		case owner == blobstore.OwnerAmbiguous:
			return nil, stage.Permanent(bus.ReasonUploadError, fmt.Errorf("key %q: S3 key %q holds other bytes, written by an older ferry for %q, which this key or another could have been: not overwritten; if the object is this key's, delete it and replay", key, s3Key, name))
		case newer(head, rec):
			return u.supersededBy(rec), nil
		case tie(head, rec):
			// Other bytes at the same writetime: Cassandra keeps the greater value, whichever
			// was written last. Ties are rare, so the object is read to compare: at the ETag HEAD
			// saw, and replaced only at that ETag, so a racing writer's bytes are compared anew.
			held, gerr := u.Store.GetIfMatch(ctx, s3Key, head.ETag)
			switch {
			case errors.Is(gerr, blobstore.ErrChanged), errors.Is(gerr, blobstore.ErrNotFound):
				return nil, stage.Transient(bus.ReasonUploadError, fmt.Errorf("key %q: S3 key %q changed after its HEAD, before the writetime tie was settled: %w", key, s3Key, gerr))
			case gerr != nil:
				err = fmt.Errorf("read the object to settle a writetime tie: %w", gerr)
			case bytes.Equal(body, held):
				// The bytes are there, though the HEAD did not say so: the verifier judges.
				return u.uploaded(rec, head.ETag), nil
			case bytes.Compare(body, held) < 0:
				slog.DebugContext(ctx, "object holds greater bytes of the same writetime: superseded", "key", key, "s3_key", s3Key, "writetime", rec.WriteTime)
				return u.supersededBy(rec), nil
			default:
				in.IfAbsent, in.IfMatch = false, head.ETag
				res, err = u.Store.Put(ctx, in)
				if errors.Is(err, blobstore.ErrChanged) {
					return nil, stage.Transient(bus.ReasonUploadError, fmt.Errorf("key %q: S3 key %q changed after its HEAD, before it was replaced: %w", key, s3Key, err))
				}
			}
		default:
			// The same key with other bytes, and the message's are newer (or of unknown age, or
			// the object has no writetime: an older ferry wrote it): the source changed since. The
			// write is conditional on the object HEAD saw, so that a newer upload that replaced
			// it meanwhile is not undone; if it changed, a retry decides again.
			in.IfAbsent, in.IfMatch = false, head.ETag
			res, err = u.Store.Put(ctx, in)
			if errors.Is(err, blobstore.ErrChanged) {
				return nil, stage.Transient(bus.ReasonUploadError, fmt.Errorf("key %q: S3 key %q changed after its HEAD, before it was replaced: %w", key, s3Key, err))
			}
		}
	}
	if err != nil && blobstore.IsBadDigest(err) {
		if got := md5.Sum(body); !bytes.Equal(got[:], sum) {
			// The message's bytes never matched its Ferry-MD5: no retry can fix that.
			return nil, stage.Permanent(bus.ReasonUploadError, fmt.Errorf("key %q: blob bytes have MD5 %x, the message says %x: the message is damaged; replay the key: %w", key, got, sum, err))
		}
	}
	if err != nil {
		err = fmt.Errorf("key %q: %w", key, err)
		if blobstore.IsAccessDenied(err) {
			return nil, u.refused(ctx, s3Key, err)
		}
		return nil, stage.Reason(bus.ReasonUploadError, err) // its kind is the client's (fault)
	}
	u.denials.record(s3Key)
	return u.uploaded(rec, res.ETag), nil
}

// holds says whether the object already holds what rec would write: its bytes, and for rec's own
// key not an older writetime (bytes rewritten unchanged at the source get the newer writetime,
// so the object shows the newest one).
func holds(head blobstore.HeadResult, want blobstore.Want, rec bus.Record) bool {
	if head.Check(want) != nil {
		return false
	}
	if head.WriteTime == 0 || rec.WriteTime <= head.WriteTime {
		return true
	}
	owner, _ := blobstore.OwnerOf(head.Metadata, rec.Key)
	return owner != blobstore.OwnerKey // another key's object of the same bytes stays as it is
}

// newer says whether the object holds bytes of rec's own key written after rec's: rec is
// superseded. An object without a writetime, or a message without one, is never newer.
func newer(head blobstore.HeadResult, rec bus.Record) bool {
	owner, _ := blobstore.OwnerOf(head.Metadata, rec.Key)
	return owner == blobstore.OwnerKey && rec.WriteTime > 0 && head.WriteTime > rec.WriteTime
}

// tie says whether the object holds other bytes of rec's own key at rec's writetime (the caller
// knows the bytes differ). Cassandra keeps the greater value of such a pair.
func tie(head blobstore.HeadResult, rec bus.Record) bool {
	owner, _ := blobstore.OwnerOf(head.Metadata, rec.Key)
	return owner == blobstore.OwnerKey && rec.WriteTime > 0 && head.WriteTime == rec.WriteTime
}

// supersededBy passes rec on unwritten: S3 holds newer bytes of its key, whose own message
// verifies them; the verifier records this one as superseded.
func (u *Uploader) supersededBy(rec bus.Record) *stage.Output {
	out := u.uploaded(rec, "")
	drop := out.Stored
	out.Stored = func(ctx context.Context) {
		drop(ctx)
		if u.superseded != nil {
			u.superseded.Inc()
		}
	}
	return out
}

// dropObject deletes a large blob's object-store copy once UPLOADED is stored; a crash before
// this leaves a copy that the bucket's TTL expires.
func (u *Uploader) dropObject(ctx context.Context, object string) {
	if object != "" {
		_ = u.Objects.Delete(ctx, object)
	}
}

// uploaded is the UPLOADED message of rec, whose object S3 holds with etag. Once it is stored,
// the large blob's object-store copy goes.
func (u *Uploader) uploaded(rec bus.Record, etag string) *stage.Output {
	object := rec.Object
	out := rec
	out.Object, out.ContentType, out.ETag = "", "", etag
	stream, subject := u.Names.Route(u.Names.Uploaded, rec.ID)
	return &stage.Output{Subject: subject, Stream: stream, ID: bus.MsgID("uploaded", rec.ID), Record: out,
		Stored: func(ctx context.Context) { u.dropObject(ctx, object) }}
}

// Config is the uploader's flags.
type Config struct {
	Concurrency int
	// ConcurrencyFlag names --concurrency in errors: ferry run calls it --uploader-concurrency.
	ConcurrencyFlag string
	PartSize        int64
	SkipExisting    bool
	Adaptive        bool    // adaptive concurrency under --concurrency
	UploadRate      float64 // PUTs/s of this process until `ferry throttle --stage uploader` sets one; 0: none
	ByteRate        float64 // bytes/s, likewise
	Settings        bus.Settings
}

// Flags are the uploader's flags.
func (c *Config) Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 64, EnvVars: []string{"FERRY_UPLOADER_CONCURRENCY"}, Destination: &c.Concurrency, Usage: "concurrent S3 uploads at most ('ferry throttle --stage uploader --concurrency' lowers it live)"},
		&cli.BoolFlag{Name: "adaptive", EnvVars: []string{"FERRY_ADAPTIVE", "FERRY_UPLOADER_ADAPTIVE"}, Destination: &c.Adaptive, Usage: "adapt the uploads in flight to S3's latency and errors, under --concurrency"},
		&cli.Float64Flag{Name: "upload-rate", EnvVars: []string{"FERRY_UPLOAD_RATE"}, Destination: &c.UploadRate, Usage: "cap on S3 PUTs/s of this process until 'ferry throttle --stage uploader' sets one (0: none)"},
		bytesize.RateFlag("byte-rate", "FERRY_UPLOAD_BYTE_RATE", &c.ByteRate, "cap on bytes/s uploaded by this process (200MB, 50MiB) until 'ferry throttle --stage uploader' sets one"),
		&cli.GenericFlag{Name: "upload-byte-rate", Hidden: true, Value: bytesize.Rate(&c.ByteRate), Usage: "old name of --byte-rate"},
		bytesize.Flag("multipart-threshold", 16<<20, "FERRY_MULTIPART_THRESHOLD", &c.PartSize, "blobs above this many bytes are uploaded in parts of this size (at least 5 MiB)"),
		&cli.BoolFlag{Name: "skip-existing", EnvVars: []string{"FERRY_SKIP_EXISTING"}, Destination: &c.SkipExisting, Usage: "HEAD first and skip the PUT when the object's size and MD5 already match"},
	}, c.Settings.Flags()...)
}

// Validate checks the flags.
func (c *Config) Validate() error {
	var errs []error
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("--%s %d: must be 1..4096", cmp.Or(c.ConcurrencyFlag, "concurrency"), c.Concurrency))
	}
	if c.UploadRate < 0 || c.ByteRate < 0 {
		errs = append(errs, errors.New("--upload-rate and --byte-rate must not be negative"))
	}
	if c.PartSize < 5<<20 {
		errs = append(errs, fmt.Errorf("--multipart-threshold %d: must be at least 5 MiB (S3's smallest part)", c.PartSize))
	}
	return config.Invalid(errors.Join(errs...))
}

// Command is `ferry uploader`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "uploader",
		Usage: "upload each blob of BLOBS to S3 and record it in UPLOADED",
		Flags: append(cfg.Flags(), service.AdvisorFlag()),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			env, err := service.Open(c.Context, c, service.Options{Name: bus.StageUploader, Settings: cfg.Settings, NeedConfig: true})
			if err != nil {
				return err
			}
			defer env.Close()
			env.StartAdvisorIf(c)
			return Run(c.Context, env, cfg)
		},
	}
}

// Run consumes BLOBS until ctx ends or S3 fails in a way that would fail every key.
func Run(ctx context.Context, env *service.Env, cfg Config) error {
	svc, err := New(ctx, env, cfg)
	if err != nil {
		return err
	}
	err = svc.Serve(ctx)
	if stage.IsFatal(err) {
		env.Log.Error("uploader stopped: S3 refuses every upload; fix the destination or credentials and start it again", "err", err)
	}
	return err
}

// New sets the uploader up: its S3 client (checked), limits and consumer.
func New(ctx context.Context, env *service.Env, cfg Config) (*stage.Service, error) {
	dest := env.Job().Destination
	rules, err := keyrules.Compile(env.Job().Keys)
	if err != nil {
		return nil, fmt.Errorf("uploader: %w", err)
	}
	store, err := blobstore.New(ctx, dest, cfg.Concurrency)
	if err != nil {
		return nil, fmt.Errorf("uploader: %w", err)
	}
	if err := store.Check(ctx); err != nil {
		return nil, fmt.Errorf("uploader: %w", err)
	}
	objects, err := env.JS.ObjectStore(ctx, env.Names.Objects)
	if err != nil {
		return nil, fmt.Errorf("uploader: object store %s: %w", env.Names.Objects, err)
	}
	limits := &limit.Limits{Stage: bus.StageUploader, RateKind: "uploads",
		Rates:   limit.NewRates(cfg.UploadRate, cfg.ByteRate),
		Limiter: limit.NewLimiter(cfg.Concurrency, cfg.Adaptive),
		PerSec:  cfg.UploadRate, BytesPerSec: cfg.ByteRate, Concurrency: cfg.Concurrency}
	if err := limit.WatchThrottle(ctx, env.JS, env.Names, limits, env.Registry, env.Log); err != nil {
		return nil, fmt.Errorf("uploader: %w", err)
	}
	u := &Uploader{Names: env.Names, JS: env.JS, Objects: objects, Store: store, PartSize: cfg.PartSize,
		StorageClass: dest.StorageClass, SkipExisting: cfg.SkipExisting, Limits: limits.Rates,
		Rules: rules, ReplaceUnowned: dest.ReplaceUnowned}
	u.Register(env.Registry)
	cons, err := bus.Consumers(ctx, env.JS, env.Names, env.Names.Blobs, env.Names.Uploader)
	if err != nil {
		return nil, fmt.Errorf("uploader: %w", err)
	}
	env.Log.Info("uploader started", "bucket", dest.Bucket, "concurrency", cfg.Concurrency, "adaptive", cfg.Adaptive)
	return &stage.Service{Consumers: cons, Handler: u.Handle, Options: stage.Options{
		Stage: bus.StageUploader, Names: env.Names, JS: env.JS, Workers: cfg.Concurrency, Limiter: limits.Limiter,
		ExhaustedReason: bus.ReasonUploadError, Metrics: env.Metrics, Log: env.Log,
	}}, nil
}

// objectBytes reads a large blob from the object store. With replicated streams a follower may
// answer a read (direct gets) before it has applied the put, most likely right after a leader
// change, so "not found" is asked again twice before it counts.
//
// The read gets 30 s plus a second per MiB: without a deadline of its own it would get the
// client's 5 s default for the whole object, and a timeout is an outage (held and retried), so a
// large blob on a slow link must not time out every time.
func (u *Uploader) objectBytes(ctx context.Context, name string, size int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(size>>20)*time.Second)
	defer cancel()
	for attempt := 1; ; attempt++ {
		b, err := u.Objects.GetBytes(ctx, name)
		if !errors.Is(err, jetstream.ErrObjectNotFound) || attempt == 3 {
			return b, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		}
	}
}

// checkS3Key says whether s3Key is where the job's key rules put key. A stage after the fetcher
// takes nothing from a message on trust: a hand-published message could name any S3 key ("../x",
// another key's object), and S3 servers fold "./" and "//" so that two names meet in one object.
func checkS3Key(rules *keyrules.Rules, key, s3Key string) error {
	if rules == nil {
		return nil
	}
	want, err := rules.Map(key)
	if err != nil {
		return fmt.Errorf("key %q: the message names S3 key %q, but the key fails the job's key rules: %w", key, s3Key, err)
	}
	if want != s3Key {
		return fmt.Errorf("key %q: the message names S3 key %q, the job's key rules %q: not written (not published by this job's fetcher)", key, s3Key, want)
	}
	return nil
}
