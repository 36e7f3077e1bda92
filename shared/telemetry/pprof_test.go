package telemetry

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServePprof: the profiler has its own address, off when empty; every profile is served
// there, a profile or trace longer than MaxProfileSeconds is refused at once (before, the metrics
// port held the profiler for anyone asking profile?seconds=86400), and an address that is not
// loopback is served with one warning.
func TestServePprof(t *testing.T) {
	if stop, err := ServePprof("", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	} else {
		stop()
	}
	for _, tc := range []struct {
		listen string // host:0
		warn   bool
	}{
		{"127.0.0.1:0", false},
		{"localhost:0", false},
		{"0.0.0.0:0", true},
		{":0", true},
	} {
		var logged strings.Builder
		log := slog.New(slog.NewTextHandler(&logged, nil))
		stop, addr, err := servePprof(tc.listen, log)
		if err != nil {
			t.Fatalf("%s: %v", tc.listen, err)
		}
		if got := strings.Count(logged.String(), "level=WARN"); got != map[bool]int{false: 0, true: 1}[tc.warn] {
			t.Errorf("%s: %d warnings, want warn=%v: %s", tc.listen, got, tc.warn, logged.String())
		}
		if tc.warn && !strings.Contains(logged.String(), "127.0.0.1") {
			t.Errorf("%s: the warning does not say to bind 127.0.0.1: %s", tc.listen, logged.String())
		}
		_, port, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort("127.0.0.1", port)
		client := &http.Client{Timeout: 10 * time.Second}
		for _, r := range []struct {
			path string
			code int
			body string
		}{
			{"/debug/pprof/", 200, "goroutine"},
			{"/debug/pprof/cmdline", 200, ""},
			{"/debug/pprof/goroutine?debug=2", 200, "goroutine"},
			{"/debug/pprof/heap?debug=1", 200, "heap profile"},
			{"/debug/pprof/profile?seconds=86400", 400, "at most 60"},
			{"/debug/pprof/trace?seconds=86400", 400, "at most 60"},
			{"/debug/pprof/heap?seconds=86400", 400, "at most 60"},
			{"/debug/pprof/profile?seconds=x", 400, "seconds"},
			{"/debug/pprof/trace?seconds=1", 200, ""},
			{"/metrics", 404, ""},
		} {
			start := time.Now()
			resp, err := client.Get("http://" + addr + r.path)
			if err != nil {
				t.Errorf("%s GET %s: %v", tc.listen, r.path, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != r.code || !strings.Contains(string(body), r.body) {
				t.Errorf("%s GET %s = %d %.200q, want %d with %q", tc.listen, r.path, resp.StatusCode, body, r.code, r.body)
			}
			if r.code == 400 && time.Since(start) > 5*time.Second {
				t.Errorf("%s GET %s took %s to be refused", tc.listen, r.path, time.Since(start))
			}
		}
		stop()
	}
}
