package report

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/manifest/manifesttest"
)

// Adversarial tests of the drain's resolutions (manifest.ResolvedKey) as the report reads them.
// Each builds a failure dead letter followed, on the same NATS server, by a DONE entry of the
// same key: the report must call it resolved, as reading the segments did.

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func deadLetter(t *testing.T, js jetstream.JetStream, n bus.Names, key string) {
	t.Helper()
	if err := bus.PublishDeadLetter(context.Background(), js, n, bus.DeadLetter{Key: key, Stage: bus.StageUploader,
		Reason: bus.ReasonUploadError, Err: "503", Attempts: 5}); err != nil {
		t.Fatal(err)
	}
}

func reportNow(t *testing.T, js jetstream.JetStream, n bus.Names, store manifest.Store) *Report {
	t.Helper()
	r, err := WriteWith(context.Background(), js, n, t.TempDir(), time.Now(), Options{Manifests: store, Prefix: "m/"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// gatedStore holds the first Put of key until release is closed (a drain stalled on its segment
// write: a slow S3, a GC pause, a first round that spent minutes reading a DLQ of millions).
type gatedStore struct {
	*manifesttest.Store
	key              string
	once             sync.Once
	reached, release chan struct{}
}

func (g *gatedStore) Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	if in.Key == g.key {
		g.once.Do(func() {
			close(g.reached)
			<-g.release
		})
	}
	return g.Store.Put(ctx, in)
}

// killedStore writes key, then fails: the drain is killed (SIGTERM of a rolling update, its
// context cancelled) right after writing it, before recording its state.
type killedStore struct {
	*manifesttest.Store
	key string
}

func (k *killedStore) Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	res, err := k.Store.Put(ctx, in)
	if err == nil && in.Key == k.key {
		return res, errors.New("killed after this write")
	}
	return res, err
}

// TestAdversaryAdoptionOverwritesResolutions: two drains (a rolling update's surge, or "more are
// safe"). B reads the DLQ, then stalls before its segment write. Meanwhile k0000 fails and is
// verified; drain A, whose DLQ read is newer, writes segment 1 with k0000's entry and the
// resolutions beside it ({j0000, k0000}), and dies before recording. B wakes, adopts A's segment
// and, because writeResolved replaces the object with what B's older failure set selects,
// overwrites the resolutions with {j0000}. k0000's DONE entry is now only in the segment, which
// the report no longer reads (ResolvedFrom 1): a failure resolved by a later verification is
// reported unresolved, and the cut-over proof is withheld for good. (Without the kill the same
// happens when B adopts between A's record and A's purge.)
func TestAdversaryAdoptionOverwritesResolutions(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	store := manifesttest.New()
	deadLetter(t, js, n, "j0000")
	time.Sleep(5 * time.Millisecond)
	publishRecords(t, js, n, "a", 20)
	publishRecords(t, js, n, "j", 1) // j0000 verified after its failure

	gate := &gatedStore{Store: store, key: manifest.SegmentKey("m/", n.Job, 1), reached: make(chan struct{}), release: make(chan struct{})}
	var released sync.Once
	release := func() { released.Do(func() { close(gate.release) }) }
	t.Cleanup(release) // B never left blocked should the test stop early
	b := &manifest.Drain{JS: js, Names: n, Store: gate, Prefix: "m/", Batch: 1000, Log: quietLog(), Now: time.Now}
	errB := make(chan error, 1)
	go func() {
		_, err := b.Round(ctx)
		errB <- err
	}()
	select {
	case <-gate.reached:
	case err := <-errB:
		t.Fatalf("drain B ended before its segment write: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("drain B never reached its segment write")
	}

	// B has read the DLQ (j0000 only) and DONE's 21 entries. Now k0000 fails, then is verified.
	deadLetter(t, js, n, "k0000")
	time.Sleep(5 * time.Millisecond)
	publishRecords(t, js, n, "k", 1)
	a := &manifest.Drain{JS: js, Names: n, Store: &killedStore{Store: store, key: manifest.ResolvedKey("m/", n.Job, 1)},
		Prefix: "m/", Batch: 1000, Log: quietLog(), Now: time.Now}
	if _, err := a.Round(ctx); err == nil {
		t.Fatal("drain A was to die after writing its resolutions")
	}
	release()
	if err := <-errB; err != nil {
		t.Fatalf("drain B: %v", err)
	}

	r := reportNow(t, js, n, store)
	if r.Unresolved != 0 {
		t.Errorf("unresolved %d %v; want 0: k0000 failed and was verified after (its entry is in segment 1), but drain B's adoption replaced the resolutions A wrote beside it with its older failure set",
			r.Unresolved, r.UnresolvedExamples)
	}
}

// TestAdversaryDLQRecreated: the DLQ is deleted (an operator clearing handled dead letters with
// `nats stream rm`, or `ferry setup --delete` and setup again) and recreated by the next service
// start (bus.Setup creates what is missing); its sequences restart at 1. The running drain keeps
// dlqNext from the old stream, and deadletter.Since returns max(from, last+1) when last < from,
// so it never reads the new stream's first dead letters. A key that fails there and is verified
// afterwards gets no resolution; the report, which reads the new DLQ, calls it unresolved.
func TestAdversaryDLQRecreated(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	store := manifesttest.New()
	d := &manifest.Drain{JS: js, Names: n, Store: store, Prefix: "m/", Batch: 50, Log: quietLog(), Now: time.Now}
	for _, k := range []string{"x0000", "x0001", "x0002", "x0003", "x0004"} {
		deadLetter(t, js, n, k)
	}
	publishRecords(t, js, n, "a", 60)
	if _, _, err := d.DrainAll(ctx); err != nil {
		t.Fatal(err)
	}

	if err := js.DeleteStream(ctx, n.DLQ); err != nil {
		t.Fatal(err)
	}
	s := bus.DefaultSettings()
	s.MaxDeliver = 3
	if _, err := bus.Setup(ctx, js, n, s, false); err != nil {
		t.Fatal(err)
	}

	deadLetter(t, js, n, "k0000") // sequence 1 of the new DLQ
	time.Sleep(5 * time.Millisecond)
	publishRecords(t, js, n, "k", 1) // verified after its failure
	publishRecords(t, js, n, "b", 60)
	if _, _, err := d.DrainAll(ctx); err != nil {
		t.Fatal(err)
	}

	r := reportNow(t, js, n, store)
	if r.Unresolved != 0 {
		t.Errorf("unresolved %d %v; want 0: k0000 was verified after its failure, but the drain still follows the deleted DLQ's sequences and wrote no resolution for it",
			r.Unresolved, r.UnresolvedExamples)
	}
}

// hookJS calls hook once, right after the drain's first look at the DLQ (deadletter.Since's
// stream info): what is stored then is not in the drain's failure set for this round.
type hookJS struct {
	jetstream.JetStream
	dlq  string
	once sync.Once
	hook func()
}

func (h *hookJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := h.JetStream.Stream(ctx, name)
	if err != nil || name != h.dlq {
		return s, err
	}
	return &hookStream{Stream: s, h: h}, nil
}

type hookStream struct {
	jetstream.Stream
	h *hookJS
}

func (s *hookStream) Info(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	info, err := s.Stream.Info(ctx, opts...)
	s.h.once.Do(s.h.hook)
	return info, err
}

// TestAdversaryDrainClockAhead: the round's cutoff is the drain host's clock (d.Now) minus
// --min-age, compared with DONE's stored times (the NATS server's clock), and it now decides
// correctness: a DONE entry the round drains must have been stored before the round read the DLQ.
// --min-age 0 is accepted (the e2e tests use it) and `ferry manifest` runs on its own host; with
// its clock 200 ms ahead of the NATS server's, a failure and its verification stored (on the one
// server, in that order) between the round's DLQ read and its DONE read are drained without a
// resolution, and the report calls a resolved failure unresolved. Reading the DLQ after the DONE
// batch (or again before writeResolved) would not depend on any clock.
func TestAdversaryDrainClockAhead(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	store := manifesttest.New()
	publishRecords(t, js, n, "a", 10)
	hj := &hookJS{JetStream: js, dlq: n.DLQ}
	hj.hook = func() {
		deadLetter(t, js, n, "k0000")
		time.Sleep(5 * time.Millisecond)
		publishRecords(t, js, n, "k", 1)
	}
	d := &manifest.Drain{JS: hj, Names: n, Store: store, Prefix: "m/", Batch: 1000, MinAge: 0, Log: quietLog(),
		Now: func() time.Time { return time.Now().Add(200 * time.Millisecond) }}
	if _, _, err := d.DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	r := reportNow(t, js, n, store)
	if r.Verified != 11 || r.Manifest.InDone != 0 {
		t.Fatalf("verified %d, %d in DONE; want 11 drained", r.Verified, r.Manifest.InDone)
	}
	if r.Unresolved != 0 {
		t.Errorf("unresolved %d %v; want 0: k0000's DONE entry is stored after its dead letter on the same server, but the drain (clock 200 ms ahead, --min-age 0) drained it with a failure set read before either",
			r.Unresolved, r.UnresolvedExamples)
	}
}
