package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	return rec.Code, rec.Body.String()
}

func TestLive(t *testing.T) {
	if code, body := get(t, Live()); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz = %d %q, want 200 ok", code, body)
	}
}

func TestReady(t *testing.T) {
	ctx := context.Background()
	c := NewChecks()
	if code, body := get(t, Ready(ctx, c)); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("no checks: %d %q, want 200 ok", code, body)
	}
	var s3Err error
	c.Add("nats", func() error { return nil })
	c.Add("s3", func() error { return s3Err })
	if code, body := get(t, Ready(ctx, c)); code != http.StatusOK || body != "ok nats\nok s3\n" {
		t.Fatalf("all ok: %d %q", code, body)
	}
	s3Err = errors.New("bucket ferry-demo: last call 3s ago:\ndial tcp 127.0.0.1:7070: connection refused")
	code, body := get(t, Ready(ctx, c))
	want := "ok nats\nfail s3: bucket ferry-demo: last call 3s ago: dial tcp 127.0.0.1:7070: connection refused\n"
	if code != http.StatusServiceUnavailable || body != want {
		t.Fatalf("s3 failing: %d %q, want 503 %q", code, body, want)
	}
	c.Add("s3", func() error { return nil }) // replaced, not added
	if code, _ := get(t, Ready(ctx, c)); code != http.StatusOK {
		t.Fatalf("replaced check: %d, want 200", code)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if code, body := get(t, Ready(cctx, c)); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Fatalf("shutting down: %d %q", code, body)
	}
}

func TestReadyCollector(t *testing.T) {
	c := NewChecks()
	c.Add("nats", func() error { return nil })
	c.Add("cassandra", func() error { return errors.New("no host up") })
	reg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"job": "j"}, reg).MustRegister(ReadyCollector(c))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got = append(got, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), m.GetGauge().GetValue()))
		}
	}
	want := "ferry_ready{check=cassandra,job=j} 0; ferry_ready{check=nats,job=j} 1"
	if strings.Join(got, "; ") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, "; "), want)
	}
}

// TestServe scrapes a real listener: the endpoints are wired on the mux Serve builds.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := NewRegistry()
	c := NewChecks()
	c.Add("nats", func() error { return errors.New("not connected") })
	reg.MustRegister(ReadyCollector(c))
	stop, err := Serve(ctx, addr, reg, c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	// The profiler is not on the metrics port (issue 18 item 5): ServePprof serves it elsewhere.
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200,
		"/debug/pprof/": 404, "/debug/pprof/cmdline": 404, "/debug/pprof/goroutine?debug=2": 404, "/debug/pprof/profile?seconds=1": 404} {
		code, body := get(path)
		if code != want {
			t.Errorf("GET %s = %d, want %d: %s", path, code, want, body)
		}
		if path == "/metrics" && !strings.Contains(body, `ferry_ready{check="nats"} 0`) {
			t.Errorf("/metrics lacks ferry_ready: %s", body)
		}
	}

	// Shutdown signalled, drain under way: still live and scrapeable, not ready.
	c.Add("nats", func() error { return nil })
	cancel()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200} {
		if code, body := get(path); code != want {
			t.Errorf("during the drain, GET %s = %d, want %d: %s", path, code, want, body)
		}
	}
	stop()
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("the server still answers after stop")
	}
}
