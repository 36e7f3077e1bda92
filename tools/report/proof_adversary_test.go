package report

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/tools/prune"
)

// TestAdversaryProvenOverFailures: prune compares key sets and writetimes, never bytes. Two
// writes of a key with the same client timestamp (drivers that stamp whole milliseconds collide)
// leave Cassandra the larger value; the uploader keeps the object's other bytes of the same
// writetime and the verifier dead-letters the message verify_mismatch; a key sharing another's
// object is dead-lettered upload_error. prune then finds every key with an object of the right
// writetime, and the report shows PROVEN beside dead letters that say S3 holds the wrong bytes.
func TestAdversaryProvenOverFailures(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []bus.DeadLetter{
		{Key: "tie.jpg", Stage: bus.StageVerifier, Reason: bus.ReasonVerifyMismatch, Err: "other bytes of the same writetime", Attempts: 1},
		{Key: "x_1.jpg", Stage: bus.StageUploader, Reason: bus.ReasonUploadError, Err: "two source keys map to one S3 key", Attempts: 1},
	} {
		if err := bus.PublishDeadLetter(ctx, js, n, d); err != nil {
			t.Fatal(err)
		}
	}
	p := prune.Proof{Time: time.Now(), Complete: true, Consistency: "LOCAL_QUORUM", Required: "LOCAL_QUORUM", SourceKeys: 10, Objects: 9}
	if err := prune.SaveProof(ctx, kv, p); err != nil {
		t.Fatal(err)
	}
	r, err := Write(ctx, js, n, t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.ProofStatus == ProofProven {
		t.Errorf("cut-over %s while 2 keys are dead-lettered as failures (S3 does not hold their source bytes)", r.ProofStatus)
	}
}
