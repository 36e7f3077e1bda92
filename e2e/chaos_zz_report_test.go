//go:build integration

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChaosReport prints the reliability table of every fault scenario that ran before it (Go
// runs tests in file order, and this file sorts after every chaos_*_test.go). With
// FERRY_CHAOS_REPORT=path it also writes the table there.
func TestChaosReport(t *testing.T) {
	report.mu.Lock()
	rows := append([]*row(nil), report.rows...)
	report.mu.Unlock()
	if len(rows) == 0 {
		t.Skip("no fault scenario ran")
	}
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
	fmt.Printf("\nferry reliability (%s)\n\n%s\n", time.Now().Format(time.DateTime), b.String())
	if path := os.Getenv("FERRY_CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
