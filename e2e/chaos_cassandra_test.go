//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// The local stack's Cassandra nodes, as deploy/local/cassandra.sh starts them.
var cassNodes = map[string][]string{
	"dc1": {"1", "127.0.0.1", "dc1", "-9223372036854775808", "7199"},
	"dc2": {"2", "127.0.0.2", "dc2", "0", "7299"},
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// stackSh runs a bash script with deploy/local/lib.sh sourced (its pid files, spawn, stop_proc).
func stackSh(t *testing.T, timeout time.Duration, env []string, script string, args ...string) {
	t.Helper()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-c", `. "$FERRY_ROOT/deploy/local/lib.sh"; ` + script, "stack"}, args...)...)
	cmd.Env = append(append(os.Environ(), "FERRY_ROOT="+root), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", script, args, err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// cassJava is the java the running nodes use (read before stopping one).
func cassJava(t *testing.T) string {
	t.Helper()
	for _, dc := range []string{"dc1", "dc2"} {
		pid, err := os.ReadFile(filepath.Join(repoRoot(t), ".local/run/cassandra-"+dc+".pid"))
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + strings.TrimSpace(string(pid)) + "/exe"); err == nil {
			return exe
		}
	}
	t.Fatal("no running Cassandra node to learn the java from (make up)")
	return ""
}

// cassStop stops nodes (SIGTERM, SIGKILL after 60 s), as `make down` would, all at once.
func cassStop(t *testing.T, dcs ...string) {
	t.Helper()
	stackSh(t, 2*time.Minute, nil, `for dc in "$@"; do stop_proc "cassandra-$dc" 60 & done; wait`, dcs...)
}

// cassStart starts one stopped node and waits until it takes CQL connections.
func cassStart(t *testing.T, dc, java string) {
	t.Helper()
	n := cassNodes[dc]
	stackSh(t, 5*time.Minute, []string{"JAVA=" + java}, `pid_of "cassandra-$3" >/dev/null && exit 0
CASS_JAVA="$JAVA" spawn "cassandra-$3" "$LOGS/cassandra-$3.log" "$DEPLOY/cassandra/node.sh" "$@"
wait_until 240 "cassandra-$3" "$LOGS/cassandra-$3.log" port_open "$2" 9042
msg "cassandra-$3 takes CQL connections again"`, n...)
}

// cassRestore brings the whole local Cassandra back (whatever is missing) and waits until each
// node sees the other: deploy/local/cassandra.sh start is idempotent.
func cassRestore(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(t), "deploy/local/cassandra.sh"), "start")
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("restoring Cassandra failed (run make up): %v\n%s", err, out)
	}
}

// doneTap follows DONE as it grows and records when each key was verified and which read target
// served it.
type doneTap struct {
	mu      sync.Mutex
	entries []entry
	cc      jetstream.ConsumeContext
}

func (r *rig) tapDone() *doneTap {
	r.t.Helper()
	ctx := context.Background()
	s, err := r.js.Stream(ctx, r.names.Done)
	if err != nil {
		r.t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		r.t.Fatal(err)
	}
	tap := &doneTap{}
	tap.cc, err = cons.Consume(func(m jetstream.Msg) {
		tap.mu.Lock()
		tap.entries = append(tap.entries, entry{Key: string(m.Data()), Header: m.Headers(), Time: time.Now()})
		tap.mu.Unlock()
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(tap.cc.Stop)
	return tap
}

// count is the number of keys verified in [from, to) that source served.
func (d *doneTap) count(source string, from, to time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, e := range d.entries {
		if (source == "" || e.Header.Get(bus.HdrSource) == source) && !e.Time.Before(from) && e.Time.Before(to) {
			n++
		}
	}
	return n
}

// TestChaosCassandraOutage (scenario 5): with read targets ferry_demo.blobs on dc1, then the same
// table on dc2, the dc1 node is stopped mid-run (reads fall back to dc2), started again (reads
// return to dc1), then both are stopped (the fetchers hold their messages: no dead letters) and
// started again one after the other (work resumes with the first).
func TestChaosCassandraOutage(t *testing.T) {
	requireChaos(t)
	keys, _ := seeded(t)
	java := cassJava(t)
	t.Cleanup(func() { cassRestore(t) }) // whatever happens, the stack is whole again afterwards
	n := envInt("FERRY_CHAOS_CASS_KEYS", 12000)
	all := keys.Main[:min(n, len(keys.Main)-len(seedSizes))]
	r := newRig(t, "5 Cassandra dc1 down, both down", "cass", rigOptions{edit: func(j *config.Job) {
		dc1 := j.Source.Targets[0]
		dc1.Name = "dc1"
		dc2 := dc1
		dc2.Name, dc2.Hosts, dc2.LocalDC = "dc2", []string{"127.0.0.2"}, "dc2"
		j.Source.Targets = []config.Target{dc1, dc2}
	}})
	r.must("setup", "--ack-wait", "10s", "--dedupe-window", "5m")
	tap := r.tapDone()
	c := r.crew()
	c.add("producer", 1, "producer", "--keys", r.writeKeys("keys.txt", all), "--high-water", "2000")
	// Throttled so that the run outlasts the outages; lifted at the end with `ferry throttle`.
	c.add("fetcher", 2, "fetcher", "--concurrency", "16", "--read-rate", "20")
	c.add("uploader", 1, "uploader", "--concurrency", "16")
	c.add("verifier", 1, "verifier", "--concurrency", "16")
	var deadSeen uint64
	noDead := func(when string) {
		if d, ok := r.dead(); ok && d.Total() > deadSeen {
			t.Errorf("%s: %d dead letters %v, want none", when, d.Total(), d)
			deadSeen = d.Total()
		}
	}
	wait := func(timeout time.Duration, what string, cond func() bool) {
		r.waitFor(timeout, what, func() bool { c.tend(); return cond() })
	}
	var phases []string
	phase := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		phases = append(phases, s)
		t.Logf("%s  [%s]", s, r.progress())
	}

	// A: both up, dc1 serves.
	start := time.Now()
	wait(3*time.Minute, "dc1 to serve 200 keys", func() bool { return tap.count("dc1", start, time.Now().Add(time.Hour)) >= 200 })

	// B: dc1 down; reads fall back to dc2.
	cassStop(t, "dc1")
	stopped := time.Now()
	time.Sleep(40 * time.Second)
	settled := stopped.Add(15 * time.Second)
	fromDC1, fromDC2 := tap.count("dc1", settled, time.Now()), tap.count("dc2", settled, time.Now())
	phase("dc1 down: %d keys verified from dc2, %d from dc1", fromDC2, fromDC1)
	if fromDC2 == 0 || fromDC1 > 0 {
		t.Errorf("with dc1 down: %d keys served by dc2, %d by dc1; want some by dc2 and none by dc1", fromDC2, fromDC1)
	}
	noDead("dc1 down")

	// C: dc1 back; reads return to it.
	cassStart(t, "dc1", java)
	back := time.Now()
	wait(4*time.Minute, "reads to return to dc1", func() bool { return tap.count("dc1", back.Add(5*time.Second), time.Now().Add(time.Hour)) >= 50 })
	phase("dc1 back: reads return to dc1 after %s", time.Since(back).Round(time.Second))
	noDead("dc1 back")

	// D: both down; the fetchers hold their messages.
	cassStop(t, "dc1", "dc2")
	bothDown := time.Now()
	time.Sleep(20 * time.Second) // in-flight work drains
	doneBefore, _ := r.msgs(r.names.Done)
	// Longer than MaxDeliver (10) ack waits (10 s): a message that used a delivery per ack wait
	// would run out of deliveries and be dead-lettered.
	hold := time.Duration(envInt("FERRY_CHAOS_CASS_HOLD_S", 300)) * time.Second
	r.waitFor(hold+time.Minute, "the hold", func() bool {
		c.tend()
		noDead("both down")
		return time.Since(bothDown) > hold
	})
	doneAfter, _ := r.msgs(r.names.Done)
	held := uint64(0)
	for _, s := range []string{r.names.Keys, r.names.Blobs, r.names.Uploaded} {
		m, _ := r.msgs(s)
		held += m
	}
	phase("both down for %s: DONE %d -> %d, %d keys held in the work queues", time.Since(bothDown).Round(time.Second), doneBefore, doneAfter, held)
	noDead("both down")
	// Every key published so far (KEYS' last sequence) is verified or still held: none dropped.
	if info, ok := r.streamInfo(r.names.Keys); ok && doneAfter+held < info.State.LastSeq {
		t.Errorf("both down: %d verified + %d held < %d keys published", doneAfter, held, info.State.LastSeq)
	}
	if doneAfter > doneBefore+50 {
		t.Errorf("both down: %d keys verified while no source was up", doneAfter-doneBefore)
	}
	for _, m := range c.members {
		if !m.finished && !m.svc.alive() {
			t.Errorf("%s exited while the source was down", m.svc.name)
		}
	}

	// E: dc1 returns; work resumes before dc2 is back.
	cassStart(t, "dc1", java)
	resumed := time.Now()
	wait(5*time.Minute, "work to resume on dc1", func() bool { return tap.count("dc1", resumed, time.Now().Add(time.Hour)) >= 50 })
	phase("dc1 back alone: work resumed after %s", time.Since(resumed).Round(time.Second))
	cassRestore(t)
	r.must("throttle", "--reads", "0")
	c.settle(20 * time.Minute)
	c.stop()
	noDead("the end")
	by := map[string]int{}
	for _, src := range []string{"dc1", "dc2"} {
		by[src] = tap.count(src, start.Add(-time.Hour), time.Now().Add(time.Hour))
	}
	note := fmt.Sprintf("served: dc1 %d, dc2 %d; %s", by["dc1"], by["dc2"], strings.Join(phases, "; "))
	want := map[string]string{}
	for _, k := range all {
		want[k] = outcomeVerified
	}
	r.reconcile(plan{want: want, note: note})
}
