// Package bus is ferry's NATS JetStream topology: the names of a job's streams, subjects, consumers
// and buckets, the message headers, the dead-letter entries, and the idempotent setup of all of it.
// The names are the public interface operators type (`nats stream info FERRY_demo_KEYS`).
package bus

import (
	"crypto/sha256"
	"encoding/hex"
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
	for _, s := range []string{n.Keys, n.Blobs, n.Uploaded} {
		n.AdvisorySubjects = append(n.AdvisorySubjects, AdvisoryPrefix+s+".*")
	}
	return n
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
