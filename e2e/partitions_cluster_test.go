//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/tools/status"
)

// TestPartitionedCluster: three nats-servers on loopback, `ferry setup --replicas 3 --partitions
// 3`. Each work queue is three streams whose leaders (and their consumers' leaders) are on three
// different servers; keys spread over all of them; two fetchers, uploaders and verifiers each
// consume every partition. The node leading the first KEYS partition (and one partition of every
// other stage) is SIGKILLed with work queued and in flight, and stays down: every key ends
// verified or dead-lettered with its reason, and `ferry status` sums the partitions.
func TestPartitionedCluster(t *testing.T) {
	keys, _ := seeded(t)
	start := time.Now()
	cl := startNATSWith(t, natsSpec{nodes: 3, name: func(i int) string { return fmt.Sprintf("n%d", i+1) }})
	cl.waitMetaLeader(time.Minute)
	r := newRig(t, "3-node NATS R3, 3 partitions, one node SIGKILLed", "parts",
		rigOptions{nats: cl.URL(), env: []string{"FERRY_LOG_LEVEL=debug"}})
	all, want := r.keySet(keys, envInt("FERRY_E2E_PARTITION_KEYS", 300), 10)
	out := r.must("setup", "--replicas", "3", "--partitions", "3", "--ack-wait", "10s", "--dedupe-window", "2m")
	r.names = r.names.WithPartitions(3)
	for _, s := range []string{"FERRY_" + r.job + "_KEYS_2", "FERRY_" + r.job + "_BLOBS_0", "FERRY_" + r.job + "_UPLOADED_1"} {
		if !strings.Contains(out, s) {
			t.Errorf("ferry setup output names no %s:\n%s", s, out)
		}
	}
	if _, ok := r.streamInfo(r.names.Keys); ok {
		t.Errorf("stream %s exists beside its partitions", r.names.Keys)
	}

	// Each stage's partitions led by three different servers, each consumer where its stream is.
	leaders := map[string]string{} // stream → its leader
	for q, base := range []string{r.names.Keys, r.names.Blobs, r.names.Uploaded} {
		consumer := []string{r.names.Fetcher, r.names.Uploader, r.names.Verifier}[q]
		var led []string
		for _, s := range r.names.Streams(base) {
			info, ok := r.streamInfo(s)
			if !ok || info.Cluster == nil {
				t.Fatalf("stream %s missing or not clustered after setup", s)
			}
			if info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
				t.Errorf("stream %s: %d replicas, want 3", s, info.Config.Replicas)
			}
			leaders[s] = info.Cluster.Leader
			led = append(led, info.Cluster.Leader)
			if cons := cl.leaderOf(r.nc, "$JS.API.CONSUMER.LEADER.STEPDOWN."+s+"."+consumer); cons != info.Cluster.Leader {
				t.Errorf("consumer %s on %s led by %s, its stream by %s", consumer, s, cons, info.Cluster.Leader)
			}
		}
		slices.Sort(led)
		if len(slices.Compact(led)) != 3 {
			t.Errorf("%s: partition leaders %v, want three different servers", base, led)
		}
	}
	t.Logf("leaders: %v", leaders)
	again := r.must("setup", "--replicas", "3") // the job's partitions found, leaders left in place
	if strings.Contains(again, "leaders spread") {
		t.Errorf("a second ferry setup moved leaders:\n%s", again)
	}
	if out, code := r.runFerry(time.Minute, nil, "setup", "--partitions", "4"); code != 2 || !strings.Contains(out, "has 3 partition(s)") {
		t.Errorf("ferry setup --partitions 4 on a job of 3: exit %d, want 2 and the job's count:\n%s", code, out)
	}

	file := r.writeKeys("keys.txt", all)
	c := r.crew()
	c.add("producer", 1, "producer", "--keys", file)
	c.add("fetcher", 2, "fetcher", "--concurrency", "8", "--read-rate", "15")
	c.add("uploader", 2, "uploader", "--concurrency", "8", "--upload-rate", "10")
	c.add("verifier", 2, "verifier", "--concurrency", "8")
	r.waitFor(2*time.Minute, "a third of the keys verified", func() bool {
		c.tend()
		d, ok := r.msgs(r.names.Done)
		return ok && d >= uint64(len(all)/3)
	})
	spread := map[string]uint64{}
	for _, s := range r.names.Streams(r.names.Keys) {
		info, _ := r.streamInfo(s)
		spread[s] = info.State.LastSeq
		if info.State.LastSeq < uint64(len(all))/6 {
			t.Errorf("%s holds %d of %d keys: the hash spreads them unevenly", s, info.State.LastSeq, len(all))
		}
	}
	t.Logf("keys per KEYS partition: %v", spread)
	victim := cl.index(leaders[r.names.Streams(r.names.Keys)[0]])
	t.Logf("SIGKILL %s at %s", cl.nodes[victim].name, r.progress())
	cl.kill(victim)
	killed := time.Now()
	c.settle(3 * time.Minute)
	t.Logf("drained %s after the kill, on two nodes: %s", time.Since(killed).Round(time.Second), r.progress())
	c.stop()
	if len(c.exits) > 0 {
		t.Errorf("services exited by themselves while a node was down: %v", c.exits)
	}
	r.reconcile(plan{want: want, note: cl.nodes[victim].name + " killed at a third"})

	var st status.Status
	if err := json.Unmarshal([]byte(r.must("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	for _, sg := range st.Stages {
		if sg.Stage == bus.StageAdvisor {
			continue
		}
		if sg.Partitions != 3 || sg.Messages != 0 || sg.Published == 0 {
			t.Errorf("status: stage %s %+v, want 3 partitions summed, empty", sg.Stage, sg)
		}
		if sg.Stage == bus.StageFetcher && sg.Published != uint64(len(all)) {
			t.Errorf("status: fetcher published %d, want %d (the partitions' sum)", sg.Published, len(all))
		}
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Second))
}
