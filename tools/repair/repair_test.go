package repair

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/status"
)

const settle = 50 * time.Millisecond

func TestBound(t *testing.T) {
	info := func(ackFloor, delivered uint64, ackPending int) *jetstream.ConsumerInfo {
		return &jetstream.ConsumerInfo{AckFloor: jetstream.SequenceInfo{Stream: ackFloor},
			Delivered: jetstream.SequenceInfo{Stream: delivered}, NumAckPending: ackPending}
	}
	for _, tc := range []struct {
		name          string
		ci            *jetstream.ConsumerInfo
		want          uint64
		wantDelivered bool
	}{
		{"new consumer", info(0, 0, 0), 0, false},
		{"all delivered were acked", info(40, 40, 0), 40, false},
		{"some ack-pending: only the ack floor is sure", info(40, 55, 3), 40, false},
		{"nothing ack-pending, floor behind (the #7680 state)", info(40, 55, 0), 55, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, delivered := Bound(tc.ci)
			if got != tc.want || delivered != tc.wantDelivered {
				t.Errorf("Bound = %d, %v; want %d, %v", got, delivered, tc.want, tc.wantDelivered)
			}
		})
	}
}

func TestID(t *testing.T) {
	if got := ID("fetcher:abc", 17); got != "fetcher:abc/repair-17" {
		t.Errorf("ID = %q", got)
	}
	if got := ID("", 3); got != "repair-3" {
		t.Errorf("ID without one = %q", got)
	}
}

func TestQueues(t *testing.T) {
	n := bus.For("t")
	for _, tc := range []struct {
		stages []string
		want   []string
	}{
		{nil, []string{"fetcher", "uploader", "verifier", "advisor"}},
		{[]string{"all"}, []string{"fetcher", "uploader", "verifier", "advisor"}},
		{[]string{"verifier", "fetcher"}, []string{"fetcher", "verifier"}},
		{[]string{"uploader"}, []string{"uploader"}},
	} {
		qs, err := Queues(n, tc.stages)
		var got []string
		for _, q := range qs {
			got = append(got, q.Stage)
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Queues(%v) = %v, %v; want %v", tc.stages, got, err, tc.want)
		}
	}
	if qs, _ := Queues(n, []string{"uploader"}); qs[0] != (Queue{Stage: "uploader", Stream: n.Blobs, Consumer: n.Uploader}) {
		t.Errorf("uploader queue = %+v", qs[0])
	}
	if _, err := Queues(n, []string{"fetcher", "producer"}); err == nil || !config.IsInvalid(err) || !strings.Contains(err.Error(), `"producer"`) {
		t.Errorf("unknown stage: %v, want a usage error naming it", err)
	}
}

func TestLine(t *testing.T) {
	q := Queue{Stage: "uploader", Stream: "FERRY_t_BLOBS", Consumer: "uploader"}
	for _, tc := range []struct {
		name   string
		r      Result
		dryRun bool
		want   string
	}{
		{"none", Result{Queue: q, Bound: 9}, false, "uploader  FERRY_t_BLOBS: none orphaned (at or below #9, the consumer's ack floor)"},
		{"requeued", Result{Queue: q, Bound: 9, Orphaned: 3, Requeued: 3}, false, "uploader  FERRY_t_BLOBS: 3 orphaned (at or below #9, the consumer's ack floor), 3 requeued"},
		{"dry run", Result{Queue: q, Bound: 9, Orphaned: 3}, true, "uploader  FERRY_t_BLOBS: 3 orphaned (at or below #9, the consumer's ack floor), would requeue 3"},
		{"delivered bound, advisor's share", Result{Queue: q, Bound: 12, Delivered: true, AwaitAdvisor: 2}, false,
			"uploader  FERRY_t_BLOBS: none orphaned (at or below #12, the consumer's last delivered (nothing ack-pending)); 2 out of deliveries left to the advisor"},
		{"no consumer", Result{Queue: q, NoConsumer: true}, false, "uploader  FERRY_t_BLOBS: no consumer uploader (the stage never started); nothing to repair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Line(tc.r, tc.dryRun); got != tc.want {
				t.Errorf("Line =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// publishN publishes n messages to q's subject as the stage before it does: Ferry-* headers,
// a Nats-Msg-Id and the expected stream. KEYS messages carry the key as their body and no
// Ferry-Key, as the producer's.
func publishN(t *testing.T, js jetstream.JetStream, nm bus.Names, q Queue, subject string, count int) map[string]*nats.Msg {
	t.Helper()
	sent := map[string]*nats.Msg{}
	for i := 1; i <= count; i++ {
		key := fmt.Sprintf("photos/%03d.jpg", i)
		m := nats.NewMsg(subject)
		m.Header.Set(bus.HdrID, bus.KeyID(nm.Job, key))
		m.Header.Set(bus.HdrOrigin, fmt.Sprintf("keys.txt:%d", i))
		if q.Stream == nm.Keys {
			m.Data = []byte(key)
		} else {
			m.Header.Set(bus.HdrKey, key)
			m.Header.Set(bus.HdrSize, "5")
			m.Data = fmt.Appendf(nil, "blob%d", i)
		}
		if _, err := js.PublishMsg(context.Background(), m, jetstream.WithMsgID(bus.MsgID("test", bus.KeyID(nm.Job, key))),
			jetstream.WithExpectStream(q.Stream)); err != nil {
			t.Fatal(err)
		}
		sent[key] = m
	}
	return sent
}

func stageOf(t *testing.T, js jetstream.JetStream, n bus.Names, name string) status.Stage {
	t.Helper()
	st, err := status.Collect(context.Background(), js, n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Stages {
		if s.Stage == name {
			return s
		}
	}
	t.Fatalf("no stage %s in status", name)
	return status.Stage{}
}

// TestRepair makes real orphans (the consumer recreated to start at k, so the k−1 messages
// before it sit below its ack floor) and checks status counts them, a dry run lists them and
// changes nothing, and a repair requeues them so that the consumer delivers all N again.
func TestRepair(t *testing.T) {
	const total, k = 10, 4
	for _, stage := range []string{bus.StageFetcher, bus.StageUploader} {
		t.Run(stage, func(t *testing.T) {
			js, n := bustest.Job(t)
			ctx := context.Background()
			qs, _ := Queues(n, []string{stage})
			q := qs[0]
			subject := map[string]string{bus.StageFetcher: n.KeysSubject, bus.StageUploader: n.BlobsSubject}[stage]
			sent := publishN(t, js, n, q, subject, total)
			bustest.Orphan(t, js, q.Stream, q.Consumer, k)

			if sg := stageOf(t, js, n, stage); sg.Orphaned != k-1 || sg.Messages != total || sg.Pending != total-k+1 {
				t.Fatalf("status before: %+v, want %d orphaned of %d messages", sg, k-1, total)
			}

			// The dry run lists the orphans and changes nothing.
			var found []Orphan
			r, err := Repair(ctx, js, n, q, Options{DryRun: true, Settle: settle, Found: func(o Orphan) { found = append(found, o) }})
			if err != nil {
				t.Fatal(err)
			}
			if r.Orphaned != k-1 || r.Requeued != 0 || r.Bound != k-1 || len(found) != k-1 {
				t.Fatalf("dry run: %+v, found %+v", r, found)
			}
			for i, o := range found {
				if want := fmt.Sprintf("photos/%03d.jpg", i+1); o.Seq != uint64(i+1) || o.Key != want || o.Subject != subject || o.NewSeq != 0 {
					t.Errorf("dry run orphan %d = %+v, want #%d %s", i, o, i+1, want)
				}
			}
			if bustest.Msgs(t, js, q.Stream) != total || stageOf(t, js, n, stage).Orphaned != k-1 {
				t.Fatal("the dry run changed the stream")
			}

			// The repair requeues them: k−1 copies at new sequences, the originals gone.
			found = nil
			r, err = Repair(ctx, js, n, q, Options{Settle: settle, Found: func(o Orphan) { found = append(found, o) }})
			if err != nil {
				t.Fatal(err)
			}
			if r.Orphaned != k-1 || r.Requeued != k-1 {
				t.Fatalf("repair: %+v", r)
			}
			for i, o := range found {
				if o.NewSeq != uint64(total+i+1) {
					t.Errorf("orphan #%d requeued as #%d, want #%d", o.Seq, o.NewSeq, total+i+1)
				}
			}
			s, _ := js.Stream(ctx, q.Stream)
			si, _ := s.Info(ctx)
			if si.State.Msgs != total || si.State.FirstSeq != k || si.State.LastSeq != total+k-1 {
				t.Errorf("stream after repair: %d messages, #%d..#%d; want %d, #%d..#%d", si.State.Msgs, si.State.FirstSeq, si.State.LastSeq, total, k, total+k-1)
			}
			if sg := stageOf(t, js, n, stage); sg.Orphaned != 0 || sg.Pending != total {
				t.Errorf("status after repair: %+v, want 0 orphaned, %d pending", sg, total)
			}

			// The consumer delivers all N, bodies and headers as sent apart from Nats-Msg-Id.
			c, err := js.Consumer(ctx, q.Stream, q.Consumer)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]jetstream.Msg{}
			for deadline := time.Now().Add(5 * time.Second); len(got) < total && time.Now().Before(deadline); {
				batch, err := c.Fetch(total, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				for m := range batch.Messages() {
					key := m.Headers().Get(bus.HdrKey)
					if key == "" {
						key = string(m.Data())
					}
					got[key] = m
					if err := m.Ack(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if len(got) != total {
				t.Fatalf("consumer delivered %d distinct keys, want %d: %v", len(got), total, slices.Sorted(maps.Keys(got)))
			}
			for key, want := range sent {
				m := got[key]
				md, _ := m.Metadata()
				h := m.Headers()
				wantID := want.Header.Get(jetstream.MsgIDHeader)
				if md.Sequence.Stream > total { // a copy
					orig := uint64(0)
					fmt.Sscanf(key, "photos/%d.jpg", &orig)
					wantID = ID(wantID, orig)
				}
				if h.Get(jetstream.MsgIDHeader) != wantID {
					t.Errorf("%s (#%d): Nats-Msg-Id %q, want %q", key, md.Sequence.Stream, h.Get(jetstream.MsgIDHeader), wantID)
				}
				if string(m.Data()) != string(want.Data) || m.Subject() != subject {
					t.Errorf("%s: body %q on %s, want %q on %s", key, m.Data(), m.Subject(), want.Data, subject)
				}
				for name, v := range want.Header {
					if name != jetstream.MsgIDHeader && !slices.Equal(h.Values(name), v) {
						t.Errorf("%s (#%d): header %s = %q, want %q", key, md.Sequence.Stream, name, h.Values(name), v)
					}
				}
				if extra := len(h) - len(want.Header); extra != 0 {
					t.Errorf("%s (#%d): headers %v, want those sent %v", key, md.Sequence.Stream, h, want.Header)
				}
			}

			// A second repair finds nothing (the work queue is empty now, and so is the walk).
			r, err = Repair(ctx, js, n, q, Options{Settle: settle})
			if err != nil || r.Orphaned != 0 || r.Requeued != 0 {
				t.Errorf("second repair: %+v, %v; want nothing found", r, err)
			}
		})
	}
}

// TestRepairTwice: a copy already stored (a repair interrupted between its publish and its
// delete) is dropped by the dedupe window the second time; the original is still deleted.
func TestRepairTwice(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	q := Queue{Stage: bus.StageVerifier, Stream: n.Uploaded, Consumer: n.Verifier}
	publishN(t, js, n, q, n.UploadedSubject, 3)
	bustest.Orphan(t, js, q.Stream, q.Consumer, 3)
	s, _ := js.Stream(ctx, q.Stream)
	raw, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The first run's publish of #1, without its delete.
	m := nats.NewMsg(raw.Subject)
	m.Data = raw.Data
	for k, v := range raw.Header {
		m.Header[k] = v
	}
	m.Header.Set(jetstream.MsgIDHeader, ID(raw.Header.Get(jetstream.MsgIDHeader), 1))
	first, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	var found []Orphan
	r, err := Repair(ctx, js, n, q, Options{Settle: settle, Found: func(o Orphan) { found = append(found, o) }})
	if err != nil || r.Requeued != 2 {
		t.Fatalf("repair: %+v, %v", r, err)
	}
	if found[0].NewSeq != first.Sequence {
		t.Errorf("#1 requeued as #%d, want the copy stored before, #%d", found[0].NewSeq, first.Sequence)
	}
	// 3 sent, #1 and #2 replaced by one copy each: 3 in all, not 4.
	if got := bustest.Msgs(t, js, q.Stream); got != 3 {
		t.Errorf("%d messages after the second repair, want 3", got)
	}
}

// TestRepairLeavesAdvisorsWork: a message that ran out of deliveries is also below the ack floor
// and still in the work queue, but its advisory waits for the advisor, which dead-letters it;
// neither status nor repair counts it as orphaned.
func TestRepairLeavesAdvisorsWork(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	s := bus.DefaultSettings()
	s.MaxDeliver, s.Backstop = 3, 3 // the server gives up after 3 deliveries
	if _, err := bus.Setup(ctx, js, n, s, true); err != nil {
		t.Fatal(err)
	}
	q := Queue{Stage: bus.StageFetcher, Stream: n.Keys, Consumer: n.Fetcher}
	publishN(t, js, n, q, n.KeysSubject, 1)
	c, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 { // three deliveries, each nakked; the fourth pull finds it out of deliveries
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			m.Nak()
		}
	}
	for deadline := time.Now().Add(5 * time.Second); bustest.Msgs(t, js, n.Advisories) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no max-deliveries advisory")
		}
	}
	ci, _ := c.Info(ctx)
	if b, _ := Bound(ci); b != 1 || bustest.Msgs(t, js, n.Keys) != 1 {
		t.Fatalf("bound %d, %d in KEYS; want the message below the bound, still there", b, bustest.Msgs(t, js, n.Keys))
	}
	if sg := stageOf(t, js, n, bus.StageFetcher); sg.Orphaned != 0 {
		t.Errorf("status: %+v, want 0 orphaned (it waits for the advisor)", sg)
	}
	r, err := Repair(ctx, js, n, q, Options{Settle: settle})
	if err != nil || r.Orphaned != 0 || r.AwaitAdvisor != 1 || bustest.Msgs(t, js, n.Keys) != 1 {
		t.Errorf("repair: %+v, %v, %d in KEYS; want it left to the advisor", r, err, bustest.Msgs(t, js, n.Keys))
	}
}

func TestRepairNoConsumerOrJob(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	if err := js.DeleteConsumer(ctx, n.Blobs, n.Uploader); err != nil {
		t.Fatal(err)
	}
	q := Queue{Stage: bus.StageUploader, Stream: n.Blobs, Consumer: n.Uploader}
	publishN(t, js, n, q, n.BlobsSubject, 2)
	if r, err := Repair(ctx, js, n, q, Options{}); err != nil || !r.NoConsumer || r.Orphaned != 0 {
		t.Errorf("no consumer: %+v, %v", r, err)
	}
	if sg := stageOf(t, js, n, bus.StageUploader); sg.Orphaned != 0 {
		t.Errorf("status without a consumer: %+v, want 0 orphaned (it will deliver all once created)", sg)
	}
	other := bus.For("nope")
	qs, _ := Queues(other, nil)
	if _, err := Repair(ctx, js, other, qs[0], Options{}); err == nil || !config.IsInvalid(err) {
		t.Errorf("unknown job: %v, want a usage error", err)
	}
	if _, err := js.Stream(ctx, other.Keys); err == nil {
		t.Error("repair of an unknown job created its stream")
	}
}

// TestRepairAdvisories: an orphaned max-deliveries advisory is requeued to its $JS.EVENT subject
// like any message (the server takes the publish), and the dry run names the message it is about.
func TestRepairAdvisories(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	subject := bus.AdvisoryPrefix + n.Blobs + "." + n.Uploader
	for _, seq := range []int{7, 9} {
		if _, err := js.Publish(ctx, subject, fmt.Appendf(nil, `{"stream":%q,"consumer":"uploader","stream_seq":%d,"deliveries":3}`, n.Blobs, seq)); err != nil {
			t.Fatal(err)
		}
	}
	bustest.Orphan(t, js, n.Advisories, n.Advisor, 2)
	if sg := stageOf(t, js, n, bus.StageAdvisor); sg.Orphaned != 1 {
		t.Errorf("status: %+v, want 1 orphaned", sg)
	}
	q := Queue{Stage: bus.StageAdvisor, Stream: n.Advisories, Consumer: n.Advisor}
	var found []Orphan
	r, err := Repair(ctx, js, n, q, Options{Settle: settle, Found: func(o Orphan) { found = append(found, o) }})
	if err != nil || r.Requeued != 1 || len(found) != 1 || found[0].Key != n.Blobs+" #7" || found[0].Subject != subject || found[0].NewSeq != 3 {
		t.Fatalf("repair: %+v, %v, found %+v", r, err, found)
	}
	s, _ := js.Stream(ctx, n.Advisories)
	raw, err := s.GetMsg(ctx, 3)
	if err != nil || raw.Header.Get(jetstream.MsgIDHeader) != "repair-1" || !strings.Contains(string(raw.Data), `"stream_seq":7`) {
		t.Errorf("copy: %+v, %v; want the advisory with Nats-Msg-Id repair-1", raw, err)
	}
	if bustest.Msgs(t, js, n.Advisories) != 2 || stageOf(t, js, n, bus.StageAdvisor).Orphaned != 0 {
		t.Error("want 2 advisories left, none orphaned")
	}
}
