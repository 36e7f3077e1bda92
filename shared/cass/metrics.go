package cass

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/prometheus/client_golang/prometheus"
)

// What every session built by ClusterConfig records, by read target: query latency and outcome
// (a gocql QueryObserver), which hosts the driver holds up (a wrapper of the host selection
// policy, which the driver tells about hosts going up and down), and blob bytes read. The state
// is per process, keyed by target name, so that the fetcher needs no wiring: service.Open
// registers Collectors with the process's registry (the job label is added there) and adds Ready
// as the "cassandra" readiness check.

var (
	querySeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ferry_cassandra_query_seconds",
		Help: "Cassandra query attempts by read target and result (ok, empty: no row, timeout, unavailable, canceled, error).",
		// 0.5 ms to ~16 s: a small-blob read on a local replica is a millisecond, a large one or a
		// struggling node seconds, and the target's timeout ends it.
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"target", "result"})
	bytesRead = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_cassandra_bytes_total",
		Help: "Blob bytes read from Cassandra, by read target.",
	}, []string{"target"})
	hostsUpDesc = prometheus.NewDesc("ferry_cassandra_hosts_up",
		"Hosts of the read target the driver holds up (connected), as last told.", []string{"target"}, nil)

	targetsMu sync.Mutex
	targets   = map[string]*targetState{}
)

// Collectors are this package's metrics, for a process registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{querySeconds, bytesRead, hostsCollector{}}
}

// targetState is what the sessions of one read target observed last.
type targetState struct {
	name string
	mu   sync.Mutex
	// hosts maps each host the session knows (filtered to the target's DC) to whether it is up.
	hosts     map[string]bool
	lastOK    time.Time // last query that got an answer
	lastErrAt time.Time // last query that found the target unreachable
	lastErr   error
}

func stateOf(target string) *targetState {
	targetsMu.Lock()
	defer targetsMu.Unlock()
	st, ok := targets[target]
	if !ok {
		st = &targetState{name: target, hosts: map[string]bool{}}
		targets[target] = st
	}
	return st
}

func (st *targetState) setHost(h *gocql.HostInfo, up bool) {
	st.mu.Lock()
	st.hosts[h.ConnectAddressAndPort()] = up
	st.mu.Unlock()
}

func (st *targetState) removeHost(h *gocql.HostInfo) {
	st.mu.Lock()
	delete(st.hosts, h.ConnectAddressAndPort())
	st.mu.Unlock()
}

func (st *targetState) upCount() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, up := range st.hosts {
		if up {
			n++
		}
	}
	return n
}

// check is nil when the target looks reachable: some host up (or none known yet) and the last
// query that failed for want of a connection was followed by one that got an answer.
func (st *targetState) check() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	var down []string
	up := 0
	for h, ok := range st.hosts {
		if ok {
			up++
		} else {
			down = append(down, h)
		}
	}
	if len(st.hosts) > 0 && up == 0 {
		slices.Sort(down)
		return fmt.Errorf("%s: no host up (%s down)", st.name, strings.Join(down, ", "))
	}
	if st.lastErr != nil && st.lastErrAt.After(st.lastOK) {
		return fmt.Errorf("%s: last query %s ago found it unreachable: %v", st.name,
			time.Since(st.lastErrAt).Round(time.Second), st.lastErr)
	}
	return nil
}

// Ready is nil when at least one read target used in this process is reachable as last observed
// (or none is used): the fetcher falls back across targets, so one DC down is not a reason to stop
// sending it work. Otherwise it names each target and why.
func Ready() error {
	targetsMu.Lock()
	all := make([]*targetState, 0, len(targets))
	for _, st := range targets {
		all = append(all, st)
	}
	targetsMu.Unlock()
	if len(all) == 0 {
		return nil
	}
	slices.SortFunc(all, func(a, b *targetState) int { return strings.Compare(a.name, b.name) })
	var errs []error
	for _, st := range all {
		err := st.check()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no cassandra read target reachable: %w", errors.Join(errs...))
}

// queryObserver records each query attempt of a target's sessions.
type queryObserver struct{ st *targetState }

func (o queryObserver) ObserveQuery(_ context.Context, q gocql.ObservedQuery) {
	result := queryResult(q)
	querySeconds.WithLabelValues(o.st.name, result).Observe(q.End.Sub(q.Start).Seconds())
	switch {
	case q.Err == nil:
		o.st.mu.Lock()
		o.st.lastOK = q.End
		o.st.mu.Unlock()
	case result == "unavailable":
		o.st.mu.Lock()
		o.st.lastErr, o.st.lastErrAt = q.Err, q.End
		o.st.mu.Unlock()
	}
}

func queryResult(q gocql.ObservedQuery) string {
	var readTimeout *gocql.RequestErrReadTimeout
	switch err := q.Err; {
	case err == nil && q.Rows > 0:
		return "ok"
	case err == nil:
		return "empty"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case IsUnreachable(err):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, gocql.ErrTimeoutNoResponse),
		errors.As(err, &readTimeout):
		return "timeout"
	}
	return "error"
}

// hostTracker passes the driver's host events on to the wrapped policy and keeps which hosts are
// up. Only the notifications are intercepted; picking hosts is the wrapped policy's.
type hostTracker struct {
	gocql.HostSelectionPolicy
	st *targetState
}

func (p hostTracker) AddHost(h *gocql.HostInfo) {
	p.st.setHost(h, h.IsUp())
	p.HostSelectionPolicy.AddHost(h)
}

// AddHosts keeps the driver's bulk add (session start) when the wrapped policy has one.
func (p hostTracker) AddHosts(hs []*gocql.HostInfo) {
	for _, h := range hs {
		p.st.setHost(h, h.IsUp())
	}
	if b, ok := p.HostSelectionPolicy.(interface{ AddHosts([]*gocql.HostInfo) }); ok {
		b.AddHosts(hs)
		return
	}
	for _, h := range hs {
		p.HostSelectionPolicy.AddHost(h)
	}
}

func (p hostTracker) RemoveHost(h *gocql.HostInfo) {
	p.st.removeHost(h)
	p.HostSelectionPolicy.RemoveHost(h)
}

func (p hostTracker) HostUp(h *gocql.HostInfo) {
	p.st.setHost(h, true)
	p.HostSelectionPolicy.HostUp(h)
}

func (p hostTracker) HostDown(h *gocql.HostInfo) {
	p.st.setHost(h, false)
	p.HostSelectionPolicy.HostDown(h)
}

// hostsCollector exports ferry_cassandra_hosts_up per target.
type hostsCollector struct{}

func (hostsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- hostsUpDesc }

func (hostsCollector) Collect(ch chan<- prometheus.Metric) {
	targetsMu.Lock()
	all := make([]*targetState, 0, len(targets))
	for _, st := range targets {
		all = append(all, st)
	}
	targetsMu.Unlock()
	for _, st := range all {
		ch <- prometheus.MustNewConstMetric(hostsUpDesc, prometheus.GaugeValue, float64(st.upCount()), st.name)
	}
}

// instrument installs the observers on c, a configuration for target.
func instrument(c *gocql.ClusterConfig, target string) {
	st := stateOf(target)
	c.QueryObserver = queryObserver{st: st}
	c.PoolConfig.HostSelectionPolicy = hostTracker{HostSelectionPolicy: c.PoolConfig.HostSelectionPolicy, st: st}
}
