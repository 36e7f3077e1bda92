//go:build integration

package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReliabilityReport: TestMain prints the table of the scenarios that ran (with FERRY_CHAOS=1
// or -v) and writes it to $FERRY_CHAOS_REPORT; a scenario that did not finish shows no counts.
func TestReliabilityReport(t *testing.T) {
	report.mu.Lock()
	saved := report.rows
	report.rows = nil
	report.mu.Unlock()
	t.Cleanup(func() {
		report.mu.Lock()
		report.rows = saved
		report.mu.Unlock()
	})
	var b bytes.Buffer
	if err := printReport(&b, true); err != nil || b.Len() > 0 {
		t.Fatalf("no scenario ran: printed %q, %v; want nothing", b.String(), err)
	}

	report.mu.Lock()
	report.rows = []*row{
		{scenario: "kills", keysIn: 10, verified: 8, dead: map[string]int{"fetcher/not_found": 2}, dupPUTs: "0", wall: 61500 * time.Millisecond, result: "pass", note: "a|b"},
		{scenario: "outage", dupPUTs: "n/a", wall: time.Second, result: "FAIL", note: "did not finish"},
	}
	report.mu.Unlock()
	file := filepath.Join(t.TempDir(), "report.md")
	t.Setenv("FERRY_CHAOS_REPORT", file)
	want := "| scenario | keys in | verified | DLQ by reason | lost | duplicate PUTs | wall | result | notes |\n" +
		"| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |\n" +
		"| kills | 10 | 8 | fetcher/not_found 2 | 0 | 0 | 1m2s | pass | a/b |\n" +
		"| outage | - | - | 0 | - | n/a | 1s | FAIL | did not finish |\n"
	for _, verbose := range []bool{true, false} {
		b.Reset()
		if err := printReport(&b, verbose); err != nil {
			t.Fatal(err)
		}
		if printed := strings.Contains(b.String(), "ferry reliability ("); printed != (verbose || chaosOn()) {
			t.Errorf("verbose %v, FERRY_CHAOS %v: printed %q", verbose, chaosOn(), b.String())
		}
		if (verbose || chaosOn()) && !strings.Contains(b.String(), want) {
			t.Errorf("printed:\n%s\nwant the table:\n%s", b.String(), want)
		}
		got, err := os.ReadFile(file)
		if err != nil || string(got) != want {
			t.Errorf("FERRY_CHAOS_REPORT holds %q (%v), want %q", got, err, want)
		}
	}
}
