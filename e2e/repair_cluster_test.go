//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/tools/repair"
	"github.com/ferry-migrate/ferry/tools/status"
)

// TestRepairCluster: `ferry repair` on three nats-servers in a cluster with R3 streams. The
// producer alone fills KEYS; a reset of the fetcher's consumer to #21 leaves #1..#20 below its
// ack floor, orphans as the cluster bugs leave them (nats-server #4736, #7680). `ferry status`
// counts them, `repair --dry-run` lists them and changes nothing, `repair` requeues them; the
// pipeline then ends every key verified or dead-lettered, none lost, no PUT twice.
//
// A clustered stream deletes what is at or below a consumer's ack floor by itself, orphans
// included: once 5 to 9 s after its replica starts, every 2 to 2½ minutes, at leader changes
// (nats-server's interest-state check, which covers work queues). So the orphans are made after
// the first check and repaired before the periodic one. Beside the job, on a stream and consumer
// configured as KEYS and its fetcher's, an orphan probe logs what the server does to orphans at
// start, at a consumer and at a stream leader change: only logged, that is nats-server's
// behaviour, not ferry's.
func TestRepairCluster(t *testing.T) {
	keys, _ := seeded(t)
	start := time.Now()
	cl := startNATSWith(t, natsSpec{nodes: 3, name: func(i int) string { return fmt.Sprintf("n%d", i+1) }})
	cl.waitMetaLeader(time.Minute)
	r := newRig(t, "repair: 20 orphans in KEYS, 3-node NATS R3", "repairc", rigOptions{nats: cl.URL()})
	all, want := r.keySet(keys, 52, 5)
	n := uint64(len(all))
	r.must("setup", "--replicas", "3", "--ack-wait", "10s", "--dedupe-window", "2m")
	probe := newOrphanProbe(t, r)
	r.must("producer", "--keys", r.writeKeys("keys.txt", all))
	t.Logf("cluster, setup and %d keys in KEYS in %s", n, time.Since(start).Round(time.Millisecond))

	info, ok := r.streamInfo(r.names.Keys)
	if !ok {
		t.Fatalf("stream %s missing", r.names.Keys)
	}
	firstCheck := info.Created.Add(12 * time.Second) // 9 s and a margin
	if probe.created.After(info.Created) {
		firstCheck = probe.created.Add(12 * time.Second)
	}
	time.Sleep(time.Until(firstCheck))
	probe.leaderChanges(cl)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keysStream, err := r.js.Stream(ctx, r.names.Keys)
	if err != nil {
		t.Fatal(err)
	}
	const floor = 20
	bustest.Orphan(t, r.js, r.names.Keys, r.names.Fetcher, floor+1)
	var wantLines []string // the dry run's list: each orphan's sequence and key
	orphans := map[uint64]*jetstream.RawStreamMsg{}
	for seq := uint64(1); seq <= floor; seq++ {
		m, err := keysStream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("KEYS #%d: %v", seq, err)
		}
		orphans[seq] = m
		wantLines = append(wantLines, fmt.Sprintf("%-8s  %s #%d  %s", bus.StageFetcher, r.names.Keys, seq, m.Data))
	}
	if sg := r.stage(bus.StageFetcher); sg.Orphaned != floor || sg.Messages != n || sg.Pending != n-floor || sg.AckPending != 0 {
		t.Errorf("status after the reset: %+v, want orphaned %d, messages %d, pending %d", sg, floor, n, n-floor)
	}

	out, code := r.runFerry(time.Minute, nil, "repair", "--dry-run", "--stage", bus.StageFetcher)
	t.Logf("repair --dry-run --stage fetcher (exit %d):\n%s", code, out)
	var listed []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, fmt.Sprintf("%-8s  %s #", bus.StageFetcher, r.names.Keys)) {
			listed = append(listed, line)
		}
	}
	if code != 0 || strings.Join(listed, "\n") != strings.Join(wantLines, "\n") ||
		!strings.Contains(out, fmt.Sprintf("%s: %d orphaned (at or below #%d, the consumer's ack floor), would requeue %d", r.names.Keys, floor, floor, floor)) ||
		!strings.Contains(out, fmt.Sprintf("would requeue %d orphaned messages (--dry-run: nothing changed)", floor)) {
		t.Errorf("dry run: exit %d, listed\n%s\nwant\n%s", code, strings.Join(listed, "\n"), strings.Join(wantLines, "\n"))
	}
	if info, ok := r.streamInfo(r.names.Keys); !ok || info.State.Msgs != n || info.State.FirstSeq != 1 || info.State.LastSeq != n {
		t.Errorf("KEYS after the dry run: %+v, want %d messages, #1..#%d (unchanged)", info.State, n, n)
	}

	out = r.must("repair")
	t.Logf("repair:\n%s", out)
	if !strings.Contains(out, fmt.Sprintf("%s: %d orphaned (at or below #%d, the consumer's ack floor), %d requeued", r.names.Keys, floor, floor, floor)) ||
		lastLine(out) != fmt.Sprintf("requeued %d orphaned messages", floor) {
		t.Errorf("repair did not say it requeued %d in KEYS", floor)
	}
	if info, ok := r.streamInfo(r.names.Keys); !ok || info.State.Msgs != n || info.State.FirstSeq != floor+1 || info.State.LastSeq != n+floor {
		t.Errorf("KEYS after repair: %+v, want %d messages, #%d..#%d", info.State, n, floor+1, n+floor)
	}
	// Each copy: the original's key and headers, in the original's order, an id of its own.
	for seq := uint64(1); seq <= floor; seq++ {
		m, err := keysStream.GetMsg(ctx, n+seq)
		if err != nil {
			t.Fatalf("KEYS #%d (the copy of #%d): %v", n+seq, seq, err)
		}
		o := orphans[seq]
		wantID := repair.ID(o.Header.Get(jetstream.MsgIDHeader), seq)
		if string(m.Data) != string(o.Data) || m.Header.Get(bus.HdrID) != o.Header.Get(bus.HdrID) || m.Header.Get(jetstream.MsgIDHeader) != wantID {
			t.Errorf("KEYS #%d: %q %v, want the copy of #%d: %q %v with id %s", n+seq, m.Data, m.Header, seq, o.Data, o.Header, wantID)
		}
	}
	for _, sg := range r.status().Stages {
		if sg.Orphaned != 0 {
			t.Errorf("status after repair: %s orphaned %d", sg.Stage, sg.Orphaned)
		}
		if sg.Stage == bus.StageFetcher && (sg.Messages != n || sg.Pending != n) {
			t.Errorf("status after repair: %+v, want %d messages, all pending", sg, n)
		}
	}

	// The copies are above the ack floor: a stream leader change keeps them.
	old, now := cl.stepDown(r.nc, "$JS.API.STREAM.LEADER.STEPDOWN."+r.names.Keys)
	time.Sleep(2 * time.Second)
	if info, ok := r.streamInfo(r.names.Keys); !ok || info.State.Msgs != n {
		t.Errorf("KEYS after its leader moved from %s to %s: %+v, want %d messages", old, now, info.State, n)
	}

	c := r.crew()
	c.add("fetcher", 1, "fetcher", "--concurrency", "4")
	c.add("uploader", 1, "uploader", "--concurrency", "4")
	c.add("verifier", 1, "verifier", "--concurrency", "4")
	c.settle(time.Minute)
	c.stop()
	if len(c.exits) > 0 {
		t.Errorf("services exited by themselves: %v", c.exits)
	}
	rw := r.reconcile(plan{want: want, note: fmt.Sprintf("%d requeued by repair", floor)})
	if rw.lost != 0 || rw.dupPUTs != "0" {
		t.Errorf("%d lost, %s duplicate PUTs, want 0 and 0", rw.lost, rw.dupPUTs)
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Second))
}

// orphanProbe is a work queue and its consumer beside the job's, configured as KEYS and the
// fetcher's, with ten messages: it logs what the cluster does to orphans.
type orphanProbe struct {
	r       *rig
	s       jetstream.Stream
	name    string // the stream's
	created time.Time
}

// newOrphanProbe creates the probe's stream and consumer, publishes #1..#10 and at once makes
// #1 and #2 orphans (a reset to #3), before the stream's first interest-state check.
func newOrphanProbe(t *testing.T, r *rig) *orphanProbe {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, ok := r.streamInfo(r.names.Keys)
	if !ok {
		t.Fatalf("stream %s missing", r.names.Keys)
	}
	fetcher, err := r.js.Consumer(ctx, r.names.Keys, r.names.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	cfg := keys.Config
	cfg.Name, cfg.Subjects = r.names.Keys+"_PROBE", []string{r.names.KeysSubject + "-probe"}
	p := &orphanProbe{r: r, name: cfg.Name}
	if p.s, err = r.js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("probe stream: %v", err)
	}
	p.created = p.s.CachedInfo().Created
	if _, err := p.s.CreateConsumer(ctx, fetcher.CachedInfo().Config); err != nil {
		t.Fatalf("probe consumer: %v", err)
	}
	for i := 1; i <= 10; i++ {
		if _, err := r.js.Publish(ctx, cfg.Subjects[0], fmt.Appendf(nil, "probe-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	p.orphan(3, fmt.Sprintf("%s after the stream's creation", time.Since(p.created).Round(time.Millisecond)))
	return p
}

// leaderChanges logs the probe after the stream's first interest-state check, then makes fresh
// orphans before a consumer and before a stream leader change and logs what is left after each.
func (p *orphanProbe) leaderChanges(cl *natsCluster) {
	p.r.t.Helper()
	p.log(fmt.Sprintf("%s after the stream's creation, no leader change", time.Since(p.created).Round(time.Millisecond)))
	p.orphan(6, "")
	p.watch(2*time.Second, "2 s later, no leader change")
	old, now := cl.stepDown(p.r.nc, "$JS.API.CONSUMER.LEADER.STEPDOWN."+p.name+"."+p.r.names.Fetcher)
	p.watch(3*time.Second, fmt.Sprintf("consumer leader %s -> %s", old, now))
	p.orphan(9, "")
	p.watch(2*time.Second, "2 s later, no leader change")
	old, now = cl.stepDown(p.r.nc, "$JS.API.STREAM.LEADER.STEPDOWN."+p.name)
	p.watch(3*time.Second, fmt.Sprintf("stream leader %s -> %s", old, now))
}

// orphan resets the probe's consumer to seq and logs the state.
func (p *orphanProbe) orphan(seq uint64, when string) {
	p.r.t.Helper()
	bustest.Orphan(p.r.t, p.r.js, p.name, p.r.names.Fetcher, seq)
	p.log(strings.TrimSuffix(fmt.Sprintf("consumer reset to #%d, %s", seq, when), ", "))
}

// watch waits up to d for the stream to drop messages, and logs its state.
func (p *orphanProbe) watch(d time.Duration, what string) {
	p.r.t.Helper()
	before, _ := p.r.msgs(p.name)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if n, ok := p.r.msgs(p.name); ok && n < before {
			time.Sleep(500 * time.Millisecond) // the rest of the deletes
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.log(what)
}

func (p *orphanProbe) log(what string) {
	p.r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	si, err := p.s.Info(ctx)
	if err != nil {
		p.r.t.Logf("orphan probe, %s: %v", what, err)
		return
	}
	c, err := p.s.Consumer(ctx, p.r.names.Fetcher)
	if err != nil {
		p.r.t.Logf("orphan probe, %s: %v", what, err)
		return
	}
	ci := c.CachedInfo()
	p.r.t.Logf("orphan probe, %s: stream %d messages #%d..#%d (leader %s), ack floor #%d, pending %d (leader %s)", what,
		si.State.Msgs, si.State.FirstSeq, si.State.LastSeq, si.Cluster.Leader, ci.AckFloor.Stream, ci.NumPending, ci.Cluster.Leader)
}

// stage is the named stage of `ferry status --json`.
func (r *rig) stage(name string) status.Stage {
	r.t.Helper()
	for _, sg := range r.status().Stages {
		if sg.Stage == name {
			return sg
		}
	}
	r.t.Fatalf("ferry status --json: no stage %s", name)
	return status.Stage{}
}

// stepDown asks the leader of the group a stepdown subject addresses to step down, and waits
// until another node leads it. It returns the old leader and the new one.
func (c *natsCluster) stepDown(nc *nats.Conn, subj string) (string, string) {
	c.t.Helper()
	old := c.leaderOf(nc, subj)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _ = nc.Request(subj, nil, 5*time.Second)
		for range 20 {
			time.Sleep(250 * time.Millisecond)
			if now := c.leaderOf(nc, subj); now != "" && now != old {
				return old, now
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: leader still %q after 30s", subj, old)
		}
	}
}
