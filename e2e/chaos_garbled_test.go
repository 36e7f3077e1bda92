//go:build integration

package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// garbled is a message published straight into one of the job's streams, bypassing the stage
// that would have written it.
type garbled struct {
	name    string
	subject string
	id      string            // Ferry-Id; "" publishes without it (the dead letter then carries KeyID(job, body))
	hdr     map[string]string // Ferry-* headers besides Ferry-Id
	body    []byte
	want    string // outcomeVerified, "stage/reason", or "" when it must leave no trace (ignored)
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

// garbledSet is one round of garbled messages; sfx keeps rounds apart.
func garbledSet(n bus.Names, rules *keyrules.Rules, prefix, good, sfx string, first bool) []garbled {
	body := []byte("0123456789")
	// The uploader and verifier map Ferry-Key with the job's rules themselves: a message is
	// checked for what it is garbled in only when its S3 key is the rules' one.
	s3Of := func(key string) string { k, _ := rules.Map(key); return k }
	blob := func(over map[string]string) map[string]string {
		h := map[string]string{bus.HdrKey: "garbled-blob" + sfx, bus.HdrS3Key: s3Of("garbled-blob" + sfx),
			bus.HdrSize: "10", bus.HdrMD5: md5hex(body), bus.HdrContentType: "image/jpeg", bus.HdrSource: "garbled"}
		for k, v := range over {
			h[k] = v
		}
		return h
	}
	goodS3, _ := rules.Map(good)
	goodBlob := seed.Content(good)
	adv := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + n.Keys + "." + n.Fetcher
	var set []garbled
	if first {
		// Every empty body is the same key: one round has it.
		set = append(set, garbled{name: "KEYS: empty body, no headers", subject: n.KeysSubject, want: "fetcher/invalid_key"})
	}
	return append(set, []garbled{
		{name: "KEYS: binary body", subject: n.KeysSubject, id: "g-keys-binary" + sfx, body: []byte("\xff\x00\x01garbage" + sfx), want: "fetcher/invalid_key"},
		{name: "KEYS: 4 KiB body", subject: n.KeysSubject, id: "g-keys-4k" + sfx, body: []byte(strings.Repeat("k", 4096) + sfx), want: "fetcher/invalid_key"},
		{name: "KEYS: a good key without ferry's headers", subject: n.KeysSubject, body: []byte(good), want: outcomeVerified},
		{name: "BLOBS: no headers", subject: n.BlobsSubject, body: []byte("garbled blob without headers" + sfx), want: "uploader/upload_error"},
		{name: "BLOBS: size header larger than the body", subject: n.BlobsSubject, id: "g-blobs-size" + sfx, hdr: blob(map[string]string{bus.HdrSize: "999"}), body: body, want: "uploader/upload_error"},
		{name: "BLOBS: size header not a number", subject: n.BlobsSubject, id: "g-blobs-nan" + sfx, hdr: blob(map[string]string{bus.HdrSize: "ten"}), body: body, want: "uploader/upload_error"},
		{name: "BLOBS: negative size", subject: n.BlobsSubject, id: "g-blobs-neg" + sfx, hdr: blob(map[string]string{bus.HdrSize: "-10"}), body: body, want: "uploader/upload_error"},
		{name: "BLOBS: MD5 not hex", subject: n.BlobsSubject, id: "g-blobs-md5hex" + sfx, hdr: blob(map[string]string{bus.HdrMD5: "zz"}), body: body, want: "uploader/upload_error"},
		{name: "BLOBS: MD5 of other bytes (S3 answers BadDigest)", subject: n.BlobsSubject, id: "g-blobs-md5" + sfx, hdr: blob(map[string]string{bus.HdrMD5: md5hex([]byte("other"))}), body: body, want: "uploader/upload_error"},
		{name: "BLOBS: object-store reference that does not exist", subject: n.BlobsSubject, id: "g-blobs-object" + sfx, hdr: blob(map[string]string{bus.HdrObject: "g-no-such-object" + sfx}), want: "uploader/source_error"},
		{name: "BLOBS: a good hand-made message", subject: n.BlobsSubject, id: "g-blobs-good" + sfx, hdr: map[string]string{bus.HdrKey: good, bus.HdrS3Key: goodS3,
			bus.HdrSize: strconv.Itoa(len(goodBlob)), bus.HdrMD5: md5hex(goodBlob), bus.HdrSource: "handmade"}, body: goodBlob, want: outcomeVerified},
		{name: "UPLOADED: malformed MD5", subject: n.UploadedSubject, id: "g-up-md5" + sfx, hdr: blob(map[string]string{bus.HdrMD5: "xyz"}), want: "verifier/verify_mismatch"},
		{name: "UPLOADED: no headers", subject: n.UploadedSubject, body: []byte("garbled uploaded without headers" + sfx), want: "verifier/verify_mismatch"},
		{name: "UPLOADED: object not in S3", subject: n.UploadedSubject, id: "g-up-missing" + sfx, hdr: blob(map[string]string{bus.HdrKey: "garbled-missing" + sfx, bus.HdrS3Key: s3Of("garbled-missing" + sfx)}), want: "verifier/verify_missing"},
		{name: "BLOBS: an S3 key outside the job's rules (path traversal)", subject: n.BlobsSubject, id: "g-blobs-traversal" + sfx, hdr: blob(map[string]string{bus.HdrS3Key: prefix + "../../../other-prefix/x" + sfx}), body: body, want: "uploader/upload_error"},
		{name: "BLOBS: an S3 key S3 would fold (./ and //)", subject: n.BlobsSubject, id: "g-blobs-fold" + sfx, hdr: blob(map[string]string{bus.HdrS3Key: prefix + "b/./c//d" + sfx}), body: body, want: "uploader/upload_error"},
		{name: "UPLOADED: another key's S3 key", subject: n.UploadedSubject, id: "g-up-other" + sfx, hdr: blob(map[string]string{bus.HdrS3Key: goodS3}), want: "verifier/verify_mismatch"},
		{name: "ADVISORIES: not JSON", subject: adv, id: "g-adv-json" + sfx, body: []byte("{not json" + sfx), want: "advisor/max_deliveries"},
		{name: "ADVISORIES: sequence not in KEYS (ignored)", subject: adv, id: "g-adv-seq" + sfx,
			body: fmt.Appendf(nil, `{"stream":%q,"consumer":"fetcher","stream_seq":999999999,"deliveries":10}`, n.Keys)},
	}...)
}

// TestFaultGarbled (scenario 8, short): garbled messages in every stream end in the DLQ with a
// reason, and the workers keep going: good keys published after them complete.
func TestFaultGarbled(t *testing.T) { garbledScenario(t, "8 garbled messages (short)", 1, 20) }

// TestChaosGarbled (scenario 8): five rounds of garbled messages while 2,000 good keys flow.
func TestChaosGarbled(t *testing.T) {
	requireChaos(t)
	garbledScenario(t, "8 garbled messages", 5, 2000)
}

func garbledScenario(t *testing.T, scenario string, rounds, good int) {
	keys, _ := seeded(t)
	r := newRig(t, scenario, "garbled", rigOptions{})
	// Three deliveries, so that any message retried as transient is dead-lettered in seconds.
	r.must("setup", "--max-deliver", "3", "--ack-wait", "10s", "--dedupe-window", "2m")
	job, err := config.Load(r.direct)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := keyrules.Compile(job.Keys)
	if err != nil {
		t.Fatal(err)
	}
	c := r.crew()
	c.add("fetcher", 1, "fetcher", "--concurrency", "8")
	c.add("uploader", 1, "uploader", "--concurrency", "8")
	c.add("verifier", 1, "verifier", "--concurrency", "8")

	want := map[string]string{}
	// Good keys through the producer: with the garbled rounds in the long version, after them in
	// the short one.
	small := make([]string, 0, good+rounds)
	for _, k := range keys.Main[:len(keys.Main)-len(seedSizes)] {
		if seed.Size(k) < 512<<10 {
			small = append(small, k)
		}
		if len(small) == good+rounds {
			break
		}
	}
	goodKeys, handmade := small[:good], small[good:]
	for _, k := range goodKeys {
		want[bus.KeyID(r.job, k)] = outcomeVerified
	}
	produce := func() { c.add("producer", 1, "producer", "--keys", r.writeKeys("good.txt", goodKeys)) }
	if rounds > 1 {
		produce()
	}
	ctx := context.Background()
	prefix := "chaos/" + r.job + "/garbled/"
	sent, deadWant := 0, 0
	for i := range rounds {
		for _, g := range garbledSet(r.names, rules, prefix, handmade[i], fmt.Sprintf("-r%d", i), i == 0) {
			m := nats.NewMsg(g.subject)
			m.Data = g.body
			for k, v := range g.hdr {
				m.Header.Set(k, v)
			}
			id := g.id
			if id != "" {
				m.Header.Set(bus.HdrID, id)
			} else {
				key := string(g.body)
				if k := g.hdr[bus.HdrKey]; k != "" {
					key = k
				}
				id = bus.KeyID(r.job, key)
			}
			if _, err := r.js.PublishMsg(ctx, m); err != nil {
				t.Fatalf("publish %s: %v", g.name, err)
			}
			sent++
			if g.want != "" {
				want[id] = g.want
				if g.want != outcomeVerified {
					deadWant++
				}
			}
		}
	}
	r.waitFor(3*time.Minute, fmt.Sprintf("%d dead letters of garbled messages", deadWant), func() bool {
		c.tend()
		d, ok := r.dead()
		return ok && d.Total() >= uint64(deadWant)
	})
	if rounds == 1 {
		produce()
	}
	c.settle(5 * time.Minute)
	c.stop()
	note := fmt.Sprintf("%d garbled messages in KEYS, BLOBS, UPLOADED, ADVISORIES + %d good keys", sent, len(goodKeys))
	if len(c.exits) > 0 {
		t.Errorf("services died on garbled messages: %v", c.exits)
		note += fmt.Sprintf("; died: %v", c.exits)
	}
	r.reconcile(plan{want: want, idOf: func(e entry) string { return e.Header.Get(bus.HdrID) }, note: note})
}
