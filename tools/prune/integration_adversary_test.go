//go:build integration

package prune

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/casstest"
)

// TestIntegrationAdversaryTargetSubset: the job reads a table and falls back to an archive
// through a custom query. prune cannot enumerate the custom query, so the operator names the
// table's target with --target, as the error and docs say. Keys only in the archive (the fetcher
// migrated them through the fallback) then have objects with no source key: prune deletes them,
// and the proof is PROVEN over a source it read only in part.
func TestIntegrationAdversaryTargetSubset(t *testing.T) {
	st := newStack(t)
	for _, k := range st.keys {
		st.put(k, st.wts[k])
	}
	const archived = "prune/archived-only.jpg" // in the archive table only, fetched through the fallback
	st.put(archived, time.Now().Add(-time.Hour).UnixMicro())
	time.Sleep(1100 * time.Millisecond)

	job, _ := casstest.LocalJob(t)
	tg := job.Source.Targets[0]
	// The archive holds the key, as the fetcher found it there.
	casstest.KeyTable(t, tg, "ferry_prune_test.archive", 1, func(int) string { return archived })
	y := strings.Replace(readFile(t, st.jobFile), "destination:", `    - name: archive
      hosts: ["`+tg.Hosts[0]+`"]
      local_dc: `+tg.LocalDC+`
      query: SELECT data, writetime(data) FROM ferry_prune_test.archive WHERE key = ?
destination:`, 1)
	jobFile := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(jobFile, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := st.prune(jobFile, "--delete"); err == nil {
		t.Log("without --target: accepted?")
	} else {
		t.Logf("without --target: %v", err)
	}
	_, err := st.prune(jobFile, "--target", "dc1", "--delete", "--max-delete", "10")
	t.Logf("--target dc1 --delete: %v", err)
	if !st.exists(archived) {
		t.Errorf("%s deleted: its key lives in the archive target, which prune did not read", archived)
	}
	if recs := st.records(); len(recs) != 0 {
		t.Errorf("records %+v: the archived key's object was acted on", recs)
	}
	if p := st.proof(); p.Proven() {
		t.Errorf("PROVEN over tables %v while the job reads 2 targets", p.Tables)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
