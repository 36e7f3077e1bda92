//go:build integration

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/tools/seed"
)

// The fault-tolerance suite. Every scenario runs a job through real ferry processes while
// something breaks, then reconciles: each key that entered is verified in S3 (its bytes read back
// and compared) or in the DLQ with the expected reason; lost = 0. The short versions (TestFault*)
// run in `make test`; the long ones (TestChaos*) only with FERRY_CHAOS=1 (`make chaos`).
// TestMain prints the table of every scenario that ran.

func chaosOn() bool { return os.Getenv("FERRY_CHAOS") == "1" }

func requireChaos(t *testing.T) {
	t.Helper()
	if !chaosOn() {
		t.Skip("long fault-tolerance scenario: FERRY_CHAOS=1 (make chaos)")
	}
}

func init() {
	// The long kill scenario wants at least 30,000 keys. The seed is deterministic, so seeding
	// 30,000 rewrites the first 20,000 the other tests use, unchanged.
	if chaosOn() && os.Getenv("FERRY_E2E_KEYS") == "" {
		os.Setenv("FERRY_E2E_KEYS", "30000")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// ---- the reliability table ----

type row struct {
	scenario string
	keysIn   int
	verified int
	dead     map[string]int // "stage/reason" -> keys
	lost     int
	dupPUTs  string
	wall     time.Duration
	result   string
	note     string
}

var report struct {
	mu   sync.Mutex
	rows []*row
}

// addRow records a row of this rig's scenario in the report.
func (r *rig) addRow(rw *row) {
	report.mu.Lock()
	report.rows = append(report.rows, rw)
	report.mu.Unlock()
	r.rows = append(r.rows, rw)
}

// reliabilityTable is the markdown table of the scenarios' rows.
func reliabilityTable(rows []*row) string {
	var b strings.Builder
	b.WriteString("| scenario | keys in | verified | DLQ by reason | lost | duplicate PUTs | wall | result | notes |\n")
	b.WriteString("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |\n")
	for _, r := range rows {
		keysIn, verified, lost := "-", "-", "-"
		if r.keysIn > 0 || r.note != "did not finish" {
			keysIn, verified, lost = strconv.Itoa(r.keysIn), strconv.Itoa(r.verified), strconv.Itoa(r.lost)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.scenario, keysIn, verified,
			r.deadString(), lost, r.dupPUTs, r.wall.Round(time.Second), r.result, strings.ReplaceAll(r.note, "|", "/"))
	}
	return b.String()
}

// printReport prints the reliability table of every fault scenario that ran, once the tests are
// done (TestMain): on w with FERRY_CHAOS=1 (make chaos) or -v, and into $FERRY_CHAOS_REPORT when
// set. Nothing when no scenario ran.
func printReport(w io.Writer, verbose bool) error {
	report.mu.Lock()
	rows := append([]*row(nil), report.rows...)
	report.mu.Unlock()
	if len(rows) == 0 {
		return nil
	}
	table := reliabilityTable(rows)
	if chaosOn() || verbose {
		fmt.Fprintf(w, "\nferry reliability (%s)\n\n%s\n", time.Now().Format(time.DateTime), table)
	}
	if path := os.Getenv("FERRY_CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			return fmt.Errorf("FERRY_CHAOS_REPORT: %w", err)
		}
	}
	return nil
}

func (r *row) deadString() string {
	if len(r.dead) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(r.dead))
	for k := range r.dead {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, r.dead[k])
	}
	return strings.Join(parts, ", ")
}

// ---- expectations of the seeded keys ----

// absentKeys are n keys of the seed's format that this job alone uses and no table holds. (The
// seed's own absent keys do not stay absent: TestPipeline writes them to test `dlq replay`.)
func (r *rig) absentKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		sum := sha256.Sum256(fmt.Appendf(nil, "ferry-chaos/absent/%s/%d", r.job, i))
		out[i] = "t01" + hex.EncodeToString(sum[:12]) + ".jpg"
	}
	return out
}

// keySet is n seeded keys (shuffled, fallback ones among them, the edge-case sizes always in)
// with absent keys spread through them, and what each must end as: the absent ones dead-lettered
// not_found by the fetcher, the others verified.
func (r *rig) keySet(keys seed.Keys, n, absent int) ([]string, map[string]string) {
	skip := map[string]bool{}
	for _, k := range keys.Absent {
		skip[k] = true
	}
	var list []string
	for _, k := range keys.All() {
		if !skip[k] && (n <= 0 || len(list) < n) {
			list = append(list, k)
		}
	}
	list = withSized(keys, list)
	want := make(map[string]string, len(list)+absent)
	for _, k := range list {
		want[k] = outcomeVerified
	}
	gone := r.absentKeys(absent)
	for i, k := range gone {
		want[k] = "fetcher/not_found"
		at := (i + 1) * len(list) / (absent + 1)
		list = append(list[:at], append([]string{k}, list[at:]...)...)
	}
	return list, want
}

// withSized makes sure the keys with the edge-case sizes (0 bytes, above the inline limit, above
// the multipart threshold) are in a subset of the seeded keys.
func withSized(keys seed.Keys, subset []string) []string {
	have := map[string]bool{}
	for _, k := range subset {
		have[k] = true
	}
	for _, k := range keys.Main[len(keys.Main)-len(seedSizes):] {
		if !have[k] {
			subset = append(subset, k)
		}
	}
	return subset
}

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
