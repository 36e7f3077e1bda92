package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Adversary tests of partitioned work streams: ways the job's partition count, read from its
// streams, can silently come out wrong, so that keys sit in streams no service consumes and no
// tool counts (neither verified nor dead-lettered).

// embeddedJS is a JetStream context on an embedded server of the test's own.
func embeddedJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := StartEmbedded(t.TempDir(), Sync{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := Connect(context.Background(), srv.URL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

func advMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// publishKeys publishes keys through n's routing (as the producer does) and returns how many
// went to each KEYS stream.
func publishKeys(t *testing.T, js jetstream.JetStream, n Names, count int) map[string]int {
	t.Helper()
	by := map[string]int{}
	for i := range count {
		k := fmt.Sprintf("img/%d.jpg", i)
		id := KeyID(n.Job, k)
		ack, err := js.PublishMsg(context.Background(), KeyMsg(n, k, id, "adv"), jetstream.WithMsgID(MsgID("keys", id)))
		if err != nil {
			t.Fatal(err)
		}
		by[ack.Stream]++
	}
	return by
}

// stranded is the messages in streams of the job's work queues that the layout n (what a
// service discovered) does not consume.
func stranded(t *testing.T, js jetstream.JetStream, n Names, all Names) uint64 {
	t.Helper()
	var lost uint64
	for _, base := range []string{all.Keys, all.Blobs, all.Uploaded} {
		for _, s := range all.Streams(base) {
			if slices.Contains(n.Streams(base), s) {
				continue
			}
			if _, err := js.Stream(context.Background(), s); err != nil {
				continue
			}
			lost += advMsgs(t, js, s)
		}
	}
	return lost
}

// TestAdversaryPartitionsHandDeletedFirstStream: a job of 3 partitions whose KEYS_0 was deleted
// by hand (or lost). A service restarting with default flags must not silently take the job for
// a new one-partition job: Discover finds neither FERRY_j_KEYS nor FERRY_j_KEYS_0 and returns 1,
// Setup then creates FERRY_j_KEYS/BLOBS/UPLOADED beside the partitions, and every key in
// KEYS_1, KEYS_2 (and all of BLOBS_*, UPLOADED_*) is consumed by nobody and counted by nothing
// (status, report, ferry run's backlog all read the 1-partition layout).
func TestAdversaryPartitionsHandDeletedFirstStream(t *testing.T) {
	ctx := context.Background()
	js := embeddedJS(t)
	s := DefaultSettings()
	s.Partitions = 3
	n3, err := Setup(ctx, js, For("j"), s, true)
	if err != nil {
		t.Fatal(err)
	}
	by := publishKeys(t, js, n3, 60)
	if err := js.DeleteStream(ctx, n3.Keys+"_0"); err != nil {
		t.Fatal(err)
	}
	// A fetcher restarts: service.Open -> Setup(default settings, no update).
	got, err := Setup(ctx, js, For("j"), DefaultSettings(), false)
	if err == nil && got.Partitions != 3 {
		lost := stranded(t, js, got, n3)
		t.Errorf("after KEYS_0 was deleted, a restarted service's Setup returned %d partition(s) and no error "+
			"(keys per partition were %v); it created %v and %d keys now sit in KEYS_1/KEYS_2 that nothing consumes or counts",
			got.Partitions, by, got.Streams(got.Keys), lost)
	}
	// `ferry setup` (update) without --partitions then also rewrites ADVISORIES to the
	// one-partition subjects: the partitions' max-deliveries advisories go nowhere.
	got, err = Setup(ctx, js, For("j"), DefaultSettings(), true)
	if err == nil {
		st, err := js.Stream(ctx, got.Advisories)
		if err != nil {
			t.Fatal(err)
		}
		subs := st.CachedInfo().Config.Subjects
		want := AdvisoryPrefix + n3.Keys + "_1.*"
		if !slices.Contains(subs, want) {
			t.Errorf("after ferry setup without --partitions, ADVISORIES listens on %v: no %s, so KEYS_1's max-deliveries advisories are dropped", subs, want)
		}
	}
}

// TestAdversaryPartitionsBothLayouts: `ferry setup --partitions 3` and a service with default
// flags both find the job missing and set it up (a Kubernetes setup Job starting with the
// service pods). Making DONE claims the count: the one that loses finds DONE's count and takes
// it, or fails; it never makes the other layout. An older ferry, which knows only the
// unpartitioned names, may still make FERRY_j_KEYS beside the partitions: Discover then refuses
// the job instead of answering 1, and Delete removes both layouts.
func TestAdversaryPartitionsBothLayouts(t *testing.T) {
	ctx := context.Background()
	js := embeddedJS(t)
	// Both look before either creates: both see a new job.
	n3, err := Discover(ctx, js, For("j"), 3) // ferry setup --partitions 3
	if err != nil {
		t.Fatal(err)
	}
	n1, err := Discover(ctx, js, For("j"), 0) // a fetcher starting with default flags
	if err != nil {
		t.Fatal(err)
	}
	s := DefaultSettings()
	s.Partitions = 3
	if err := setup(ctx, js, n3, s, true); err != nil {
		t.Fatal(err)
	}
	if err := setup(ctx, js, n1, DefaultSettings(), false); !errors.Is(err, errLayoutClaimed) {
		t.Fatalf("the second setup of a new job, with another count: %v, want errLayoutClaimed", err)
	}
	if _, err := js.Stream(ctx, n1.Keys); err == nil {
		t.Fatalf("the losing setup made %s beside the partitions", n1.Keys)
	}
	// Setup, as a service calls it, discovers again and takes the job's count.
	if got, err := Setup(ctx, js, For("j"), DefaultSettings(), false); err != nil || got.Partitions != 3 {
		t.Fatalf("a service's Setup after the race: %d partition(s), %v; want 3", got.Partitions, err)
	}
	by := publishKeys(t, js, n3, 60)

	// An older ferry makes the one-partition streams beside them.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n1.Keys, Subjects: []string{n1.KeysSubject},
		Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if got, err := Discover(ctx, js, For("j"), 0); err == nil {
		t.Errorf("job has both %s and %s_0..2 (keys %v); Discover returned %d partition(s) and no error: "+
			"%d keys are in streams no service will consume", n1.Keys, n3.Keys, by, got.Partitions, stranded(t, js, got, n3))
	}
	if err := Delete(ctx, js, For("j")); err != nil {
		t.Fatal(err)
	}
	for _, s := range append(n3.Streams(n3.Keys), n1.Keys, n3.Done) {
		if _, err := js.Stream(ctx, s); err == nil {
			t.Errorf("Delete left %s in place", s)
		}
	}
}
