package cass

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferry-migrate/ferry/shared/config"
)

// isolate gives the test an empty per-process target table and puts the old one back after.
func isolate(t *testing.T) {
	t.Helper()
	targetsMu.Lock()
	saved := targets
	targets = map[string]*targetState{}
	targetsMu.Unlock()
	t.Cleanup(func() {
		targetsMu.Lock()
		targets = saved
		targetsMu.Unlock()
	})
}

// fakePolicy is a host selection policy that records what it is told.
type fakePolicy struct {
	gocql.HostSelectionPolicy // nil: calls not overridden below panic
	added, up, down           int
	bulk                      bool
}

func (p *fakePolicy) AddHost(*gocql.HostInfo)      { p.added++ }
func (p *fakePolicy) AddHosts(h []*gocql.HostInfo) { p.added += len(h); p.bulk = true }
func (p *fakePolicy) HostUp(*gocql.HostInfo)       { p.up++ }
func (p *fakePolicy) HostDown(*gocql.HostInfo)     { p.down++ }
func (p *fakePolicy) RemoveHost(*gocql.HostInfo)   {}

func host(ip string) *gocql.HostInfo { return (&gocql.HostInfo{}).SetConnectAddress(net.ParseIP(ip)) }

func TestHostTrackerReadiness(t *testing.T) {
	isolate(t)
	if err := Ready(); err != nil {
		t.Fatalf("no targets: %v", err)
	}
	fp := &fakePolicy{}
	c := &gocql.ClusterConfig{}
	c.PoolConfig.HostSelectionPolicy = fp
	instrument(c, "dc1")
	p := c.PoolConfig.HostSelectionPolicy.(hostTracker)
	a, b := host("10.0.0.1"), host("10.0.0.2")

	p.AddHosts([]*gocql.HostInfo{a, b})
	if !fp.bulk || fp.added != 2 {
		t.Fatalf("bulk add not passed on: %+v", fp)
	}
	if err := Ready(); err != nil {
		t.Fatalf("hosts up: %v", err)
	}
	p.HostDown(a)
	if err := Ready(); err != nil {
		t.Fatalf("one host down of two: %v", err)
	}
	p.HostDown(b)
	err := Ready()
	if err == nil || !strings.Contains(err.Error(), "dc1: no host up (10.0.0.1:0, 10.0.0.2:0 down)") {
		t.Fatalf("all down: %v", err)
	}
	if fp.down != 2 {
		t.Fatalf("HostDown not passed on: %+v", fp)
	}

	// A second target that is up makes the process ready: the fetcher falls back to it.
	c2 := &gocql.ClusterConfig{}
	c2.PoolConfig.HostSelectionPolicy = &fakePolicy{}
	instrument(c2, "dc2")
	c2.PoolConfig.HostSelectionPolicy.AddHost(host("10.0.1.1"))
	if err := Ready(); err != nil {
		t.Fatalf("dc2 up: %v", err)
	}
	c2.PoolConfig.HostSelectionPolicy.HostDown(host("10.0.1.1"))
	p.HostUp(b)
	if err := Ready(); err != nil {
		t.Fatalf("dc1 back: %v", err)
	}

	if got := gaugeValue(t, "ferry_cassandra_hosts_up", "dc1"); got != 1 {
		t.Errorf("hosts up dc1 = %g, want 1", got)
	}
}

func TestQueryObserver(t *testing.T) {
	isolate(t)
	c := &gocql.ClusterConfig{}
	c.PoolConfig.HostSelectionPolicy = &fakePolicy{}
	instrument(c, "obs")
	o := c.QueryObserver
	before := histCount(t, "obs", "unavailable")
	now := time.Now()
	o.ObserveQuery(context.Background(), gocql.ObservedQuery{Start: now.Add(-2 * time.Millisecond), End: now, Rows: 1})
	o.ObserveQuery(context.Background(), gocql.ObservedQuery{Start: now, End: now.Add(time.Millisecond), Err: gocql.ErrConnectionClosed})
	if err := Ready(); err == nil || !strings.Contains(err.Error(), "obs: last query") {
		t.Fatalf("after a connection error: %v", err)
	}
	if got := histCount(t, "obs", "unavailable") - before; got != 1 {
		t.Errorf("unavailable observations = %d, want 1", got)
	}
	// A query that is answered (even with no row) clears it.
	o.ObserveQuery(context.Background(), gocql.ObservedQuery{Start: now, End: now.Add(2 * time.Millisecond)})
	if err := Ready(); err != nil {
		t.Fatalf("after an answer: %v", err)
	}
	// A query error that is not about reaching the target does not make it unready.
	o.ObserveQuery(context.Background(), gocql.ObservedQuery{Start: now, End: now.Add(3 * time.Millisecond), Err: errors.New("syntax")})
	if err := Ready(); err != nil {
		t.Fatalf("after a syntax error: %v", err)
	}
}

func TestQueryResult(t *testing.T) {
	for _, c := range []struct {
		q    gocql.ObservedQuery
		want string
	}{
		{gocql.ObservedQuery{Rows: 1}, "ok"},
		{gocql.ObservedQuery{}, "empty"},
		{gocql.ObservedQuery{Err: context.Canceled}, "canceled"},
		{gocql.ObservedQuery{Err: gocql.ErrNoConnections}, "unavailable"},
		{gocql.ObservedQuery{Err: &net.OpError{Op: "dial", Err: errors.New("refused")}}, "unavailable"},
		{gocql.ObservedQuery{Err: gocql.ErrTimeoutNoResponse}, "timeout"},
		{gocql.ObservedQuery{Err: &gocql.RequestErrReadTimeout{}}, "timeout"},
		{gocql.ObservedQuery{Err: errors.New("bad")}, "error"},
	} {
		if got := queryResult(c.q); got != c.want {
			t.Errorf("queryResult(%v) = %s, want %s", c.q.Err, got, c.want)
		}
	}
}

// TestClusterConfigInstrumented: every configuration ClusterConfig builds records.
func TestClusterConfigInstrumented(t *testing.T) {
	isolate(t)
	c, err := ClusterConfig(config.Target{Name: "cfg", Hosts: []string{"127.0.0.1"}, LocalDC: "dc1"}, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.QueryObserver.(queryObserver); !ok {
		t.Errorf("QueryObserver = %T", c.QueryObserver)
	}
	if _, ok := c.PoolConfig.HostSelectionPolicy.(hostTracker); !ok {
		t.Errorf("HostSelectionPolicy = %T", c.PoolConfig.HostSelectionPolicy)
	}
}

func gather(t *testing.T) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func gaugeValue(t *testing.T, name, target string) float64 {
	for _, mf := range gather(t) {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsOf(m)["target"] == target {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func histCount(t *testing.T, target, result string) uint64 {
	for _, mf := range gather(t) {
		if mf.GetName() != "ferry_cassandra_query_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := labelsOf(m); l["target"] == target && l["result"] == result {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}
