package manifest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/manifest/manifesttest"
)

// doneIDs is the Ferry-Id of every entry DONE holds.
func doneIDs(t *testing.T, js jetstream.JetStream, n bus.Names) map[string]bool {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, n.Done)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	info, _ := s.Info(ctx)
	if info.State.Msgs == 0 {
		return out
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < info.State.Msgs; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := bus.DecodeRecord(m.Headers())
		out[rec.ID] = true
	}
	return out
}

// publishJob stores count DONE entries of keys <prefix><i>.
func publishJob(t *testing.T, js jetstream.JetStream, n bus.Names, prefix string, count int) []string {
	t.Helper()
	var ids []string
	for i := 0; i < count; i++ {
		key := fmt.Sprintf("%s%05d", prefix, i)
		bustest.Verified(t, js, n, key)
		ids = append(ids, bus.KeyID(n.Job, key))
	}
	return ids
}

// TestAdversaryAdoptForeignSegment: a segment already at the state's next name that DONE's
// entries did not produce (the job was deleted and set up again, so DONE restarts at 1 while the
// old job's segments stay; or someone else's object at that name) must not be adopted: adopting
// it purges DONE entries that are in no segment.
func TestAdversaryAdoptForeignSegment(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		old, current int
	}{
		{"old job longer", 120, 40},
		{"old job shorter", 30, 90},
		{"same length", 50, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			st := manifesttest.New()
			publishJob(t, js, n, "old", tc.old)
			if _, _, err := newDrain(js, n, st, 1000).DrainAll(ctx); err != nil {
				t.Fatal(err)
			}
			// ferry setup --delete, then setup: streams and KV are new, the segments stay.
			if err := bus.Delete(ctx, js, n); err != nil {
				t.Fatal(err)
			}
			s := bus.DefaultSettings()
			if _, err := bus.Setup(ctx, js, n, s, true); err != nil {
				t.Fatal(err)
			}
			ids := publishJob(t, js, n, "new", tc.current)
			_, _, err := newDrain(js, n, st, 1000).DrainAll(ctx)
			inSegments := map[string]bool{}
			for _, e := range segments(t, st, n.Job) {
				inSegments[e.Record.ID] = true
			}
			inDone := doneIDs(t, js, n)
			for _, id := range ids {
				if !inDone[id] && !inSegments[id] {
					t.Fatalf("DONE entry %s purged but in no segment (round error: %v)", id, err)
				}
			}
			if err == nil {
				t.Errorf("the drain adopted a segment DONE did not produce without a word")
			}
		})
	}
}

// TestAdversaryInteriorGapIsLost: an entry removed from the middle of DONE (a message deleted by
// hand) is in no segment: the drain must count it lost, so entries + lost = next sequence − 1.
func TestAdversaryInteriorGapIsLost(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := manifesttest.New()
	publishJob(t, js, n, "k", 30)
	s, _ := js.Stream(ctx, n.Done)
	for _, seq := range []uint64{5, 6, 20} {
		if err := s.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := newDrain(js, n, st, 100).DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	_, _, state := doneState(t, js, n)
	if state.Entries != 27 || state.Lost != 3 || state.Entries+state.Lost != state.NextSeq-1 {
		t.Errorf("state entries %d lost %d next %d; want 27, 3, 31", state.Entries, state.Lost, state.NextSeq)
	}
}

// TestAdversaryDedupeAfterPurge: a verifier's DONE publish redelivered (same Nats-Msg-Id) after
// the drain purged the first one must not be stored again, or DONE's last sequence (the
// verified count) counts the key twice.
func TestAdversaryDedupeAfterPurge(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	publishJob(t, js, n, "k", 10)
	if _, _, err := newDrain(js, n, manifesttest.New(), 100).DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, _, _ := doneState(t, js, n); msgs != 0 {
		t.Fatalf("DONE holds %d after the drain", msgs)
	}
	publishJob(t, js, n, "k", 10)
	if v, err := Verified(ctx, js, n); err != nil || v != 10 {
		t.Errorf("verified %d (%v) after redelivered DONE publishes, want 10", v, err)
	}
}

// TestAdversarySegmentBucket: the segment's bucket column is where the object is (S3 Batch
// Operations reads it), not the manifests' own bucket.
func TestAdversarySegmentBucket(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := manifesttest.New() // bucket "mem": a manifest.bucket of its own
	publishJob(t, js, n, "k", 3)
	d := newDrain(js, n, st, 100)
	d.Bucket = "photos"
	if _, _, err := d.DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	body := st.Object(SegmentKey("ferry-manifests/", n.Job, 1))
	zr, err := gzipReader(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(zr) == 0 || zr[0][0] != "photos" {
		t.Errorf("segment lines %q: bucket column is not the destination bucket", zr)
	}
}

func gzipReader(b []byte) ([][]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return csv.NewReader(zr).ReadAll()
}

// TestAdversaryForeignObjects: an object at the segment's name that is empty, not gzip or not a
// segment is refused, and DONE keeps every entry.
func TestAdversaryForeignObjects(t *testing.T) {
	ctx := context.Background()
	empty, _ := encode("x", nil)
	for _, tc := range []struct {
		name string
		body []byte
	}{{"empty segment", empty}, {"not gzip", []byte("hello")}, {"zero bytes", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			st := manifesttest.New()
			st.Set(SegmentKey("ferry-manifests/", n.Job, 1), tc.body)
			publishJob(t, js, n, "k", 10)
			if _, err := newDrain(js, n, st, 100).Round(ctx); err == nil {
				t.Error("round adopted a foreign object")
			}
			if msgs, _, state := doneState(t, js, n); msgs != 10 || state.NextSeq > 1 {
				t.Errorf("DONE holds %d, state %+v", msgs, state)
			}
		})
	}
}

// TestAdversaryLostAtRest: DONE purged by hand with nothing left in it (a migration at rest) must
// still show the entries as lost, not wait for a later entry to reveal the gap.
func TestAdversaryLostAtRest(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := manifesttest.New()
	publishJob(t, js, n, "k", 20)
	if _, _, err := newDrain(js, n, st, 100).DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	publishJob(t, js, n, "j", 15)
	s, _ := js.Stream(ctx, n.Done)
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := newDrain(js, n, st, 100).DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, last, state := doneState(t, js, n); state.Lost != 15 || state.Entries+state.Lost != last || state.NextSeq != last+1 {
		t.Errorf("DONE last %d, state entries %d lost %d next %d; want lost 15", last, state.Entries, state.Lost, state.NextSeq)
	}
}

// TestAdversaryBatchMemory: a round holds its batch in memory, about 400 bytes an entry with
// short keys, several KiB with long ones: --batch 10,000,000 is gigabytes, far past
// the 512 MiB the deployment gives the drain, so it would be killed every round and DONE never
// drained.
func TestAdversaryBatchMemory(t *testing.T) {
	for _, tc := range []struct {
		batch int
		ok    bool
	}{{DefaultBatch, true}, {1_000_000, true}, {1_000_001, false}, {10_000_000, false}} {
		c := Config{Batch: tc.batch}
		if err := c.Validate(""); (err == nil) != tc.ok {
			t.Errorf("--batch %d: %v", tc.batch, err)
		}
	}
}

// overwriteStore is an S3 that ignores If-None-Match: a conditional write replaces the object.
type overwriteStore struct{ *manifesttest.Store }

func (o overwriteStore) Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	in.IfAbsent = false
	return o.Store.Put(ctx, in)
}

// TestAdversaryIgnoredIfNoneMatch: two drains on an S3 that ignores If-None-Match overwrite each
// other's segment at one name (each read DONE to its own cutoff), and the loser's shorter one
// replaces what the winner recorded and purged: entries in no segment. The drain must refuse such
// a store before it purges anything.
func TestAdversaryIgnoredIfNoneMatch(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := overwriteStore{manifesttest.New()}
	publishJob(t, js, n, "k", 40)
	// Drain B read DONE up to entry 25 at its cutoff, then stalls before its write.
	b := newDrain(js, n, st, 25)
	s, _ := js.Stream(ctx, n.Done)
	late, err := b.read(ctx, s, 1, b.Now().Add(-b.MinAge))
	if err != nil {
		t.Fatal(err)
	}
	// Drain A writes entries 1..40, records them and purges DONE.
	_, errA := newDrain(js, n, st, 100).Round(ctx)
	// B's write lands: on this store it replaces A's segment.
	body, _ := encode(st.Bucket(), late)
	_, _ = st.Put(ctx, blobstore.PutInput{Key: SegmentKey("ferry-manifests/", n.Job, 1), Body: body, IfAbsent: true})
	msgs, _, state := doneState(t, js, n)
	if got := len(segments(t, st.Store, n.Job)); uint64(got)+msgs < 40 {
		t.Errorf("segments hold %d entries, DONE %d, state %+v (round: %v): entries purged into no segment", got, msgs, state, errA)
	}
	if errA == nil {
		t.Error("the drain ran on a store that ignores If-None-Match")
	}
}

// TestAdversaryDoneRecreated: DONE deleted and set up again while the job's KV stays (`nats
// stream rm`, then `ferry setup`) restarts at sequence 1 under a state whose next sequence is
// far ahead: the drain must not purge the new DONE's entries as if they were in its segments.
func TestAdversaryDoneRecreated(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := manifesttest.New()
	publishJob(t, js, n, "old", 50)
	if _, _, err := newDrain(js, n, st, 100).DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, n.Done); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Setup(ctx, js, n, bus.DefaultSettings(), true); err != nil {
		t.Fatal(err)
	}
	ids := publishJob(t, js, n, "new", 60)
	_, _, err := newDrain(js, n, st, 100).DrainAll(ctx)
	inSegments := map[string]bool{}
	for _, e := range segments(t, st, n.Job) {
		inSegments[e.Record.ID] = true
	}
	inDone := doneIDs(t, js, n)
	for _, id := range ids {
		if !inDone[id] && !inSegments[id] {
			t.Fatalf("DONE entry %s purged but in no segment (round error: %v)", id, err)
		}
	}
	if err == nil {
		t.Error("the drain went on over a DONE that is not the one its state was made from")
	}
}
