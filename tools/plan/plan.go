// Package plan is `ferry plan`: the capacity and cost of a migration worked out before the first
// byte moves, from the key count, the mean blob size, the days it may take and the per-core rates
// `make bench` measured. It is arithmetic only: it reads no job file and connects to nothing.
package plan

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// Defaults. The per-core rates are the medians of ferry-split's three rounds in the newest
// `make bench` result with per-process CPU, benchmarks/results/2026-12-07-fa61e6c-n10000.json
// (10,000 seeded blobs, median ~30 KiB): fetcher 0.454, uploader 0.807, verifier 0.507 CPU s per
// 1,000 files, each process's kernel rusage divided by the files it moved; a rate is 1,000 over
// that, rounded.
const (
	DefaultFetcherRate  = 2203 // files/s per core
	DefaultUploaderRate = 1239
	DefaultVerifierRate = 1972
	// DefaultBrokerCPU is nats-server's CPU s per 1,000 files migrated, per replica (an upper
	// bound for followers, which skip the client side): 0.60 measured
	// beside ferry-split (benchmarks/results/2026-11-25-5509680-dirty.json, nats-server's default
	// 2m sync then) plus 1.18, the price of fsyncing every write (ferry run's median 3.06 against
	// 1.88 CPU s with sync_interval 2m, benchmarks/results/2026-12-03-dbba75e-dirty-n20000.json).
	// The newest run did not measure the broker.
	DefaultBrokerCPU = 1.8
	// DefaultHeadroom is peak over mean: the seed system peaked at 10,000 files/s over a
	// 4,300 mean (2.3); ferry's backlogs absorb short peaks, so it is sized for 1.5.
	DefaultHeadroom = 1.5
	// DefaultLeaderMBps caps the BLOBS bytes one stream leader carries. The leader sends every
	// byte it takes in R times: to R-1 followers and once to the consumer, so at R3 400 MB/s in
	// is 1.2 GB/s out, the line rate of a 10 GbE NIC, and the leader's file store writes (and
	// fsyncs) those 400 MB/s through one stream's write path on top of its share as a follower.
	DefaultLeaderMBps = 400
	// DefaultLeaderMsgs caps the messages/s one stream leader takes: each is a fsynced file store
	// write and a replication round; the scan benchmarks put 49,000-71,000 keys/s into one R1
	// stream on the 2-core VM (docs/performance.md, before every write was fsynced).
	DefaultLeaderMsgs = 50_000
	// DefaultRecordBytes is one KEYS, UPLOADED or DONE message as stored: ferry's headers (Ferry-Id,
	// Ferry-Key, Ferry-S3-Key, size, MD5, CRC32C, writetime, ETag, origin), Nats-Msg-Id, the
	// subject and the file store's per-message overhead with a key of ~50 bytes.
	DefaultRecordBytes = 400
	// DedupeIDBytes is what nats-server keeps per Nats-Msg-Id in a stream's duplicate window
	// (the id string, its entry and map slot, the array that expires it): about 200 bytes.
	DedupeIDBytes = 200
	// DedupeStreams are the streams whose publishes carry a Nats-Msg-Id for every key: KEYS,
	// BLOBS, UPLOADED and DONE (DLQ holds only the failures).
	DedupeStreams = 4
	// DefaultNodeCores is the cores of one NATS server.
	DefaultNodeCores = 16
	// DefaultDoneDrain is how long DONE holds verified keys before the drain writes them to a
	// manifest segment.
	DefaultDoneDrain = time.Hour
	// DefaultHighWater is the producer's --high-water: the KEYS backlog it keeps at most.
	DefaultHighWater = 1_000_000
	// DefaultInlineLimit and DefaultPartSize are the fetcher's --inline-limit and the
	// uploader's --multipart-threshold.
	DefaultInlineLimit = 1 << 20
	DefaultPartSize    = 16 << 20
	maxParts           = 10_000 // S3's most parts per upload; the uploader grows the part size past it
)

// Prices are the S3 list prices in US dollars. The defaults are S3 Standard in us-east-1, checked
// on 2026-12-07 against aws.amazon.com/s3/pricing; every one is a flag. Storage is the first
// 50 TB's price; above 500 TB a month the list price is $0.021 (--storage-price 0.021).
type Prices struct {
	PutPer1000     float64 `json:"put_copy_post_list_per_1000"` // PUT, COPY, POST, LIST
	GetPer1000     float64 `json:"get_head_per_1000"`           // GET, HEAD
	StorageGBMonth float64 `json:"storage_gb_month"`            // per GB (2^30 bytes, as AWS bills) and month
}

// DefaultPrices are S3 Standard's us-east-1 list prices.
func DefaultPrices() Prices {
	return Prices{PutPer1000: 0.005, GetPer1000: 0.0004, StorageGBMonth: 0.023}
}

// Input is what a plan is worked out from.
type Input struct {
	Keys     float64 // keys to migrate
	MeanSize float64 // bytes per blob
	Days     float64 // the time the migration may take

	FetcherRate, UploaderRate, VerifierRate float64 // files/s per core
	CoresPerProcess                         float64
	Headroom                                float64 // peak over mean

	BrokerCPU   float64 // nats-server CPU s per 1,000 files, per replica
	NodeCores   float64 // cores of a NATS server
	LeaderMBps  float64 // BLOBS MB/s (10^6 bytes) one stream leader carries at most
	LeaderMsgs  float64 // messages/s one stream leader takes at most
	Replicas    int
	RecordBytes float64 // a KEYS, UPLOADED or DONE message as stored

	BlobsMaxBytes int64         // --blobs-max-bytes of each BLOBS stream
	HighWater     int64         // the producer's --high-water
	DoneDrain     time.Duration // DONE's span between drains
	AckWait       time.Duration
	Dedupe        time.Duration

	InlineLimit  int64   // the fetcher's --inline-limit: larger blobs travel through the object store
	PartSize     int64   // the uploader's --multipart-threshold
	SkipExisting bool    // the uploader's --skip-existing: a HEAD before every PUT
	DeepSample   float64 // the verifier's --deep-sample: share of objects read back in full
	Listings     int     // full bucket listings: a prune lists once (its proof reads that listing), a `ferry diff --bucket` once
	Prices       Prices
}

// DefaultInput is the input with every default set and no migration (keys, size, days) given.
func DefaultInput() Input {
	s := bus.DefaultSettings()
	return Input{
		FetcherRate: DefaultFetcherRate, UploaderRate: DefaultUploaderRate, VerifierRate: DefaultVerifierRate,
		CoresPerProcess: 1, Headroom: DefaultHeadroom,
		BrokerCPU: DefaultBrokerCPU, NodeCores: DefaultNodeCores,
		LeaderMBps: DefaultLeaderMBps, LeaderMsgs: DefaultLeaderMsgs,
		// A cluster that survives the loss of a server; `ferry setup` defaults to 1 for one server.
		Replicas: 3, RecordBytes: DefaultRecordBytes,
		BlobsMaxBytes: s.BlobsMaxBytes, HighWater: DefaultHighWater, DoneDrain: DefaultDoneDrain,
		AckWait: s.AckWait, Dedupe: s.Dedupe,
		InlineLimit: DefaultInlineLimit, PartSize: DefaultPartSize,
		Listings: 1, Prices: DefaultPrices(),
	}
}

// Validate says which inputs cannot make a plan.
func (in Input) Validate() error {
	var errs []error
	positive := func(name string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("--%s %g: must be a positive number", name, v))
		}
	}
	positive("keys", in.Keys)
	positive("mean-size", in.MeanSize)
	positive("days", in.Days)
	positive("fetcher-rate", in.FetcherRate)
	positive("uploader-rate", in.UploaderRate)
	positive("verifier-rate", in.VerifierRate)
	positive("cores-per-process", in.CoresPerProcess)
	positive("broker-cpu", in.BrokerCPU)
	positive("nats-node-cores", in.NodeCores)
	positive("leader-mbps", in.LeaderMBps)
	positive("leader-msgs", in.LeaderMsgs)
	positive("record-bytes", in.RecordBytes)
	if !(in.Headroom >= 1) || math.IsInf(in.Headroom, 0) {
		errs = append(errs, fmt.Errorf("--headroom %g: must be at least 1 (peak over mean)", in.Headroom))
	}
	if in.Replicas != 1 && in.Replicas != 3 && in.Replicas != 5 {
		errs = append(errs, fmt.Errorf("--replicas %d: must be 1, 3 or 5", in.Replicas))
	}
	if in.BlobsMaxBytes < 1 || in.HighWater < 0 || in.DoneDrain <= 0 {
		errs = append(errs, errors.New("--blobs-max-bytes and --done-drain must be positive, --high-water not negative"))
	}
	if in.Dedupe <= in.AckWait {
		errs = append(errs, fmt.Errorf("--dedupe-window %s: must be longer than --ack-wait %s, or a redelivered message's output flows twice", in.Dedupe, in.AckWait))
	}
	if in.InlineLimit < 1 || in.PartSize < 5<<20 {
		errs = append(errs, errors.New("--inline-limit must be positive and --multipart-threshold at least 5 MiB"))
	}
	if !(in.DeepSample >= 0 && in.DeepSample <= 1) {
		errs = append(errs, fmt.Errorf("--deep-sample %g: must be between 0 and 1", in.DeepSample))
	}
	if in.Listings < 0 {
		errs = append(errs, fmt.Errorf("--listings %d: must not be negative", in.Listings))
	}
	if in.Prices.PutPer1000 < 0 || in.Prices.GetPer1000 < 0 || in.Prices.StorageGBMonth < 0 {
		errs = append(errs, errors.New("prices must not be negative"))
	}
	return errors.Join(errs...)
}

// Plan is the result. Rates are per second; sizes in bytes; money in US dollars.
type Plan struct {
	Input Input `json:"-"`

	Rate      Rate      `json:"rate"`
	Processes Processes `json:"processes"`
	NATS      NATS      `json:"nats"`
	Dedupe    Dedupe    `json:"dedupe"`
	Cassandra Cassandra `json:"cassandra"`
	S3        S3        `json:"s3"`
	Measured  *Measured `json:"measured,omitempty"` // --from-bench
}

// Rate is the pace the deadline asks for.
type Rate struct {
	Keys         float64 `json:"keys"`
	MeanSize     float64 `json:"mean_size_bytes"`
	Days         float64 `json:"days"`
	Headroom     float64 `json:"headroom"`
	FilesPerSec  float64 `json:"files_per_sec"`
	BytesPerSec  float64 `json:"bytes_per_sec"`
	PeakFilesSec float64 `json:"peak_files_per_sec"`
	PeakBytesSec float64 `json:"peak_bytes_per_sec"`
	TotalBytes   float64 `json:"total_bytes"`
}

// Stage is one service's fleet at the peak rate.
type Stage struct {
	RatePerCore float64 `json:"files_per_sec_per_core"`
	Cores       float64 `json:"cores"`
	Processes   int     `json:"processes"`
}

// Processes are the fleets of the three scaled services.
type Processes struct {
	CoresPerProcess float64 `json:"cores_per_process"`
	Fetcher         Stage   `json:"fetcher"`
	Uploader        Stage   `json:"uploader"`
	Verifier        Stage   `json:"verifier"`
	Cores           float64 `json:"cores"`
}

// NATS is the cluster and its disk.
type NATS struct {
	Replicas           int     `json:"replicas"`
	Partitions         int     `json:"partitions"` // streams per stage
	PartitionsForBytes int     `json:"partitions_for_bytes"`
	PartitionsForMsgs  int     `json:"partitions_for_msgs"`
	BlobsBytesPerSec   float64 `json:"blobs_bytes_per_sec"` // at the peak, into BLOBS (all partitions)
	ReplicatedPerSec   float64 `json:"replicated_bytes_per_sec"`
	CPUCores           float64 `json:"cpu_cores"` // all servers
	Nodes              int     `json:"nodes"`
	// Disk, all replicas together.
	BlobsDisk      float64 `json:"blobs_disk_bytes"`    // the BLOBS caps, full
	DoneDisk       float64 `json:"done_disk_bytes"`     // DONE between two drains at the peak
	DoneNoDrain    float64 `json:"done_no_drain_bytes"` // DONE holding every key, as without a drain
	KeysDisk       float64 `json:"keys_disk_bytes"`     // KEYS at the producer's high-water
	Disk           float64 `json:"disk_bytes"`          // BLOBS + DONE + KEYS
	DiskPerNode    float64 `json:"disk_bytes_per_node"` //
	WritesPerNode  float64 `json:"disk_writes_bytes_per_node_per_sec"`
	ObjectStoreUse bool    `json:"object_store_carries_blobs"` // mean above the inline limit
}

// Dedupe is the duplicate windows' memory on the servers.
type Dedupe struct {
	Window         time.Duration `json:"window_ns"`
	IDsPerStream   float64       `json:"ids_per_stream"`
	Bytes          float64       `json:"bytes"` // all streams, all replicas
	BytesPerNode   float64       `json:"bytes_per_node"`
	Recommended    time.Duration `json:"recommended_window_ns"`
	RecommendBytes float64       `json:"recommended_bytes"`
}

// Cassandra is the read load the pace implies (one read per file: the benchmarks measure 1.00).
type Cassandra struct {
	ReadsPerSec     float64 `json:"reads_per_sec"`
	BytesPerSec     float64 `json:"bytes_per_sec"`
	PeakReadsPerSec float64 `json:"peak_reads_per_sec"`
	PeakBytesPerSec float64 `json:"peak_bytes_per_sec"`
}

// S3 is the request count and the list-price cost of the migration.
type S3 struct {
	Prices         Prices  `json:"prices"`
	Multipart      bool    `json:"multipart"`
	PutPerKey      float64 `json:"put_requests_per_key"` // PUT, or CreateMultipartUpload + parts + Complete
	HeadPerKey     float64 `json:"head_requests_per_key"`
	GetPerKey      float64 `json:"get_requests_per_key"`
	Puts           float64 `json:"put_requests"`
	Heads          float64 `json:"head_requests"`
	Gets           float64 `json:"get_requests"`
	Lists          float64 `json:"list_requests"`
	PutCost        float64 `json:"put_cost"`
	HeadCost       float64 `json:"head_cost"`
	GetCost        float64 `json:"get_cost"`
	ListCost       float64 `json:"list_cost"`
	RequestCost    float64 `json:"request_cost"`
	StorageGB      float64 `json:"storage_gb"`
	StorageMonthly float64 `json:"storage_cost_per_month"`
}

// Make works the plan out.
func Make(in Input) (Plan, error) {
	if err := in.Validate(); err != nil {
		return Plan{}, err
	}
	p := Plan{Input: in}
	secs := in.Days * 86400
	r := Rate{Keys: in.Keys, MeanSize: in.MeanSize, Days: in.Days, Headroom: in.Headroom,
		FilesPerSec: in.Keys / secs, TotalBytes: in.Keys * in.MeanSize}
	r.BytesPerSec = r.FilesPerSec * in.MeanSize
	r.PeakFilesSec, r.PeakBytesSec = r.FilesPerSec*in.Headroom, r.BytesPerSec*in.Headroom
	p.Rate = r

	stage := func(rate float64) Stage {
		cores := r.PeakFilesSec / rate
		return Stage{RatePerCore: rate, Cores: cores, Processes: ceil(cores / in.CoresPerProcess)}
	}
	p.Processes = Processes{CoresPerProcess: in.CoresPerProcess,
		Fetcher: stage(in.FetcherRate), Uploader: stage(in.UploaderRate), Verifier: stage(in.VerifierRate)}
	p.Processes.Cores = p.Processes.Fetcher.Cores + p.Processes.Uploader.Cores + p.Processes.Verifier.Cores

	rf := float64(in.Replicas)
	n := NATS{Replicas: in.Replicas, BlobsBytesPerSec: r.PeakBytesSec,
		PartitionsForBytes: ceil(r.PeakBytesSec / (in.LeaderMBps * 1e6)),
		PartitionsForMsgs:  ceil(r.PeakFilesSec / in.LeaderMsgs),
		ObjectStoreUse:     in.MeanSize > float64(in.InlineLimit)}
	n.Partitions = max(1, n.PartitionsForBytes, n.PartitionsForMsgs)
	// Every replica stores (and fsyncs) what the leader takes in: BLOBS' bytes and three
	// records a key (KEYS, UPLOADED, DONE).
	n.ReplicatedPerSec = (r.PeakBytesSec + 3*r.PeakFilesSec*in.RecordBytes) * rf
	n.CPUCores = r.PeakFilesSec * in.BrokerCPU / 1000 * rf
	// At least R servers, one BLOBS partition leader a server (a leader sends R times what it
	// takes in), and the broker's CPU.
	n.Nodes = max(in.Replicas, n.Partitions, ceil(n.CPUCores/in.NodeCores))
	n.BlobsDisk = float64(n.Partitions) * float64(in.BlobsMaxBytes) * rf
	n.DoneDisk = r.PeakFilesSec * in.DoneDrain.Seconds() * in.RecordBytes * rf
	n.DoneNoDrain = in.Keys * in.RecordBytes * rf
	n.KeysDisk = float64(in.HighWater) * in.RecordBytes * rf
	n.Disk = n.BlobsDisk + n.DoneDisk + n.KeysDisk
	n.DiskPerNode = n.Disk / float64(n.Nodes)
	n.WritesPerNode = n.ReplicatedPerSec / float64(n.Nodes)
	p.NATS = n

	dedupeBytes := func(window time.Duration) (ids, bytes float64) {
		ids = r.PeakFilesSec * window.Seconds()
		// Every replica keeps the map (nats-server's followers store each id too), so a new
		// leader still knows the window.
		return ids, ids * DedupeIDBytes * DedupeStreams * rf
	}
	d := Dedupe{Window: in.Dedupe, Recommended: RecommendedDedupe(in.AckWait)}
	d.IDsPerStream, d.Bytes = dedupeBytes(in.Dedupe)
	d.BytesPerNode = d.Bytes / float64(n.Nodes)
	_, d.RecommendBytes = dedupeBytes(d.Recommended)
	p.Dedupe = d

	p.Cassandra = Cassandra{ReadsPerSec: r.FilesPerSec, BytesPerSec: r.BytesPerSec,
		PeakReadsPerSec: r.PeakFilesSec, PeakBytesPerSec: r.PeakBytesSec}

	p.S3 = s3Cost(in)
	return p, nil
}

// ceil rounds up, but not over float noise: 150e9 keys in 40 days at 30 KiB and 1.5 is 2.0 GB/s,
// five 400 MB/s leaders, not six.
func ceil(v float64) int { return int(math.Ceil(v - 1e-9*math.Abs(v))) }

// RecommendedDedupe is the shortest duplicate window that still covers a redelivery: the ack
// wait, after which a crashed worker's message comes back, plus a minute for the handler that
// runs again and its publish. Longer costs server memory and buys nothing.
func RecommendedDedupe(ackWait time.Duration) time.Duration { return ackWait + time.Minute }

// RequestsPerKey counts the S3 requests ferry makes for one key of size bytes when nothing fails:
// the uploader's conditional PUT (or CreateMultipartUpload, the parts and
// CompleteMultipartUpload above the part size), its HEAD first for a blob that travelled through
// the object store (above the inline limit) or with --skip-existing, and the verifier's HEAD.
// Retries, refused conditional PUTs (an object already there) and writetime ties add more.
func RequestsPerKey(size float64, inlineLimit, partSize int64, skipExisting bool) (puts, heads float64, multipart bool) {
	heads = 1 // the verifier
	if skipExisting || size > float64(inlineLimit) {
		heads++
	}
	if size <= float64(partSize) {
		return 1, heads, false
	}
	part := float64(partSize)
	if need := math.Ceil(size / maxParts); need > part {
		part = need
	}
	return math.Ceil(size/part) + 2, heads, true
}

func s3Cost(in Input) S3 {
	s := S3{Prices: in.Prices}
	s.PutPerKey, s.HeadPerKey, s.Multipart = RequestsPerKey(in.MeanSize, in.InlineLimit, in.PartSize, in.SkipExisting)
	s.GetPerKey = in.DeepSample
	s.Puts, s.Heads, s.Gets = in.Keys*s.PutPerKey, in.Keys*s.HeadPerKey, in.Keys*s.GetPerKey
	// ListObjectsV2 returns at most 1,000 keys a page.
	s.Lists = float64(in.Listings) * math.Ceil(in.Keys/1000)
	s.PutCost = s.Puts / 1000 * in.Prices.PutPer1000
	s.ListCost = s.Lists / 1000 * in.Prices.PutPer1000
	s.HeadCost = s.Heads / 1000 * in.Prices.GetPer1000
	s.GetCost = s.Gets / 1000 * in.Prices.GetPer1000
	s.RequestCost = s.PutCost + s.ListCost + s.HeadCost + s.GetCost
	s.StorageGB = in.Keys * in.MeanSize / (1 << 30)
	s.StorageMonthly = s.StorageGB * in.Prices.StorageGBMonth
	return s
}
