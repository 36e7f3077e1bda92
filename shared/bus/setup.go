package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bytesize"
	"github.com/ferry-migrate/ferry/shared/config"
)

// Settings are the stream and consumer settings of a job. The defaults suit billions of keys on
// one R1 server; every service applies them at start, so change them with `ferry setup` flags
// (or the same flags on each service) rather than by hand.
type Settings struct {
	AckWait       time.Duration // redelivery after a worker dies; long work sends InProgress
	MaxDeliver    int           // handler runs before a message is dead-lettered (stage.Serve counts them)
	Backstop      int           // the consumers' MaxDeliver; 0: DeliveryBackstop(MaxDeliver)
	MaxAckPending int           // must cover all workers' in-flight messages of a consumer
	Dedupe        time.Duration // Nats-Msg-Id window; must exceed AckWait (redelivery after a crash)
	BlobsMaxBytes int64         // cap of BLOBS: a slow S3 makes the fetcher wait, not read more
	// ObjectsMaxBytes caps the object store of blobs above the inline limit, as BlobsMaxBytes caps
	// BLOBS: without it a stopped uploader lets the fetchers park every large blob of the backlog
	// on the broker's disk until it is full, and then DLQ writes and checkpoints fail too.
	ObjectsMaxBytes int64
	ObjectTTL       time.Duration // large blobs left in the object store by a crash expire after this
	Replicas        int
	// Partitions is how many streams each work queue is split into (Names.Partitions) for a job
	// set up now; 0: the job's own count, or 1 for a new job. A job's count is fixed once it
	// exists (Discover).
	Partitions int
}

// DefaultSettings are used when no flag is given.
func DefaultSettings() Settings {
	return Settings{
		AckWait:       time.Minute,
		MaxDeliver:    10,
		MaxAckPending: 10000,
		Dedupe:        3 * time.Minute,
		BlobsMaxBytes: 1 << 30,
		// Room for four blobs at the fetcher's default --max-size (256 MiB) in flight.
		ObjectsMaxBytes: 1 << 30,
		ObjectTTL:       7 * 24 * time.Hour,
		Replicas:        1,
	}
}

// Flags registers the settings as flags (with FERRY_* environment variables).
func (s *Settings) Flags() []cli.Flag {
	d := DefaultSettings()
	return []cli.Flag{
		&cli.DurationFlag{Name: "ack-wait", Value: d.AckWait, EnvVars: []string{"FERRY_ACK_WAIT"}, Destination: &s.AckWait, Usage: "time before an unacknowledged message is redelivered", Category: "streams"},
		&cli.IntFlag{Name: "max-deliver", Value: d.MaxDeliver, EnvVars: []string{"FERRY_MAX_DELIVER"}, Destination: &s.MaxDeliver, Usage: "handler runs of a message before it is dead-lettered (a delivery that no handler ran, after a stop or crash, does not count; the server gives up at 10 times this plus 100 deliveries)", Category: "streams"},
		&cli.IntFlag{Name: "max-ack-pending", Value: d.MaxAckPending, EnvVars: []string{"FERRY_MAX_ACK_PENDING"}, Destination: &s.MaxAckPending, Usage: "in-flight messages per consumer, all workers together", Category: "streams"},
		&cli.DurationFlag{Name: "dedupe-window", Value: d.Dedupe, EnvVars: []string{"FERRY_DEDUPE_WINDOW"}, Destination: &s.Dedupe, Usage: "Nats-Msg-Id duplicate window (longer than --ack-wait)", Category: "streams"},
		withCategory(bytesize.Flag("blobs-max-bytes", d.BlobsMaxBytes, "FERRY_BLOBS_MAX_BYTES", &s.BlobsMaxBytes, "byte cap of the BLOBS stream, of each with --partitions (fetchers wait when it is full)")),
		withCategory(bytesize.Flag("objects-max-bytes", d.ObjectsMaxBytes, "FERRY_OBJECTS_MAX_BYTES", &s.ObjectsMaxBytes, "byte cap of the object store of blobs above the inline limit (fetchers wait when it is full)")),
		&cli.DurationFlag{Name: "object-ttl", Value: d.ObjectTTL, EnvVars: []string{"FERRY_OBJECT_TTL"}, Destination: &s.ObjectTTL, Usage: "expiry of large blobs left in the object store", Category: "streams"},
		&cli.IntFlag{Name: "partitions", EnvVars: []string{"FERRY_PARTITIONS"}, Destination: &s.Partitions, DefaultText: "the job's, or 1 for a new job", Usage: "streams per work queue (KEYS, BLOBS, UPLOADED), each with its own leader, keys spread by a hash; fixed when the job is set up", Category: "streams"},
		&cli.IntFlag{Name: "replicas", Value: d.Replicas, EnvVars: []string{"FERRY_REPLICAS"}, Destination: &s.Replicas, Usage: "stream replicas (1, 3 or 5; a clustered NATS for more than 1)", Category: "streams"},
	}
}

func withCategory(f *cli.GenericFlag) *cli.GenericFlag {
	f.Category = "streams"
	return f
}

// Validate checks the settings against each other.
func (s Settings) Validate() error {
	var errs []error
	if s.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("--ack-wait %s: must be at least 1s", s.AckWait))
	}
	if s.MaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("--max-deliver %d: must be at least 1", s.MaxDeliver))
	}
	if s.Backstop != 0 && s.Backstop < s.MaxDeliver {
		errs = append(errs, fmt.Errorf("delivery backstop %d: must be at least --max-deliver %d", s.Backstop, s.MaxDeliver))
	}
	if s.MaxAckPending < 1 {
		errs = append(errs, fmt.Errorf("--max-ack-pending %d: must be at least 1", s.MaxAckPending))
	}
	if s.Dedupe <= s.AckWait {
		errs = append(errs, fmt.Errorf("--dedupe-window %s: must be longer than --ack-wait %s, or a redelivered message's output flows twice", s.Dedupe, s.AckWait))
	}
	if s.BlobsMaxBytes < 16<<20 {
		errs = append(errs, fmt.Errorf("--blobs-max-bytes %s: must be at least 16MiB", bytesize.Format(s.BlobsMaxBytes)))
	}
	if s.ObjectsMaxBytes < 16<<20 {
		errs = append(errs, fmt.Errorf("--objects-max-bytes %s: must be at least 16MiB", bytesize.Format(s.ObjectsMaxBytes)))
	}
	if s.Partitions < 0 || s.Partitions > MaxPartitions {
		errs = append(errs, fmt.Errorf("--partitions %d: must be between 1 and %d", s.Partitions, MaxPartitions))
	}
	if s.Replicas != 1 && s.Replicas != 3 && s.Replicas != 5 {
		errs = append(errs, fmt.Errorf("--replicas %d: must be 1, 3 or 5", s.Replicas))
	}
	return config.Invalid(errors.Join(errs...))
}

// MaxPartitions bounds --partitions: each partition is three streams and three consumers, each
// a Raft group in a cluster; `ferry plan` asks for a handful at 150 billion keys.
const MaxPartitions = 256

// MetaPartitions is the stream metadata entry, on DONE and every work stream, that holds the
// job's partition count. DONE's is the job's record: creating DONE with it claims the layout
// (setup makes DONE first), and a work stream deleted by hand does not make the job look new.
const MetaPartitions = "ferry.partitions"

// errLayoutClaimed: another process created the job with another partition count between this
// one's Discover and its setup. Setup discovers again.
var errLayoutClaimed = errors.New("job created meanwhile with another partition count")

// Discover returns n with the job's partition count: DONE's record, or for a job made before
// DONE kept one, 1 when KEYS exists and the count in KEYS_0's metadata when that does; want (at
// least 1) for a job that does not exist yet. A want other than 0 that differs from an existing
// job's count is a config error: a key's partition decides which stream dedupes its redeliveries,
// so the count cannot change under messages in flight. A job with both layouts (FERRY_j_KEYS and
// FERRY_j_KEYS_0, made by an older ferry beside a newer one) is an error too: one of them holds
// keys no service of the other consumes.
func Discover(ctx context.Context, js jetstream.JetStream, n Names, want int) (Names, error) {
	got, err := recorded(ctx, js, n.Done)
	if err != nil {
		return n, err
	}
	if got == 0 { // DONE is missing or keeps no count: the work streams tell
		switch one, err := exists(ctx, js, n.Keys); {
		case err != nil:
			return n, err
		case one:
			got = 1
		default:
			if got, err = recorded(ctx, js, n.Keys+"_0"); err != nil {
				return n, err
			}
		}
	}
	if got == 0 {
		return n.WithPartitions(want), nil // a new job
	}
	other := n.Keys + "_0" // the layout the job does not have
	if got > 1 {
		other = n.Keys
	}
	if both, err := exists(ctx, js, other); err != nil {
		return n, err
	} else if both {
		return n, fmt.Errorf("job %q has %d partition(s) and also a stream %s of the other layout (made by an older ferry, or beside `ferry setup --partitions`): the keys in one are consumed by no service of the other; drain and delete the one that should not be there", n.Job, got, other)
	}
	if want > 0 && want != got {
		return n, config.Invalid(fmt.Errorf("--partitions %d: job %q has %d partition(s), fixed when it was set up (a key's partition decides which stream dedupes it); drain it and set up a new job to change it", want, n.Job, got))
	}
	return n.WithPartitions(got), nil
}

// recorded is the partition count in stream's metadata; 0 when the stream does not exist or
// keeps none.
func recorded(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	v, ok := s.CachedInfo().Config.Metadata[MetaPartitions]
	if !ok {
		return 0, nil
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > MaxPartitions {
		return 0, fmt.Errorf("stream %s: metadata %s %q is no partition count: was it made by ferry setup?", stream, MetaPartitions, v)
	}
	return p, nil
}

func exists(ctx context.Context, js jetstream.JetStream, stream string) (bool, error) {
	_, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", stream, err)
	}
	return true, nil
}

// claim makes DONE with the job's partition count unless it exists, and checks the count it
// keeps: another process may have made the job in between (errLayoutClaimed).
func claim(ctx context.Context, js jetstream.JetStream, n Names, done jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, n.Done)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if s, err = js.CreateStream(ctx, done); errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, n.Done) // made meanwhile, otherwise
		}
	}
	if err != nil {
		return fmt.Errorf("create stream %s: %w", n.Done, err)
	}
	// A DONE without a count predates it: Discover read the count from the work streams.
	have := s.CachedInfo().Config.Metadata[MetaPartitions]
	if have != "" && have != strconv.Itoa(max(n.Partitions, 1)) {
		return fmt.Errorf("job %q: %s keeps %s partition(s), this setup %d: %w", n.Job, n.Done, have, max(n.Partitions, 1), errLayoutClaimed)
	}
	return nil
}

// MetaBudget is the consumer metadata entry that holds --max-deliver, the handler runs a message
// gets before it is dead-lettered. The consumer's own MaxDeliver counts deliveries, and a stop or
// crash delivers prefetched messages that no handler ran (nakked, or timed out), so the server's
// count is only the backstop (DeliveryBackstop) and stage.Serve counts runs. A consumer without the
// entry predates that: the runner takes its MaxDeliver as the budget until `ferry setup` runs.
const MetaBudget = "ferry.max_deliver"

// AttemptsTTL is how long a recorded handler run counts against its message's budget.
const AttemptsTTL = 24 * time.Hour

// DeliveryBackstop is the consumers' MaxDeliver for a budget of handler runs. stage.Serve
// dead-letters a message at the budget, including one whose process dies while its handler runs
// (a redelivery records its run before the handler starts), so the server gives up only when the
// runner's count is lost (its record expired or unwritable). Each restart of a service uses one
// delivery of every message it had prefetched, the same head-of-queue messages each time: at the
// default 10, 200 deliveries is 190 restarts, about 16 hours of a Kubernetes crash loop at its
// 5-minute back-off, before a key never tried is dead-lettered max_deliveries.
func DeliveryBackstop(budget int) int { return budget*10 + 100 }

func (s Settings) backstop() int {
	if s.Backstop > 0 {
		return s.Backstop
	}
	return DeliveryBackstop(s.MaxDeliver)
}

// Setup creates every stream, consumer and bucket of the job that is missing; with update it also
// applies s to those that exist. It returns n with the job's partitions (Discover). Every service calls it at start without update (so a service
// started with default flags never undoes `ferry setup --ack-wait 5m`); `ferry setup` updates.
//
// A cluster that is still forming answers "no suitable peers" or "temporarily unavailable", or
// lets a request time out, for a while (a Kubernetes setup Job usually starts with the NATS pods);
// Setup retries those for up to clusterWait before it gives up. ctx ending (a permissions
// violation, see WhileAllowed) stops it at once.
func Setup(ctx context.Context, js jetstream.JetStream, n Names, s Settings, update bool) (Names, error) {
	if err := s.Validate(); err != nil {
		return n, err
	}
	deadline := time.Now().Add(clusterWait)
	for claims := 0; ; {
		found, err := Discover(ctx, js, n, s.Partitions)
		if err == nil {
			err = setup(ctx, js, found, s, update)
		}
		if errors.Is(err, errLayoutClaimed) && claims < 3 {
			claims++ // the job was made meanwhile: its count is what counts now
			continue
		}
		if err == nil {
			return found, nil
		}
		if !(clusterForming(err) || Unavailable(err)) {
			return n, err
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("%w (retried for %s: is every JetStream server of the cluster up, and are there at least --replicas %d of them?)", err, clusterWait, s.Replicas)
		}
		select {
		case <-ctx.Done():
			return n, err
		case <-time.After(time.Second):
		}
	}
}

// clusterWait bounds how long Setup waits for a forming cluster.
var clusterWait = time.Minute

// clusterForming tells the JetStream API errors of a cluster that has not yet elected its leaders
// or seen all its peers: 503s and "no suitable peers for placement" (10005).
func clusterForming(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == 10005)
}

func setup(ctx context.Context, js jetstream.JetStream, n Names, s Settings, update bool) error {
	work := func(name, subject string, maxBytes int64) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name: name, Subjects: []string{subject},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
			// DiscardNew: a full stream refuses the publish (the publisher waits); DiscardOld would
			// silently drop unprocessed keys.
			Discard: jetstream.DiscardNew, MaxBytes: maxBytes, MaxMsgs: -1,
			Duplicates: s.Dedupe, Replicas: s.Replicas,
			Metadata: map[string]string{MetaPartitions: strconv.Itoa(max(n.Partitions, 1))},
		}
	}
	done := jetstream.StreamConfig{Name: n.Done, Subjects: []string{n.DoneSubject}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew, MaxBytes: -1, MaxMsgs: -1,
		Duplicates: s.Dedupe, Replicas: s.Replicas,
		Metadata: map[string]string{MetaPartitions: strconv.Itoa(max(n.Partitions, 1))}}
	// DONE first: making it claims the job's partition count, before any work stream exists.
	if err := claim(ctx, js, n, done); err != nil {
		return err
	}
	var streams []jetstream.StreamConfig
	for _, q := range []struct {
		base     string
		maxBytes int64
	}{{n.Keys, -1}, {n.Blobs, s.BlobsMaxBytes}, {n.Uploaded, -1}} {
		subjects := n.Subjects(q.base)
		for i, name := range n.Streams(q.base) {
			// The cap is each partition's (as `ferry plan` counts the disk): a leader's share of
			// a job's blobs in transit does not shrink when partitions are added.
			streams = append(streams, work(name, subjects[i], q.maxBytes))
		}
	}
	streams = append(streams, []jetstream.StreamConfig{
		done,
		{Name: n.DLQ, Subjects: []string{n.DLQSubjects}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew, MaxBytes: -1, MaxMsgs: -1,
			Duplicates: s.Dedupe, Replicas: s.Replicas},
		{Name: n.Advisories, Subjects: n.AdvisorySubjects, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew, MaxBytes: -1, MaxMsgs: -1,
			Replicas: s.Replicas},
	}...)
	if update {
		// Only `ferry setup` (and prune itself, EnsurePruned) makes PRUNED: a service started with
		// a user that may not create streams must still start on a job made before PRUNED existed.
		streams = append(streams, prunedConfig(n, s.Replicas))
	}
	for _, cfg := range streams {
		if !update {
			if _, err := js.Stream(ctx, cfg.Name); err == nil {
				continue
			}
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
	}
	type consumer struct{ stream, name string }
	var consumers []consumer
	for _, q := range []consumer{{n.Keys, n.Fetcher}, {n.Blobs, n.Uploader}, {n.Uploaded, n.Verifier}} {
		for _, stream := range n.Streams(q.stream) {
			consumers = append(consumers, consumer{stream, q.name})
		}
	}
	consumers = append(consumers, consumer{n.Advisories, n.Advisor})
	for _, c := range consumers {
		cfg := jetstream.ConsumerConfig{
			Durable: c.name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.AckWait,
			MaxDeliver: s.backstop(), MaxAckPending: s.MaxAckPending,
			Metadata: map[string]string{MetaBudget: strconv.Itoa(s.MaxDeliver)},
			// Pull requests from many workers; the default 512 waiting pulls is plenty.
		}
		if c.stream == n.Advisories {
			cfg.MaxDeliver, cfg.Metadata = -1, nil // the advisor's own failures must never be dropped
		}
		if !update {
			if _, err := js.Consumer(ctx, c.stream, c.name); err == nil {
				continue
			}
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, c.stream, cfg); err != nil {
			return fmt.Errorf("create consumer %s on %s: %w", c.name, c.stream, err)
		}
	}
	if _, err := js.KeyValue(ctx, n.KV); err != nil || update {
		if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: n.KV, Description: "ferry job " + n.Job + ": checkpoints and live settings",
			History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas,
		}); err != nil {
			return fmt.Errorf("create kv bucket %s: %w", n.KV, err)
		}
	}
	if _, err := js.KeyValue(ctx, n.Attempts); err != nil || update {
		if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: n.Attempts, Description: "ferry job " + n.Job + ": handler runs of messages that failed",
			// A run older than this no longer counts: the key gets a fresh budget, which is
			// harmless, and the bucket holds a day of failures at most.
			TTL: AttemptsTTL, History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas,
		}); err != nil {
			return fmt.Errorf("create kv bucket %s: %w", n.Attempts, err)
		}
	}
	if _, err := js.ObjectStore(ctx, n.Objects); err != nil || update {
		if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: n.Objects, Description: "ferry job " + n.Job + ": blobs above the inline limit, in transit",
			TTL: s.ObjectTTL, MaxBytes: s.ObjectsMaxBytes, Storage: jetstream.FileStorage, Replicas: s.Replicas,
		}); err != nil {
			return fmt.Errorf("create object store %s: %w", n.Objects, err)
		}
	}
	return nil
}

// prunedConfig is the PRUNED stream: one record per object `ferry prune` deleted or moved, kept
// (limits retention, never discarded) for `ferry report`.
func prunedConfig(n Names, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: n.Pruned, Subjects: []string{n.PrunedSubject}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew, MaxBytes: -1, MaxMsgs: -1,
		Duplicates: 2 * time.Minute, Replicas: replicas}
}

// EnsurePruned creates the PRUNED stream of a job made before it existed; an existing one is left
// as it is.
func EnsurePruned(ctx context.Context, js jetstream.JetStream, n Names, replicas int) error {
	if _, err := js.Stream(ctx, n.Pruned); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", n.Pruned, err)
	}
	if _, err := js.CreateStream(ctx, prunedConfig(n, max(replicas, 1))); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", n.Pruned, err)
	}
	return nil
}

// Delete removes every stream, consumer and bucket of the job: its progress, dead letters and
// DONE record are gone afterwards. Missing ones are skipped.
func Delete(ctx context.Context, js jetstream.JetStream, n Names) error {
	// Both layouts, whatever Discover would say: a job with both must go whole.
	parts := 0
	for _, s := range []string{n.Done, n.Keys + "_0", n.Blobs + "_0", n.Uploaded + "_0"} {
		p, err := recorded(ctx, js, s)
		if err != nil {
			return err
		}
		parts = max(parts, p)
	}
	var errs []error
	streams := []string{n.Keys, n.Blobs, n.Uploaded}
	if parts > 1 {
		p := n.WithPartitions(parts)
		for _, base := range []string{n.Keys, n.Blobs, n.Uploaded} {
			streams = append(streams, p.Streams(base)...)
		}
	}
	for _, s := range append(streams, n.Done, n.DLQ, n.Advisories, n.Pruned) {
		if err := js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete stream %s: %w", s, err))
		}
	}
	for _, kv := range []string{n.KV, n.Attempts} {
		if err := js.DeleteKeyValue(ctx, kv); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			errs = append(errs, fmt.Errorf("delete kv %s: %w", kv, err))
		}
	}
	if err := js.DeleteObjectStore(ctx, n.Objects); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		errs = append(errs, fmt.Errorf("delete object store %s: %w", n.Objects, err))
	}
	return errors.Join(errs...)
}

// Consumers are the durable consumer name on every stream of work queue base (one per
// partition), for stage.ServeAll.
func Consumers(ctx context.Context, js jetstream.JetStream, n Names, base, name string) ([]jetstream.Consumer, error) {
	var cons []jetstream.Consumer
	for _, stream := range n.Streams(base) {
		c, err := js.Consumer(ctx, stream, name)
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", name, stream, err)
		}
		cons = append(cons, c)
	}
	return cons, nil
}
