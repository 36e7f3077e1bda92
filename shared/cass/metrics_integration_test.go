//go:build integration

package cass_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/casstest"
)

// TestReaderMetrics reads through a Reader on the local dc1 and checks what the session's
// observers recorded: query latency by result, bytes read, hosts up, readiness.
func TestReaderMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job := loadJob(t)
	tg := job.Source.Targets[0]
	tg.Name = "metrics-it"
	tg.Table, tg.KeyColumn, tg.BlobColumn, tg.Query = "ferry_metrics_test.keys", "key", "data", ""
	casstest.KeyTable(t, tg, tg.Table, 3, func(i int) string { return fmt.Sprintf("m/%d", i) })

	r, err := cass.NewReader(ctx, tg, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := scrape(t)
	for i := range 3 {
		if b, err := r.Read(ctx, fmt.Sprintf("m/%d", i)); err != nil || len(b) != 100 {
			t.Fatalf("read m/%d: %d bytes, %v", i, len(b), err)
		}
	}
	if _, err := r.Read(ctx, "m/absent"); err == nil {
		t.Fatal("absent key read")
	}
	after := scrape(t)
	for k, want := range map[string]float64{
		`ferry_cassandra_query_seconds_count{result="ok",target="metrics-it"}`:    3,
		`ferry_cassandra_query_seconds_count{result="empty",target="metrics-it"}`: 1,
		`ferry_cassandra_bytes_total{target="metrics-it"}`:                        300,
	} {
		if got := after[k] - before[k]; got != want {
			t.Errorf("%s: +%g, want +%g", k, got, want)
		}
	}
	if up := after[`ferry_cassandra_hosts_up{target="metrics-it"}`]; up < 1 {
		t.Errorf("hosts up = %g, want at least 1 (scraped %v)", up, after)
	}
	if err := cass.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// scrape is the package's metrics as `name{labels}` → value (histograms: _count).
func scrape(t *testing.T) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(cass.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var l []string
			for _, p := range m.GetLabel() {
				l = append(l, p.GetName()+`="`+p.GetValue()+`"`)
			}
			labels := "{" + strings.Join(l, ",") + "}"
			switch {
			case m.GetHistogram() != nil:
				out[mf.GetName()+"_count"+labels] = float64(m.GetHistogram().GetSampleCount())
			case m.GetCounter() != nil:
				out[mf.GetName()+labels] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[mf.GetName()+labels] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
