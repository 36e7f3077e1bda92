//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestNATSCluster: three nats-servers (n1..n3) in a cluster on loopback ports, each with its own
// JetStream store; `ferry setup --replicas 3`; a few hundred keys migrated by services that know
// all three URLs, while the one node leading everything (meta, every stream and consumer, the KV
// and the object store) is SIGKILLed with work queued and in flight at every stage, and stays down
// until the end. Every key ends verified or dead-lettered with its reason; the node, restarted,
// catches up.
func TestNATSCluster(t *testing.T) {
	keys, _ := seeded(t)
	start := time.Now()
	cl := startNATSWith(t, natsSpec{nodes: 3, name: func(i int) string { return fmt.Sprintf("n%d", i+1) }})
	leader := cl.waitMetaLeader(time.Minute)
	t.Logf("cluster up in %s, meta leader %s", time.Since(start).Round(time.Millisecond), leader)

	// Debug logs: every retry with its key, delivery count and error, for the failure report.
	r := newRig(t, "3-node NATS R3, one node SIGKILLed until the end", "cluster",
		rigOptions{nats: cl.URL(), env: []string{"FERRY_LOG_LEVEL=debug"}})
	all, want := r.keySet(keys, envInt("FERRY_E2E_CLUSTER_KEYS", 300), 10)
	r.must("setup", "--replicas", "3", "--ack-wait", "10s", "--dedupe-window", "2m")
	for _, s := range []string{r.names.Keys, r.names.Blobs, r.names.Uploaded, r.names.Done, r.names.DLQ,
		r.names.Advisories, "KV_" + r.names.KV, "OBJ_" + r.names.Objects} {
		info, ok := r.streamInfo(s)
		if !ok {
			t.Fatalf("stream %s missing after setup", s)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas (cluster %+v), want 3", s, info.Config.Replicas, info.Cluster)
		}
	}

	// On failure, while the cluster still runs: each stage's stream and consumer state.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, sc := range [][2]string{{r.names.Keys, "fetcher"}, {r.names.Blobs, "uploader"}, {r.names.Uploaded, "verifier"}} {
			if info, ok := r.streamInfo(sc[0]); ok {
				t.Logf("stream %s: state %+v cluster %+v", sc[0], info.State, info.Cluster)
			}
			if c, err := r.js.Consumer(ctx, sc[0], sc[1]); err == nil {
				if ci, err := c.Info(ctx); err == nil {
					t.Logf("consumer %s: delivered %+v ack floor %+v pending %d ack pending %d redelivered %d cluster %+v",
						sc[1], ci.Delivered, ci.AckFloor, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.Cluster)
				}
			}
		}
	})

	// The worst loss: one node leads everything (meta, every stream and consumer, the KV and the
	// object store) when it dies, so every leader fails over at once, mid-flight. Killing the
	// uploader's consumer leader with the rest is how a message can be left stuck in BLOBS.
	victim := cl.index(leader)
	streams := []string{r.names.Keys, r.names.Blobs, r.names.Uploaded, r.names.Done, r.names.DLQ,
		r.names.Advisories, "KV_" + r.names.KV, "OBJ_" + r.names.Objects}
	consumers := [][2]string{{r.names.Keys, "fetcher"}, {r.names.Blobs, "uploader"}, {r.names.Uploaded, "verifier"}}
	cl.gatherLeaders(r.nc, victim, streams, consumers)

	file := r.writeKeys("keys.txt", all)
	c := r.crew()
	t.Cleanup(func() {
		for _, m := range c.members {
			n, last := retries(m.svc.log)
			if n > 0 || t.Failed() {
				t.Logf("%s: %d retries; the last:\n%s", m.svc.name, n, strings.Join(last, "\n"))
			}
		}
	})
	c.add("producer", 1, "producer", "--keys", file)
	// The uploader is held slower than the fetcher so that, at the kill, every stage has work
	// queued and in flight: KEYS and BLOBS backlogs, blobs in the object store, unacked messages.
	c.add("fetcher", 1, "fetcher", "--concurrency", "8", "--read-rate", "30")
	c.add("uploader", 1, "uploader", "--concurrency", "8", "--upload-rate", "20") // ~16 s of work
	c.add("verifier", 1, "verifier", "--concurrency", "8")
	r.waitFor(2*time.Minute, "a third of the keys verified", func() bool {
		c.tend()
		d, ok := r.msgs(r.names.Done)
		return ok && d >= uint64(len(all)/3)
	})
	t.Logf("SIGKILL %s (leader of %s) at %s", cl.nodes[victim].name, cl.ledBy(r.nc, victim, streams, consumers), r.progress())
	cl.kill(victim)
	killed := time.Now()

	c.settle(3 * time.Minute)
	t.Logf("drained %s after the kill, on two nodes: %s", time.Since(killed).Round(time.Second), r.progress())
	c.stop()
	if len(c.exits) > 0 {
		t.Errorf("services exited by themselves while a node was down: %v", c.exits)
	}
	r.reconcile(plan{want: want, note: cl.nodes[victim].name + " killed at a third"})

	cl.restart(victim)
	r.waitFor(time.Minute, cl.nodes[victim].name+" current on every stream", func() bool {
		for _, s := range []string{r.names.Keys, r.names.Done, r.names.DLQ} {
			info, ok := r.streamInfo(s)
			if !ok || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				return false
			}
			for _, p := range info.Cluster.Replicas {
				if !p.Current || p.Offline {
					return false
				}
			}
		}
		return true
	})
	t.Logf("whole test %s", time.Since(start).Round(time.Second))
}

// waitMetaLeader waits until every node of the cluster names the same JetStream meta leader.
func (c *natsCluster) waitMetaLeader(timeout time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var leaders []string
		for _, nd := range c.nodes {
			var jsz struct {
				Meta *struct {
					Leader string `json:"leader"`
				} `json:"meta_cluster"`
			}
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", nd.http))
			if err == nil {
				_ = json.NewDecoder(resp.Body).Decode(&jsz)
				resp.Body.Close()
			}
			if jsz.Meta != nil && jsz.Meta.Leader != "" {
				leaders = append(leaders, jsz.Meta.Leader)
			}
		}
		if len(leaders) == len(c.nodes) && strings.Count(strings.Join(leaders, ","), leaders[0]) == len(leaders) {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no meta leader agreed on after %s: %v", timeout, leaders)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// gatherLeaders moves the leadership of every stream and consumer, and then of the meta group, to
// node i (leader stepdown with a preferred placement, nats-server 2.11+).
func (c *natsCluster) gatherLeaders(nc *nats.Conn, i int, streams []string, consumers [][2]string) {
	c.t.Helper()
	want := c.nodes[i].name
	body := []byte(`{"placement":{"preferred":"` + want + `"}}`)
	var subjects []string
	for _, s := range streams {
		subjects = append(subjects, "$JS.API.STREAM.LEADER.STEPDOWN."+s)
	}
	for _, sc := range consumers {
		subjects = append(subjects, "$JS.API.CONSUMER.LEADER.STEPDOWN."+sc[0]+"."+sc[1])
	}
	subjects = append(subjects, "$JS.API.META.LEADER.STEPDOWN")
	for _, subj := range subjects {
		deadline := time.Now().Add(30 * time.Second)
		for {
			led := c.leaderOf(nc, subj)
			if led == want {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("%s: leader still %q after 30s, want %s", subj, led, want)
			}
			// "already leader" and "no peers" answers are retried until the leader reads right.
			_, _ = nc.Request(subj, body, 5*time.Second)
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// leaderOf names the current leader of the group a stepdown subject addresses.
func (c *natsCluster) leaderOf(nc *nats.Conn, stepdown string) string {
	var info struct {
		Cluster *struct {
			Leader string `json:"leader"`
		} `json:"cluster"`
	}
	var subj string
	switch {
	case strings.HasPrefix(stepdown, "$JS.API.STREAM.LEADER.STEPDOWN."):
		subj = "$JS.API.STREAM.INFO." + strings.TrimPrefix(stepdown, "$JS.API.STREAM.LEADER.STEPDOWN.")
	case strings.HasPrefix(stepdown, "$JS.API.CONSUMER.LEADER.STEPDOWN."):
		subj = "$JS.API.CONSUMER.INFO." + strings.TrimPrefix(stepdown, "$JS.API.CONSUMER.LEADER.STEPDOWN.")
	default:
		return c.waitMetaLeader(30 * time.Second)
	}
	msg, err := nc.Request(subj, nil, 5*time.Second)
	if err != nil || json.Unmarshal(msg.Data, &info) != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// ledBy lists what node i leads, for the log.
func (c *natsCluster) ledBy(nc *nats.Conn, i int, streams []string, consumers [][2]string) string {
	var led []string
	if c.waitMetaLeader(30*time.Second) == c.nodes[i].name {
		led = append(led, "meta")
	}
	for _, s := range streams {
		if c.leaderOf(nc, "$JS.API.STREAM.LEADER.STEPDOWN."+s) == c.nodes[i].name {
			led = append(led, s)
		}
	}
	for _, sc := range consumers {
		if c.leaderOf(nc, "$JS.API.CONSUMER.LEADER.STEPDOWN."+sc[0]+"."+sc[1]) == c.nodes[i].name {
			led = append(led, sc[0]+">"+sc[1])
		}
	}
	return strings.Join(led, ", ")
}

// retries counts the retry and warning lines of a service log and returns the last few.
func retries(path string) (int, []string) {
	b, _ := os.ReadFile(path)
	var n int
	var last []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "msg=retry") && !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		n++
		last = append(last, line)
		if len(last) > 12 {
			last = last[1:]
		}
	}
	return n, last
}
