// Package bus is ferry's NATS JetStream topology: the names of a job's streams, subjects, consumers
// and buckets, the message headers, the dead-letter entries, and the idempotent setup of all of it.
// The names are the public interface operators type (`nats stream info FERRY_demo_KEYS`).
package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"strconv"
	"strings"
)

// Stage names, used in DLQ subjects, headers and metric labels.
const (
	StageProducer = "producer"
	StageFetcher  = "fetcher"
	StageUploader = "uploader"
	StageVerifier = "verifier"
	StageAdvisor  = "advisor" // turns max-deliveries advisories into dead letters
)

// Names are every JetStream name of one job.
type Names struct {
	Job string

	Keys, KeysSubject         string // work queue, consumer Fetcher
	Blobs, BlobsSubject       string // work queue, consumer Uploader
	Uploaded, UploadedSubject string // work queue, consumer Verifier
	Done, DoneSubject         string // limits: one entry per verified key, the proof at the end
	DLQ, DLQSubjects          string // limits, never discards: ferry.J.dlq.<stage>.<reason>
	Advisories                string // captures MAX_DELIVERIES advisories of the work queues
	Pruned, PrunedSubject     string // limits: one record per object `ferry prune` deleted or moved
	AdvisorySubjects          []string

	Fetcher, Uploader, Verifier, Advisor string // durable consumer names

	// Partitions is how many streams each work queue (KEYS, BLOBS, UPLOADED) is split into, by a
	// hash of the key's Ferry-Id (`ferry setup --partitions`); 0 or 1: one stream each, named
	// Keys, Blobs and Uploaded. With N, they are Keys_0 … Keys_<N-1> on subjects
	// KeysSubject.0 …, each with its own leader; every service consumes all of them. DONE, the
	// DLQ and the rest stay one stream: they carry records, not blobs, and DONE's sequence is the
	// verified count. Discover reads it from the job's streams.
	Partitions int

	KV       string // checkpoints and live settings
	Objects  string // object store for blobs above the inline limit
	Attempts string // handler runs of messages that failed, by stream and sequence (stage.Serve)
}

// For returns the names of job j. The job must already be validated (config.ValidateJobName).
func For(j string) Names {
	n := Names{
		Job:             j,
		Keys:            "FERRY_" + j + "_KEYS",
		KeysSubject:     "ferry." + j + ".keys",
		Blobs:           "FERRY_" + j + "_BLOBS",
		BlobsSubject:    "ferry." + j + ".blobs",
		Uploaded:        "FERRY_" + j + "_UPLOADED",
		UploadedSubject: "ferry." + j + ".uploaded",
		Done:            "FERRY_" + j + "_DONE",
		DoneSubject:     "ferry." + j + ".done",
		DLQ:             "FERRY_" + j + "_DLQ",
		DLQSubjects:     "ferry." + j + ".dlq.>",
		Advisories:      "FERRY_" + j + "_ADVISORIES",
		Pruned:          "FERRY_" + j + "_PRUNED",
		PrunedSubject:   "ferry." + j + ".pruned",
		Fetcher:         "fetcher",
		Uploader:        "uploader",
		Verifier:        "verifier",
		Advisor:         "advisor",
		KV:              "FERRY_" + j,
		Objects:         "FERRY_" + j + "_LARGE",
		Attempts:        "FERRY_" + j + "_ATTEMPTS",
	}
	n.advisorySubjects()
	return n
}

// WithPartitions returns n with p partitions per work queue (p < 1 means 1).
func (n Names) WithPartitions(p int) Names {
	n.Partitions = max(p, 1)
	n.advisorySubjects()
	return n
}

func (n *Names) advisorySubjects() {
	n.AdvisorySubjects = nil
	for _, base := range []string{n.Keys, n.Blobs, n.Uploaded} {
		for _, s := range n.Streams(base) {
			n.AdvisorySubjects = append(n.AdvisorySubjects, AdvisoryPrefix+s+".*")
		}
	}
}

// Streams are the streams of the work queue base (n.Keys, n.Blobs or n.Uploaded): base itself,
// or with partitions base_0 … base_<N-1>.
func (n Names) Streams(base string) []string {
	if n.Partitions <= 1 {
		return []string{base}
	}
	s := make([]string, n.Partitions)
	for p := range s {
		s[p] = base + "_" + strconv.Itoa(p)
	}
	return s
}

// Partition is the partition of the key whose Ferry-Id is id: FNV-1a of the id modulo N. Every
// stage's output for a key carries its Ferry-Id, so the key stays in one partition through the
// pipeline, and a redelivered message's output meets its first copy in the same stream's dedupe
// window. That is also why a job's partition count is fixed when it is set up.
func (n Names) Partition(id string) int {
	if n.Partitions <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n.Partitions))
}

// Route is the stream and subject of work queue base (n.Keys, n.Blobs or n.Uploaded) for the key
// whose Ferry-Id is id.
func (n Names) Route(base, id string) (stream, subject string) {
	subject = n.subjectOf(base)
	if n.Partitions <= 1 {
		return base, subject
	}
	p := strconv.Itoa(n.Partition(id))
	return base + "_" + p, subject + "." + p
}

// Subjects are the subjects of the work queue base's streams, in the order of Streams.
func (n Names) Subjects(base string) []string {
	subject := n.subjectOf(base)
	if n.Partitions <= 1 {
		return []string{subject}
	}
	s := make([]string, n.Partitions)
	for p := range s {
		s[p] = subject + "." + strconv.Itoa(p)
	}
	return s
}

func (n Names) subjectOf(base string) string {
	switch base {
	case n.Keys:
		return n.KeysSubject
	case n.Blobs:
		return n.BlobsSubject
	case n.Uploaded:
		return n.UploadedSubject
	}
	panic("bus: " + base + " is not a work queue of job " + n.Job) // a programming error
}

// Base is the work queue that stream belongs to (n.Keys, n.Blobs or n.Uploaded), or "" when it is
// none of their streams.
func (n Names) Base(stream string) string {
	for _, base := range []string{n.Keys, n.Blobs, n.Uploaded} {
		if stream == base && n.Partitions <= 1 {
			return base
		}
		if p, ok := strings.CutPrefix(stream, base+"_"); ok && n.Partitions > 1 {
			if i, err := strconv.Atoi(p); err == nil && i >= 0 && i < n.Partitions && strconv.Itoa(i) == p {
				return base
			}
		}
	}
	return ""
}

// DLQSubject is where a dead letter of stage for reason goes.
func (n Names) DLQSubject(stage, reason string) string {
	return "ferry." + n.Job + ".dlq." + stage + "." + reason
}

// KeyID is the identity of one key in one job: the Ferry-Id header the producer sets and every
// stage's Nats-Msg-Id derives from, so the broker drops the output of a redelivered message.
func KeyID(job, key string) string {
	h := sha256.New()
	h.Write([]byte(job))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// MsgID is the Nats-Msg-Id of a stage's output for the key whose Ferry-Id is id.
func MsgID(stage, id string) string { return stage + ":" + id }

// AdvisoryPrefix starts the subject of a max-deliveries advisory; the stream and the consumer
// follow it: $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>.
const AdvisoryPrefix = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."
