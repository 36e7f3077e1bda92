//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// TestFaultFlags (scenario 10): bad flags and configuration values. Each must exit 2 with one
// line that names the bad value, and no stack trace. Flags and the job file must be checked before
// anything is contacted, so those cases run against a NATS URL where nothing listens; stream
// settings (checked when the streams are set up) and the unknown DC (found on connecting) use the
// local NATS.
func TestFaultFlags(t *testing.T) { flagsScenario(t) }

// TestChaosFlags is scenario 10 in `make chaos` (it is cheap: the same cases).
func TestChaosFlags(t *testing.T) {
	requireChaos(t)
	flagsScenario(t)
}

func flagsScenario(t *testing.T) {
	r := newRig(t, "10 bad flags and config", "flags", rigOptions{noProxy: true})
	t.Cleanup(func() { // nothing to inspect in this job, pass or fail
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = bus.Delete(ctx, r.js, r.names)
	})
	base, err := os.ReadFile(r.direct)
	if err != nil {
		t.Fatal(err)
	}
	jobFile := func(name, from, to string) string {
		if !strings.Contains(string(base), from) {
			t.Fatalf("job file has no %q to replace", from)
		}
		path := filepath.Join(r.dir, name)
		if err := os.WriteFile(path, []byte(strings.Replace(string(base), from, to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	j := r.jobCfg
	j.Source.Targets = []config.Target{j.Source.Targets[0]}
	j.Source.Targets[0].LocalDC = "dc9"
	dcFile := r.writeJob("unknown-dc.yaml", &j)
	offline := "nats://127.0.0.1:1" // nothing listens: a service that connects before validating fails differently
	cases := []struct {
		name string
		nats string // "" offline
		args []string
		want string // the value the error must name
	}{
		{name: "unknown DC in the job file", nats: r.url, args: []string{"--config", dcFile, "fetcher"}, want: "dc9"},
		{name: "negative fetcher concurrency", args: []string{"fetcher", "--concurrency", "-1"}, want: "-1"},
		{name: "negative uploader concurrency", args: []string{"uploader", "-c", "-5"}, want: "-5"},
		{name: "negative verifier concurrency", args: []string{"verifier", "--concurrency", "-3"}, want: "-3"},
		{name: "negative run concurrency", args: []string{"run", "--fetcher-concurrency", "-2"}, want: "-2"},
		{name: "malformed endpoint (no scheme)", args: []string{"--config", jobFile("ep1.yaml", "endpoint: http://", "endpoint: "), "uploader"}, want: "127.0.0.1:7070"},
		{name: "malformed endpoint (no host)", args: []string{"--config", jobFile("ep2.yaml", "endpoint: http://127.0.0.1:7070", "endpoint: http//nohost"), "verifier"}, want: "http//nohost"},
		{name: "job name with a dot", args: []string{"--job", "photos.v2", "setup"}, want: "photos.v2"},
		{name: "job name with a dot (service)", args: []string{"--job", "a.b", "fetcher"}, want: "a.b"},
		{name: "unknown flag", args: []string{"fetcher", "--concurency", "8"}, want: "concurency"},
		{name: "not a number", args: []string{"uploader", "--concurrency", "many"}, want: "many"},
		{name: "unknown field in the job file", args: []string{"--config", jobFile("field.yaml", "source:", "sourc:"), "fetcher"}, want: "sourc"},
		{name: "missing job file", args: []string{"--config", "/nonexistent/ferry.yaml", "fetcher"}, want: "/nonexistent/ferry.yaml"},
		{name: "bad key pattern", args: []string{"--config", jobFile("re.yaml", "pattern: ", "pattern: '(' #"), "fetcher"}, want: "pattern"},
		{name: "ack wait below 1s", nats: r.url, args: []string{"setup", "--ack-wait", "10ms"}, want: "10ms"},
		{name: "dedupe window not above ack wait", nats: r.url, args: []string{"setup", "--ack-wait", "5m", "--dedupe-window", "2m"}, want: "--dedupe-window 2m"},
		{name: "replicas 2", nats: r.url, args: []string{"setup", "--replicas", "2"}, want: "--replicas 2"},
		{name: "blobs cap below 16 MiB", nats: r.url, args: []string{"fetcher", "--blobs-max-bytes", "1000"}, want: "1000"},
		{name: "deep sample above 1", args: []string{"verifier", "--deep-sample", "2"}, want: "2"},
		{name: "unknown DLQ reason", args: []string{"dlq", "export", "--reason", "lost"}, want: "lost"},
		{name: "bad log level", args: []string{"--log-level", "loud", "fetcher"}, want: "loud"},
		{name: "negative throttle", args: []string{"throttle", "--reads", "-5"}, want: "-5"},
	}
	var failed []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.nats
			if url == "" {
				url = offline
			}
			start := time.Now()
			out, code := r.runFerry(90*time.Second, []string{"FERRY_NATS=" + url}, tc.args...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var problems []string
			if code != 2 {
				problems = append(problems, fmt.Sprintf("exit code %d, want 2", code))
			}
			if strings.Contains(out, "goroutine") || strings.Contains(out, "panic") {
				problems = append(problems, "a stack trace")
			}
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "ferry: ") {
				problems = append(problems, fmt.Sprintf("%d lines, want one \"ferry: ...\" line", len(lines)))
			}
			if !strings.Contains(lastLine(out), tc.want) {
				problems = append(problems, "the error does not name "+tc.want)
			}
			if len(problems) > 0 {
				failed = append(failed, tc.name+": "+strings.Join(problems, ", "))
				t.Errorf("ferry %s (%s): %s\n%s", strings.Join(tc.args, " "), time.Since(start).Round(time.Millisecond),
					strings.Join(problems, "; "), tail([]byte(out), 2000))
			} else {
				t.Logf("exit 2: %s", lastLine(out))
			}
		})
	}
	rw := &row{scenario: r.scenario, dupPUTs: "n/a", wall: time.Since(r.began), result: "pass",
		note: strconv.Itoa(len(cases)) + " cases: exit 2, one line naming the value, no stack trace"}
	if len(failed) > 0 {
		rw.result = "FAIL"
		rw.note = fmt.Sprintf("%d of %d cases wrong: %s", len(failed), len(cases), strings.Join(failed, "; "))
	}
	r.addRow(rw)
}
