package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/manifest/manifesttest"
)

// publishDone stores n DONE entries, keys k<from>..k<from+n-1>; a key with a comma, a quote and
// a line break among them.
func publishDone(t *testing.T, js jetstream.JetStream, n bus.Names, from, count int) {
	t.Helper()
	for i := from; i < from+count; i++ {
		key := fmt.Sprintf("k%05d", i)
		if i%7 == 0 {
			key += ",\"odd\nkey\" "
		}
		rec := bus.Record{ID: bus.KeyID(n.Job, key), Key: key, S3Key: "ab/" + key, Size: int64(i), MD5: make([]byte, 16), WriteTime: int64(i)}
		if i%11 == 0 {
			rec.Superseded = int64(i + 1)
		}
		m := nats.NewMsg(n.DoneSubject)
		rec.Encode(m.Header)
		m.Header.Set("Nats-Msg-Id", bus.MsgID("done", rec.ID))
		m.Data = []byte(key)
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

func newDrain(js jetstream.JetStream, n bus.Names, st Store, batch int) *Drain {
	return newDrainAt(js, n, st, "ferry-manifests/", batch)
}

func newDrainAt(js jetstream.JetStream, n bus.Names, st Store, prefix string, batch int) *Drain {
	return &Drain{JS: js, Names: n, Store: st, Prefix: prefix, Batch: batch,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
}

// segments decodes every segment of the job in name order.
func segments(t *testing.T, st Store, job string) []Entry {
	t.Helper()
	return segmentsAt(t, st, "ferry-manifests/", job)
}

func segmentsAt(t *testing.T, st Store, prefix, job string) []Entry {
	t.Helper()
	var out []Entry
	err := st.ListObjects(context.Background(), Dir(prefix, job), "", "", func(o blobstore.Object) error {
		b, _ := st.Get(context.Background(), o.Key)
		return Decode(bytes.NewReader(b), func(e Entry) error { out = append(out, e); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkChain: the segments hold DONE sequences 1..want exactly once each, in order, with the
// keys as published.
func checkChain(t *testing.T, got []Entry, want int) {
	t.Helper()
	if len(got) != want {
		t.Fatalf("segments hold %d entries, want %d", len(got), want)
	}
	for i, e := range got {
		key := fmt.Sprintf("k%05d", i)
		if i%7 == 0 {
			key += ",\"odd\nkey\" "
		}
		if e.Seq != uint64(i+1) || e.Record.Key != key || e.Record.S3Key != "ab/"+key || e.Record.Size != int64(i) {
			t.Fatalf("entry %d: seq %d key %q s3 %q size %d", i, e.Seq, e.Record.Key, e.Record.S3Key, e.Record.Size)
		}
	}
}

func doneState(t *testing.T, js jetstream.JetStream, n bus.Names) (uint64, uint64, State) {
	t.Helper()
	s, err := js.Stream(context.Background(), n.Done)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), n.KV)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := LoadState(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs, info.State.LastSeq, st
}

// TestDrain: every DONE entry ends in exactly one segment, once, and DONE is left holding only
// what is not in one, whatever crash comes between the steps.
func TestDrain(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// leftover, when not 0, is the length of a segment a drain wrote at the first name and
		// died before recording it (the rounds read 100 entries at a time).
		leftover int
	}{
		{"plain", 0},
		{"crash after a segment was written (shorter than the next read)", 30},
		{"crash after a segment was written (longer than the next read)", 170},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			st := manifesttest.New()
			publishDone(t, js, n, 0, 250)
			if tc.leftover > 0 {
				s, _ := js.Stream(ctx, n.Done)
				entries, err := newDrain(js, n, st, tc.leftover).read(ctx, s, 1, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := encode(st.Bucket(), entries)
				st.Set(SegmentKey("ferry-manifests/", n.Job, 1), body)
			}
			d := newDrain(js, n, st, 100)
			for i := 0; i < 10; i++ {
				if _, err := d.Round(ctx); err != nil {
					t.Fatal(err)
				}
			}
			checkChain(t, segments(t, st, n.Job), 250)
			msgs, last, state := doneState(t, js, n)
			if msgs != 0 || last != 250 {
				t.Errorf("DONE holds %d entries, last sequence %d; want 0, 250", msgs, last)
			}
			if state.NextSeq != 251 || state.Entries != 250 || state.Lost != 0 || state.Superseded != 23 {
				t.Errorf("state %+v", state)
			}
		})
	}
}

// TestDrainPurgesAfterCrash: a drain that died between recording its state and purging DONE
// leaves entries below NextSeq in DONE; the next round purges them before anything else and
// never writes them again.
func TestDrainPurgesAfterCrash(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := manifesttest.New()
	publishDone(t, js, n, 0, 50)
	d := newDrain(js, n, st, 100)
	// What Round does up to its purge.
	kv, _ := js.KeyValue(ctx, n.KV)
	s, _ := js.Stream(ctx, n.Done)
	entries, err := d.read(ctx, s, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := encode(st.Bucket(), entries)
	st.Set(SegmentKey("ferry-manifests/", n.Job, 1), body)
	state := State{NextSeq: 51, Segments: 1}
	state.add(entries)
	b, _ := json.Marshal(state)
	if _, err := kv.Create(ctx, StateKey, b); err != nil {
		t.Fatal(err)
	}
	if msgs, _, _ := doneState(t, js, n); msgs != 50 {
		t.Fatalf("DONE holds %d before the round", msgs)
	}
	publishDone(t, js, n, 50, 10)
	if _, err := d.Round(ctx); err != nil {
		t.Fatal(err)
	}
	checkChain(t, segments(t, st, n.Job), 60)
	if msgs, _, state := doneState(t, js, n); msgs != 0 || state.Entries != 60 || state.Segments != 2 {
		t.Errorf("DONE holds %d, state %+v", msgs, state)
	}
}

// TestDrainMinAge: entries newer than MinAge stay in DONE.
func TestDrainMinAge(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := manifesttest.New()
	publishDone(t, js, n, 0, 20)
	d := newDrain(js, n, st, 100)
	d.MinAge = time.Hour
	if res, err := d.Round(ctx); err != nil || res.Entries != 0 {
		t.Fatalf("round: %+v, %v", res, err)
	}
	if msgs, _, _ := doneState(t, js, n); msgs != 20 {
		t.Errorf("DONE holds %d, want 20", msgs)
	}
	d.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if res, err := d.Round(ctx); err != nil || res.Entries != 20 {
		t.Fatalf("round: %+v, %v", res, err)
	}
}

// TestDrainsRace: two drains at once write each entry into exactly one segment.
func TestDrainsRace(t *testing.T) {
	js, n := bustest.Job(t)
	drainsRace(t, js, n, manifesttest.New(), "ferry-manifests/")
}

func drainsRace(t *testing.T, js jetstream.JetStream, n bus.Names, st Store, prefix string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		d := newDrainAt(js, n, st, prefix, 17+i*13)
		wg.Go(func() { _ = d.Run(ctx, 5*time.Millisecond) })
	}
	for i := 0; i < 400; i += 40 {
		publishDone(t, js, n, i, 40)
		time.Sleep(10 * time.Millisecond)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, state := doneState(t, js, n); state.NextSeq == 401 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	checkChain(t, segmentsAt(t, st, prefix, n.Job), 400)
}

// TestDrainGap: DONE entries purged by someone else before the drain read them are counted lost,
// not hidden.
func TestDrainGap(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	st := manifesttest.New()
	publishDone(t, js, n, 0, 30)
	s, _ := js.Stream(ctx, n.Done)
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(11)); err != nil {
		t.Fatal(err)
	}
	res, err := newDrain(js, n, st, 100).Round(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, state := doneState(t, js, n); res.Lost != 10 || state.Lost != 10 || state.Entries != 20 || state.NextSeq != 31 {
		t.Errorf("result %+v, state %+v", res, state)
	}
}
