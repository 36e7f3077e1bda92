//go:build integration

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// natsNode is one nats-server of our own (never the local stack's).
type natsNode struct {
	name                    string
	port, clusterPort, http int
	conf, store, log        string
	cmd                     *exec.Cmd
	exited                  chan struct{}
}

// natsCluster is one nats-server, or a cluster of them on loopback ports, each with its own store.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func natsServerBin(t *testing.T) string {
	t.Helper()
	p, _ := filepath.Abs("../.local/bin/nats-server")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no %s (make tools): %v", p, err)
	}
	return p
}

// startNATS starts n nats-servers (a cluster when n > 1) with the local stack's settings
// (JetStream, max_payload 8MB) and waits until JetStream is ready. They are killed at the end.
func startNATS(t *testing.T, n int) *natsCluster {
	return startNATSWith(t, natsSpec{nodes: n})
}

// natsSpec describes the servers of startNATSWith.
type natsSpec struct {
	nodes int
	name  func(i int) string // server_name of node i; default chaos-nats-<i>
	extra string             // appended to every node's configuration (TLS, accounts)
}

func startNATSWith(t *testing.T, spec natsSpec) *natsCluster {
	t.Helper()
	n := spec.nodes
	if spec.name == nil {
		spec.name = func(i int) string { return fmt.Sprintf("chaos-nats-%d", i) }
	}
	dir := t.TempDir()
	c := &natsCluster{t: t}
	for i := range n {
		c.nodes = append(c.nodes, &natsNode{name: spec.name(i), port: freePort(t),
			clusterPort: freePort(t), http: freePort(t)})
	}
	var routes []string
	for _, nd := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", nd.clusterPort))
	}
	for _, nd := range c.nodes {
		nd.store = filepath.Join(dir, nd.name)
		nd.log = filepath.Join(dir, nd.name+".log")
		nd.conf = filepath.Join(dir, nd.name+".conf")
		var b strings.Builder
		fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: 8MB\n", nd.name, nd.port, nd.http)
		fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n}\n", nd.store)
		if n > 1 {
			fmt.Fprintf(&b, "cluster {\n  name: ferry-chaos\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", nd.clusterPort, strings.Join(routes, ", "))
		}
		b.WriteString(spec.extra)
		if err := os.WriteFile(nd.conf, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.nodes {
		c.launch(i)
	}
	for i := range c.nodes {
		c.waitReady(i, time.Minute)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd.cmd != nil && nd.alive() {
				_ = nd.cmd.Process.Kill()
				<-nd.exited
			}
		}
		if t.Failed() {
			for _, nd := range c.nodes {
				b, _ := os.ReadFile(nd.log)
				t.Logf("--- %s log (last 2000 bytes):\n%s", nd.name, tail(b, 2000))
			}
		}
	})
	return c
}

func (nd *natsNode) alive() bool {
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

func (c *natsCluster) launch(i int) {
	nd := c.nodes[i]
	f, err := os.OpenFile(nd.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	nd.cmd = exec.Command(natsServerBin(c.t), "-c", nd.conf)
	nd.cmd.Stdout, nd.cmd.Stderr = f, f
	if err := nd.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", nd.name, err)
	}
	nd.exited = make(chan struct{})
	go func() { _ = nd.cmd.Wait(); f.Close(); close(nd.exited) }()
}

// waitReady waits until node i says JetStream is healthy (for a cluster: its streams are current).
func (c *natsCluster) waitReady(i int, timeout time.Duration) {
	nd := c.nodes[i]
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.http)
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !nd.alive() {
			b, _ := os.ReadFile(nd.log)
			c.t.Fatalf("%s exited while starting:\n%s", nd.name, tail(b, 2000))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not healthy after %s", nd.name, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// URL lists every node, so that clients fail over.
func (c *natsCluster) URL() string {
	var urls []string
	for _, nd := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.port))
	}
	return strings.Join(urls, ",")
}

// kill SIGKILLs node i: no flush, no goodbye to the cluster.
func (c *natsCluster) kill(i int) {
	nd := c.nodes[i]
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.exited
}

// restart starts node i again on the same store and waits until it is healthy.
func (c *natsCluster) restart(i int) {
	c.launch(i)
	c.waitReady(i, 2*time.Minute)
}

func (c *natsCluster) index(serverName string) int {
	for i, nd := range c.nodes {
		if nd.name == serverName {
			return i
		}
	}
	return 0
}

// TestChaosNATSRestart (scenario 2): our own nats-server is SIGKILLed twice mid-run and started
// again on the same store.
func TestChaosNATSRestart(t *testing.T) {
	requireChaos(t)
	natsScenario(t, "2 nats-server SIGKILL + restart", 1)
}

// TestChaosNATSCluster (scenario 3): a three-node cluster with R3 streams; the node leading a
// work queue is SIGKILLed mid-run, twice, and started again.
func TestChaosNATSCluster(t *testing.T) {
	requireChaos(t)
	natsScenario(t, "3 3-node NATS R3, node SIGKILL", 3)
}

func natsScenario(t *testing.T, scenario string, nodes int) {
	keys, _ := seeded(t)
	cl := startNATS(t, nodes)
	r := newRig(t, scenario, "nats", rigOptions{nats: cl.URL()})
	all, want := r.keySet(keys, envInt("FERRY_CHAOS_NATS_KEYS", 10000), 25)
	setup := []string{"setup", "--ack-wait", "10s", "--dedupe-window", "2m"}
	if nodes > 1 {
		setup = append(setup, "--replicas", "3")
	}
	r.must(setup...)
	file := r.writeKeys("keys.txt", all)
	c := r.crew()
	c.add("producer", 1, "producer", "--keys", file, "--high-water", "3000")
	c.add("fetcher", 2, "fetcher", "--concurrency", "16", "--read-rate", "150")
	c.add("uploader", 2, "uploader", "--concurrency", "16")
	c.add("verifier", 1, "verifier", "--concurrency", "16")

	var events []string
	for round, at := range []float64{0.25, 0.6} {
		r.waitFor(15*time.Minute, fmt.Sprintf("%.0f%% of the keys verified", at*100), func() bool {
			c.tend()
			d, ok := r.msgs(r.names.Done)
			return ok && float64(d) >= at*float64(len(all))
		})
		victim := 0
		if nodes > 1 { // the leader of a work queue: its loss forces an election under load
			stream := []string{r.names.Keys, r.names.Blobs}[round%2]
			if info, ok := r.streamInfo(stream); ok && info.Cluster != nil {
				victim = cl.index(info.Cluster.Leader)
			}
		}
		before := r.progress()
		cl.kill(victim)
		down := time.Now()
		time.Sleep(5 * time.Second)
		cl.restart(victim)
		events = append(events, fmt.Sprintf("%s killed at %.0f%% (down %s)", cl.nodes[victim].name, at*100, time.Since(down).Round(time.Second)))
		t.Logf("%s SIGKILLed at %s; restarted after %s", cl.nodes[victim].name, before, time.Since(down).Round(time.Second))
	}
	c.settle(20 * time.Minute)
	c.stop()
	note := strings.Join(events, "; ")
	if len(c.exits) > 0 {
		note += fmt.Sprintf("; services that exited during the outage and were restarted: %v", c.exits)
		t.Logf("FINDING: services exited by themselves while NATS was down: %v", c.exits)
	}
	r.reconcile(plan{want: want, note: note})
}
