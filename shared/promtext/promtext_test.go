package promtext

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const page = `# HELP ferry_messages_total Messages handled.
# TYPE ferry_messages_total counter
ferry_messages_total{job="t",outcome="ok",stage="fetcher"} 7
ferry_messages_total{job="t",outcome="dead",stage="fetcher"} 2
ferry_messages_total{job="t",outcome="ok",stage="uploader"} 5
# TYPE ferry_in_flight gauge
ferry_in_flight{stage="fetcher"} 3
# TYPE ferry_s3_request_seconds histogram
ferry_s3_request_seconds_bucket{operation="PutObject",le="0.1"} 4
ferry_s3_request_seconds_bucket{operation="PutObject",le="+Inf"} 6
ferry_s3_request_seconds_sum{operation="PutObject"} 1.5
ferry_s3_request_seconds_count{operation="PutObject"} 6
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0.5"} 0.001
go_gc_duration_seconds_sum 0.01
go_gc_duration_seconds_count 9
ferry_untyped 1e3
ferry_quoted{error="a \"b\", c=d",key="x\\y"} 1
`

func TestParse(t *testing.T) {
	s, err := Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		match map[string]string
		sum   float64
		has   bool
	}{
		{"ferry_messages_total", nil, 14, true},
		{"ferry_messages_total", Labels("stage", "fetcher"), 9, true},
		{"ferry_messages_total", Labels("stage", "fetcher", "outcome", "ok"), 7, true},
		{"ferry_messages_total", Labels("outcome", "dead"), 2, true},
		{"ferry_messages_total", Labels("stage", "verifier"), 0, false},
		{"ferry_in_flight", Labels("stage", "fetcher"), 3, true},
		{"ferry_s3_request_seconds_count", Labels("operation", "PutObject"), 6, true},
		{"ferry_s3_request_seconds_sum", nil, 1.5, true},
		{"ferry_s3_request_seconds_bucket", Labels("le", "0.1"), 4, true},
		{"ferry_s3_request_seconds_bucket", Labels("le", "+Inf"), 6, true},
		{"ferry_s3_request_seconds", nil, 0, false},
		{"go_gc_duration_seconds", Labels("quantile", "0.5"), 0.001, true},
		{"go_gc_duration_seconds_count", nil, 9, true},
		{"ferry_untyped", nil, 1000, true},
		{"ferry_quoted", Labels("error", `a "b", c=d`, "key", `x\y`), 1, true},
		{"ferry_messages", nil, 0, false},
	} {
		if got := s.Sum(tc.name, tc.match); got != tc.sum {
			t.Errorf("Sum(%s, %v) = %g, want %g", tc.name, tc.match, got, tc.sum)
		}
		if got := s.Has(tc.name, tc.match); got != tc.has {
			t.Errorf("Has(%s, %v) = %v, want %v", tc.name, tc.match, got, tc.has)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, bad := range []string{
		"ferry_x{stage=\"a\" 1\n",
		"ferry_x one\n",
		"# TYPE ferry_x counter\n# TYPE ferry_x gauge\nferry_x 1\n",
	} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: parsed", bad)
		}
	}
}

// TestScrape reads what client_golang serves.
func TestScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_messages_total", Help: "h"}, []string{"stage"})
	reg.MustRegister(c)
	c.WithLabelValues("fetcher").Add(3)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	go srv.Serve(l)
	defer srv.Close()
	s, err := Scrape(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sum("ferry_messages_total", Labels("stage", "fetcher")); got != 3 {
		t.Errorf("scraped %g, want 3", got)
	}
	if _, err := Scrape(context.Background(), "127.0.0.1:1"); err == nil {
		t.Error("scraped a closed port")
	}
}
