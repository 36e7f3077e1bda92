//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
)

// TestScanKill SIGKILLs `ferry producer --scan` part way through a real Cassandra table and
// restarts it: no key is lost, and the restart re-reads at most one page per range in progress.
func TestScanKill(t *testing.T) {
	const rows, page, concurrency = 20_000, 200, 4
	h := newRig(t, "", "scankill", rigOptions{plain: true})
	target, tokens := h.scanTable(rows)
	h.must("setup")
	args := []string{"producer", "--scan", "--scan-page-size", strconv.Itoa(page),
		"--scan-concurrency", strconv.Itoa(concurrency), "--scan-rate", "5000"}

	p := h.start("producer-1", args...)
	h.waitUntil(time.Minute, func() string { return fmt.Sprintf("KEYS holds %d", h.mustMsgs(h.names.Keys)) },
		func() bool { return h.mustMsgs(h.names.Keys) >= rows/3 })
	p.kill()
	stored := int(h.mustMsgs(h.names.Keys))

	kv, err := h.js.KeyValue(context.Background(), h.names.KV)
	if err != nil {
		t.Fatal(err)
	}
	key := checkpoint.ScanKey(target)
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("scan plan %s: %v", key, err)
	}
	var plan checkpoint.ScanPlan
	if err := json.Unmarshal(e.Value(), &plan); err != nil {
		t.Fatal(err)
	}
	var starts, ends, last []int64
	for i, r := range plan.Ranges {
		cp := checkpoint.ScanRange{Last: r.Start}
		if e, err := kv.Get(context.Background(), key+"."+strconv.Itoa(i)); err == nil {
			if err := json.Unmarshal(e.Value(), &cp); err != nil {
				t.Fatal(err)
			}
		}
		starts, ends, last = append(starts, r.Start), append(ends, r.End), append(last, cp.Last)
	}
	covered := casstest.Covered(tokens, starts, ends, last)
	t.Logf("killed with %d keys stored, %d covered by checkpoints, %d ranges", stored, covered, len(plan.Ranges))
	if stored < covered {
		t.Fatalf("checkpoints cover %d keys but only %d are stored: the restart would lose keys", covered, stored)
	}
	if stored >= rows {
		t.Fatalf("the producer finished before the kill (%d keys stored)", stored)
	}
	if reread := stored - covered; reread > concurrency*page {
		t.Errorf("%d keys stored past the checkpoints: more than one page per range in progress (%d)", reread, concurrency*page)
	}

	out := h.must(args...)
	m := regexp.MustCompile(`producer finished.*read=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no final line in the restarted producer's output:\n%s", tail([]byte(out), 2000))
	}
	if read, _ := strconv.Atoi(m[1]); read != rows-covered {
		t.Errorf("the restart read %d keys, want %d (those past the checkpoints)", read, rows-covered)
	}
	if got := h.mustMsgs(h.names.Keys); got != rows {
		t.Errorf("KEYS holds %d keys, want every one of the %d once", got, rows)
	}
	if d := h.mustDead(); len(d) != 0 {
		t.Errorf("dead letters: %+v", d)
	}
}

// TestScanOutage stops the scanned datacenter's node in the middle of `ferry producer --scan`:
// the failed pages are retried until the node is back, and the scan completes with every key.
func TestScanOutage(t *testing.T) {
	const rows = 20_000
	java := cassJava(t)
	t.Cleanup(func() { cassRestore(t) })
	h := newRig(t, "", "scanoutage", rigOptions{plain: true})
	h.scanTable(rows)
	h.must("setup")
	p := h.start("producer", "producer", "--scan", "--scan-page-size", "200", "--scan-rate", "3000")
	h.waitUntil(time.Minute, func() string { return fmt.Sprintf("KEYS holds %d", h.mustMsgs(h.names.Keys)) },
		func() bool { return h.mustMsgs(h.names.Keys) >= rows/4 })
	cassStop(t, "dc1")
	stoppedAt := h.mustMsgs(h.names.Keys)
	time.Sleep(3 * time.Second)
	cassStart(t, "dc1", java)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("producer: %v", p.err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("the scan did not finish within 3 minutes of dc1 coming back (KEYS holds %d)", h.mustMsgs(h.names.Keys))
	}
	if stoppedAt >= rows {
		t.Fatalf("the scan finished before dc1 stopped")
	}
	if got := h.mustMsgs(h.names.Keys); got != rows {
		t.Errorf("KEYS holds %d keys, want %d", got, rows)
	}
	if d := h.mustDead(); len(d) != 0 {
		t.Errorf("dead letters: %+v", d)
	}
	if log, _ := os.ReadFile(p.log); !strings.Contains(string(log), "scan page failed, retrying") {
		t.Errorf("no retried page in the producer's log:\n%s", tail(log, 2000))
	}
}

// scanTable fills ferry_scan_test.keys with rows keys (once per machine) and points the harness's
// job file at it in place of the demo table. It returns the scanned target and each key's token.
func (h *rig) scanTable(rows int) (config.Target, map[string]int64) {
	h.t.Helper()
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		h.t.Fatal(err)
	}
	h.cfg = filepath.Join(h.dir, "ferry.yaml")
	// The first target's table line: the dc2 target's ferry_demo.blobs_old stays.
	yml := strings.Replace(string(b), "table: ferry_demo.blobs\n", "table: ferry_scan_test.keys\n", 1)
	if err := os.WriteFile(h.cfg, []byte(yml), 0o644); err != nil {
		h.t.Fatal(err)
	}
	job, err := config.Load(h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	target := job.Source.Targets[0]
	if target.Table != "ferry_scan_test.keys" {
		h.t.Fatalf("job file %s: the first target reads %s, want the scan test table", h.cfg, target.Table)
	}
	return target, casstest.KeyTable(h.t, target, target.Table, rows, func(i int) string { return fmt.Sprintf("scan/%06d.jpg", i) })
}
