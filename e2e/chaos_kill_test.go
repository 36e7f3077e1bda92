//go:build integration

package e2e

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

type killOptions struct {
	scenario  string
	keys      int           // how many of the seeded keys (0: all)
	minKills  int           // fewer is a failure: the scenario did not exercise what it claims
	every     time.Duration // mean pause between kills (uniform in [every/2, 3*every/2])
	readRate  int           // reads/s of each fetcher: stretches the run so the kills land mid-work
	highWater int           // producers hold back above this KEYS backlog, so they live through the run
	timeout   time.Duration
}

// TestFaultKills (scenario 1, short): two copies of each stage, one of them SIGKILLed every couple
// of seconds and replaced, over a few thousand keys.
func TestFaultKills(t *testing.T) {
	killScenario(t, killOptions{scenario: "1 SIGKILL stages (short)", keys: envInt("FERRY_FAULT_KEYS", 3000),
		minKills: 6, every: 2 * time.Second, readRate: 100, highWater: 500, timeout: 4 * time.Minute})
}

// TestChaosKills (scenario 1): the same over every seeded key (30,000 and more), at least 20 kills.
func TestChaosKills(t *testing.T) {
	requireChaos(t)
	killScenario(t, killOptions{scenario: "1 SIGKILL stages", minKills: 20, every: 2500 * time.Millisecond,
		readRate: 150, highWater: 2000, timeout: 30 * time.Minute})
}

func killScenario(t *testing.T, o killOptions) {
	keys, _ := seeded(t)
	r := newRig(t, o.scenario, "kill", rigOptions{})
	all, want := r.keySet(keys, o.keys, 25)
	// Short AckWait: a killed worker's messages come back in seconds.
	r.must("setup", "--ack-wait", "10s", "--dedupe-window", "2m")
	half := len(all) / 2
	a, b := r.writeKeys("a.txt", all[:half]), r.writeKeys("b.txt", all[half:])
	hw := strconv.Itoa(o.highWater)
	c := r.crew()
	// Two producers over the same two lists in opposite order: they race on the checkpoints and
	// publish every key twice (the broker drops the second).
	c.add("producer", 1, "producer", "--keys", a, "--keys", b, "--high-water", hw)
	c.add("producer", 1, "producer", "--keys", b, "--keys", a, "--high-water", hw)
	c.add("fetcher", 2, "fetcher", "--concurrency", "16", "--read-rate", strconv.Itoa(o.readRate))
	c.add("uploader", 2, "uploader", "--concurrency", "16")
	c.add("verifier", 2, "verifier", "--concurrency", "16", "--deep-sample", "0.02")

	// One producer dies while it publishes (soon after the start: a short list is published in a
	// second); the random kills below then hit whatever runs.
	time.Sleep(300 * time.Millisecond)
	c.members[0].svc.kill()
	c.members[0].kills++
	c.members[0].svc = r.start("producer", c.members[0].args...)
	deadline := time.Now().Add(o.timeout)
	empty := 0
	for time.Now().Before(deadline) {
		time.Sleep(o.every/2 + rand.N(o.every))
		c.tend()
		n, ok := r.backlog()
		if ok && n == 0 && c.producersDone() {
			if empty++; empty >= 2 {
				break
			}
			continue
		}
		empty = 0
		if m := c.killRandom(); m != nil {
			kills, _ := c.killsByRole()
			t.Logf("kill %d: %s at %s", kills, m.role, r.progress())
		}
	}
	kills, byRole := c.killsByRole()
	if kills < o.minKills {
		t.Errorf("only %d kills before the pipeline drained, want at least %d: lower --read-rate", kills, o.minKills)
	}
	c.settle(time.Until(deadline) + time.Minute)
	c.stop()
	note := fmt.Sprintf("%d SIGKILLs (%s)", kills, byRole)
	if len(c.exits) > 0 {
		note += fmt.Sprintf("; died by themselves: %v", c.exits)
		t.Errorf("services died without being killed: %v", c.exits)
	}
	r.reconcile(plan{want: want, note: note})
}
