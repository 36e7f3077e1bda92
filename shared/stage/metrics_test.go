package stage

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-migrate/ferry/shared/bus"
)

func TestMetricsCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	o := Options{Stage: bus.StageFetcher, Names: bus.For("j")}
	m.count(o, "ok")
	m.count(o, "ok")
	m.count(o, "dead", bus.ReasonNotFound)
	m.count(o, "retry", bus.ReasonSourceError)
	(*Metrics)(nil).count(o, "ok") // records nothing, no panic

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "ferry_messages_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var l []string
			for _, lp := range mt.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			got[strings.Join(l, ",")] = mt.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"job=j,outcome=ok,reason=,stage=fetcher":                2,
		"job=j,outcome=dead,reason=not_found,stage=fetcher":     1,
		"job=j,outcome=retry,reason=source_error,stage=fetcher": 1,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %g, want %g (all: %v)", k, got[k], v, got)
		}
	}
}
