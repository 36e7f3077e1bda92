package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Checks are a process's named readiness checks: each says whether the process can do its work
// now (NATS connected, its source or destination reachable as last observed). A check returns nil
// when ready and an error saying why not. They must be cheap and never block: they run on every
// /readyz request and every scrape of ferry_ready.
type Checks struct {
	mu     sync.Mutex
	checks map[string]func() error
}

// NewChecks is an empty set: a process with no checks is ready.
func NewChecks() *Checks { return &Checks{checks: map[string]func() error{}} }

// Add sets the check called name, replacing one of that name.
func (c *Checks) Add(name string, check func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks[name] = check
}

// Result is one check's outcome.
type Result struct {
	Name string
	Err  error
}

// Run runs every check, in name order.
func (c *Checks) Run() []Result {
	c.mu.Lock()
	names := make([]string, 0, len(c.checks))
	for n := range c.checks {
		names = append(names, n)
	}
	fns := make(map[string]func() error, len(c.checks))
	for n, f := range c.checks {
		fns[n] = f
	}
	c.mu.Unlock()
	slices.Sort(names)
	res := make([]Result, len(names))
	for i, n := range names {
		res[i] = Result{Name: n, Err: fns[n]()}
	}
	return res
}

// Live is /healthz: 200 while the process runs and serves HTTP. It checks nothing else on purpose:
// a dependency being down is a reason to stop sending work (readiness), never to restart ferry.
func Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
}

// Ready is /readyz: 200 with "ok <check>" lines when every check passes, else 503 with
// "fail <check>: <reason>" for each failing check (and "ok" for the others). Once the process has
// begun shutting down (ctx done) it answers 503 "shutting down".
func Ready(ctx context.Context, c *Checks) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if ctx.Err() != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "fail shutdown: shutting down")
			return
		}
		res := c.Run()
		var b strings.Builder
		failed := false
		for _, r := range res {
			if r.Err != nil {
				failed = true
				fmt.Fprintf(&b, "fail %s: %s\n", r.Name, oneLine(r.Err.Error()))
			} else {
				fmt.Fprintf(&b, "ok %s\n", r.Name)
			}
		}
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
		} else if len(res) == 0 {
			b.WriteString("ok\n")
		}
		_, _ = w.Write([]byte(b.String()))
	})
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// readyCollector exports the checks as ferry_ready{check}: 1 ready, 0 not, evaluated at scrape
// time, so a dashboard shows what /readyz would have said.
type readyCollector struct {
	checks *Checks
	desc   *prometheus.Desc
}

// ReadyCollector is the ferry_ready gauge over c.
func ReadyCollector(c *Checks) prometheus.Collector {
	return &readyCollector{checks: c, desc: prometheus.NewDesc("ferry_ready",
		"Readiness check outcome as /readyz reports it: 1 ready, 0 not.", []string{"check"}, nil)}
}

func (r *readyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r *readyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, res := range r.checks.Run() {
		v := 1.0
		if res.Err != nil {
			v = 0
		}
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.GaugeValue, v, res.Name)
	}
}
