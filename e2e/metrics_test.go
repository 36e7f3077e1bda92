//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/promtext"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// TestMetricsEndpoints runs a small job through separate processes with --metrics-addr, scrapes
// /metrics, /healthz and /readyz of the fetcher, uploader and verifier while it runs, and at the
// end compares their ferry_messages_total with what DONE and the DLQ hold.
func TestMetricsEndpoints(t *testing.T) {
	const (
		seedN, count, absent, fallback = 92001, 300, 10, 10
	)
	list := filepath.Join(t.TempDir(), "keys.txt")
	cmd := exec.Command(bin, "--config", cfgPath, "seed", "--count", fmt.Sprint(count), "--absent", fmt.Sprint(absent),
		"--fallback", fmt.Sprint(fallback), "--sizes", "2000", "--seed", fmt.Sprint(seedN), "--keys-out", list)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ferry seed: %v\n%s", err, out)
	}
	// Objects of an earlier run would make every PUT a refused conditional one: no bytes moved.
	deleteObjects(t, seed.PlanKeys(seedN, count, fallback, absent, []int{2000}).All())
	wantVerified := uint64(count + 1 + fallback)
	wantTotal := wantVerified + absent

	h := newRig(t, "", "metrics", rigOptions{plain: true})
	h.must("setup")
	addr := map[string]string{}
	for _, s := range []string{"fetcher", "uploader", "verifier"} {
		addr[s] = freeAddr(t)
		// Low concurrency: the scrapes should see the run in progress.
		h.start(s, "--metrics-addr", addr[s], s, "--concurrency", "4")
	}
	for s, a := range addr { // live once listening, before any work arrives
		h.waitUntil(time.Minute, func() string { return s + " /healthz" }, func() bool {
			code, _ := httpGet(t, a, "/healthz")
			return code == http.StatusOK
		})
	}
	prod := h.start("producer", "producer", "--keys", list)

	ready := map[string]bool{}
	sawInFlight := false
	h.waitUntil(5*time.Minute, func() string {
		return fmt.Sprintf("verified %d of %d, dead %v, backlog %d; ready %v", h.mustMsgs(h.names.Done), wantVerified, h.mustDead(), h.mustBacklog(), ready)
	}, func() bool {
		for s, a := range addr {
			if code, body := httpGet(t, a, "/readyz"); code == http.StatusOK {
				ready[s] = true
			} else {
				t.Logf("%s /readyz %d: %s", s, code, body)
			}
			if code, _ := httpGet(t, a, "/healthz"); code != http.StatusOK && code != 0 { // 0: not listening yet
				t.Errorf("%s /healthz: %d", s, code)
			}
			m := scrapeMetrics(t, a)
			if m.Sum("ferry_in_flight", nil) > 0 {
				sawInFlight = true
			}
		}
		return h.mustMsgs(h.names.Done)+h.mustDead().Total() >= wantTotal && h.mustBacklog() == 0
	})
	for s := range addr {
		if !ready[s] {
			t.Errorf("%s never answered /readyz 200", s)
		}
	}
	_, body := httpGet(t, addr["fetcher"], "/readyz")
	for _, want := range []string{"ok nats", "ok cassandra", "ok s3"} {
		if !strings.Contains(body, want) {
			t.Errorf("fetcher /readyz lacks %q: %s", want, body)
		}
	}
	t.Logf("fetcher /readyz: %q; in flight seen: %v", body, sawInFlight)
	if err := prod.stop(time.Minute); err != nil {
		t.Errorf("producer: %v", err)
	}

	done, dead := h.mustMsgs(h.names.Done), h.mustDead()
	if done != wantVerified || dead["fetcher/not_found"] != absent || dead.Total() != absent {
		t.Fatalf("DONE %d (want %d), DLQ %v (want fetcher/not_found %d)", done, wantVerified, dead, absent)
	}
	fm, um, vm := scrapeMetrics(t, addr["fetcher"]), scrapeMetrics(t, addr["uploader"]), scrapeMetrics(t, addr["verifier"])
	with := func(kv ...string) map[string]string {
		m := map[string]string{"job": h.job}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, c := range []struct {
		what string
		got  float64
		want uint64
	}{
		{"fetcher ok", fm.Sum("ferry_messages_total", with("stage", "fetcher", "outcome", "ok")), wantVerified},
		{"fetcher dead", fm.Sum("ferry_messages_total", with("stage", "fetcher", "outcome", "dead")), dead["fetcher/not_found"]},
		{"uploader ok", um.Sum("ferry_messages_total", with("stage", "uploader", "outcome", "ok")), wantVerified},
		{"verifier ok = DONE", vm.Sum("ferry_messages_total", with("stage", "verifier", "outcome", "ok")), done},
		{"PUTs ok", um.Sum("ferry_s3_request_seconds_count", with("operation", "PutObject", "result", "ok")), wantVerified},
		{"dlq gauge (verifier's view)", vm.Sum("ferry_dlq_messages", with("stage", "fetcher", "reason", "not_found")), absent},
	} {
		if uint64(c.got) != c.want {
			t.Errorf("%s: metric %g, want %d", c.what, c.got, c.want)
		}
	}
	for _, c := range []struct {
		what string
		m    promtext.Samples
		name string
		l    map[string]string
	}{
		{"cassandra queries on dc1", fm, "ferry_cassandra_query_seconds_count", with("target", "dc1", "result", "ok")},
		{"cassandra hosts up on dc1", fm, "ferry_cassandra_hosts_up", with("target", "dc1")},
		{"blob bytes read from dc2-old (fallback keys)", fm, "ferry_cassandra_bytes_total", with("target", "dc2-old")},
		{"PUTs", um, "ferry_s3_request_seconds_count", with("operation", "PutObject")},
		{"PUT bytes", um, "ferry_s3_bytes_total", with("operation", "PutObject")},
		{"HEADs", vm, "ferry_s3_request_seconds_count", with("operation", "HeadObject", "result", "ok")},
		{"ready nats", um, "ferry_ready", with("check", "nats")},
	} {
		if v := c.m.Sum(c.name, c.l); v <= 0 {
			t.Errorf("%s: %s%v = %g, want > 0", c.what, c.name, c.l, v)
		}
	}
	if v := vm.Sum("ferry_s3_request_seconds_count", with("operation", "HeadObject", "result", "ok")); uint64(v) < done {
		t.Errorf("verifier HEADs ok %g < verified %d", v, done)
	}
	checkDashboard(t, fm, um, vm)
}

// dashboardElsewhere are the metrics the dashboard queries that the fetcher, uploader and verifier
// of TestMetricsEndpoints do not serve, each with the process that does.
var dashboardElsewhere = map[string]string{
	"ferry_manifest_entries_total":        "ferry manifest (the DONE drain)",
	"ferry_manifest_segments_total":       "ferry manifest (the DONE drain)",
	"ferry_manifest_round_failures_total": "ferry manifest (the DONE drain)",
	"ferry_run_fused_fallbacks_total":     "ferry run (its fused path)",
	// Registered by every process, but a series appears only once its orphan sweeper has
	// requeued an orphan, and this run makes none.
	"ferry_orphans_requeued_total": "every process, after its first requeued orphan",
}

var (
	dashMetric = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])(ferry_[a-zA-Z0-9_:]+)`)
	dashBy     = regexp.MustCompile(`\bby\s*\(([^()]*)\)`)
)

// checkDashboard checks that every ferry_* metric the Grafana dashboard (deploy/grafana/ferry.json)
// queries is among the scraped samples (a histogram's _bucket, _count and _sum by its base name),
// but for dashboardElsewhere, and that every label of a `by (...)` is on the metrics it aggregates.
func checkDashboard(t *testing.T, scraped ...promtext.Samples) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "ferry.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []panel `json:"panels"` // a collapsed row's
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("ferry.json: %v", err)
	}
	labels := map[string]map[string]bool{} // series name → the label names its samples have
	for _, s := range scraped {
		for _, x := range s {
			if labels[x.Name] == nil {
				labels[x.Name] = map[string]bool{}
			}
			for l := range x.Labels {
				labels[x.Name][l] = true
			}
		}
	}
	base := func(name string) string {
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(name, suffix); ok {
				return b
			}
		}
		return name
	}
	metrics := func(expr string) []string {
		var out []string
		for _, m := range dashMetric.FindAllStringSubmatch(expr, -1) {
			out = append(out, m[1])
		}
		return out
	}
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	checked := 0
	for _, p := range all {
		for _, tg := range p.Targets {
			where := fmt.Sprintf("dashboard panel %q target %s", p.Title, tg.RefID)
			for _, m := range metrics(tg.Expr) {
				if _, ok := dashboardElsewhere[base(m)]; ok {
					continue
				}
				checked++
				if labels[m] == nil {
					t.Errorf("%s: %s (metric %s) is served by none of the fetcher, uploader and verifier", where, m, base(m))
				}
			}
			for _, by := range dashBy.FindAllStringSubmatchIndex(tg.Expr, -1) {
				arg := aggregated(tg.Expr, by[0], by[1])
				for _, l := range strings.Split(tg.Expr[by[2]:by[3]], ",") {
					l = strings.TrimSpace(l)
					for _, m := range metrics(arg) {
						if _, ok := dashboardElsewhere[base(m)]; ok || labels[m] == nil || l == "" {
							continue // excepted, or reported above
						}
						if !labels[m][l] {
							t.Errorf("%s: by (%s): %s has no label %q in the scraped samples", where, tg.Expr[by[2]:by[3]], m, l)
						}
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Error("dashboard: no ferry_* metric found in any expr")
	}
}

// aggregated is the argument of the aggregation whose `by (...)` clause is expr[from:to]:
// the parenthesised group after it (sum by (l) (x)) or before it (sum(x) by (l)); the whole
// expr when neither is found.
func aggregated(expr string, from, to int) string {
	rest := strings.TrimLeft(expr[to:], " ")
	if strings.HasPrefix(rest, "(") {
		depth := 0
		for i, c := range rest {
			switch c {
			case '(':
				depth++
			case ')':
				if depth--; depth == 0 {
					return rest[:i+1]
				}
			}
		}
	}
	head := strings.TrimRight(expr[:from], " ")
	if strings.HasSuffix(head, ")") {
		depth := 0
		for i := len(head) - 1; i >= 0; i-- {
			switch head[i] {
			case ')':
				depth++
			case '(':
				if depth--; depth == 0 {
					return head[i:]
				}
			}
		}
	}
	return expr
}

// deleteObjects removes the S3 objects of keys (mapped with the job file's key rules).
func deleteObjects(t *testing.T, keys []string) {
	t.Helper()
	job, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := keyrules.Compile(job.Keys)
	if err != nil {
		t.Fatal(err)
	}
	store, err := blobstore.New(context.Background(), job.Destination, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if s3Key, err := rules.Map(k); err == nil {
			if err := store.Delete(context.Background(), s3Key); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// httpGet returns the status and body of http://addr/path; 0 while the process is not listening yet.
func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrapeMetrics reads http://addr/metrics; nil while the process does not answer.
func scrapeMetrics(t *testing.T, addr string) promtext.Samples {
	t.Helper()
	s, err := promtext.Scrape(context.Background(), addr)
	if err != nil {
		return nil
	}
	return s
}
