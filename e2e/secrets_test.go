//go:build integration

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// TestSecretsStayOut runs a small migration with every secret ferry takes set to a value made for
// this run: the Cassandra password (FERRY_CASSANDRA_PASSWORD, with a username in the job file; the
// local Cassandra asks for no authentication, so gocql never sends it, but every service holds it),
// the S3 secret key (the local stack's, from the AWS chain) and a NATS password (FERRY_NATS_PASSWORD
// with a user; the local NATS has no authentication and accepts any). Then none of those values may
// appear in any service's output, /metrics, a command's --help, or the error output of runs that
// fail on purpose: a wrong S3 secret, a username without a password.
func TestSecretsStayOut(t *testing.T) {
	const (
		seedN, count, absent, fallback = 94001, 30, 2, 2
		big                            = 1_500_000 // above the inline limit: the object store path too
	)
	start := time.Now()
	cassPW := "cass-" + randHex(t, 12)
	natsPW := "nats-" + randHex(t, 12)
	wrongS3 := "wrong-" + randHex(t, 12)
	s3Secret := os.Getenv("AWS_SECRET_ACCESS_KEY")
	if s3Secret == "" {
		t.Fatal("AWS_SECRET_ACCESS_KEY is empty: TestMain sets the local stack's")
	}
	secrets := map[string]string{"FERRY_CASSANDRA_PASSWORD": cassPW, "AWS_SECRET_ACCESS_KEY": s3Secret,
		"FERRY_NATS_PASSWORD": natsPW, "wrong AWS_SECRET_ACCESS_KEY": wrongS3}
	t.Setenv("FERRY_CASSANDRA_PASSWORD", cassPW)
	t.Setenv("FERRY_NATS_USER", "ferry")
	t.Setenv("FERRY_NATS_PASSWORD", natsPW)

	h := newRig(t, "", "secrets", rigOptions{plain: true})
	job, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range job.Source.Targets {
		job.Source.Targets[i].Username = "ferry"
	}
	b, err := yaml.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = filepath.Join(h.dir, "ferry.yaml")
	if err := os.WriteFile(h.cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var outputs []string // every output checked at the end
	collect := func(what, out string) { outputs = append(outputs, what+":\n"+out) }

	list := filepath.Join(h.dir, "keys.txt")
	out, err := exec.Command(bin, "--config", h.cfg, "seed", "--count", fmt.Sprint(count), "--absent", fmt.Sprint(absent),
		"--fallback", fmt.Sprint(fallback), "--sizes", fmt.Sprint(big), "--seed", fmt.Sprint(seedN), "--keys-out", list).CombinedOutput()
	if err != nil {
		t.Fatalf("ferry seed with a username and FERRY_CASSANDRA_PASSWORD: %v\n%s", err, out)
	}
	collect("seed", string(out))
	keys := seed.PlanKeys(seedN, count, fallback, absent, []int{big})
	deleteObjects(t, keys.All())
	wantVerified := uint64(len(keys.Main) + len(keys.Fallback))
	wantTotal := wantVerified + absent

	collect("setup", h.must("setup"))
	addr := map[string]string{}
	for _, s := range []string{"producer", "fetcher", "uploader", "verifier"} {
		addr[s] = freeAddr(t)
		args := []string{"--metrics-addr", addr[s], s}
		if s == "producer" {
			args = append(args, "--keys", list)
		} else {
			args = append(args, "--concurrency", "4")
		}
		h.start(s, args...)
	}
	h.waitUntil(3*time.Minute, func() string {
		return fmt.Sprintf("verified %d of %d, dead %v, backlog %d", h.mustMsgs(h.names.Done), wantVerified, h.mustDead(), h.mustBacklog())
	}, func() bool { return h.mustMsgs(h.names.Done)+h.mustDead().Total() >= wantTotal && h.mustBacklog() == 0 })
	if done, dead := h.mustMsgs(h.names.Done), h.mustDead(); done != wantVerified || dead["fetcher/not_found"] != absent {
		t.Errorf("DONE %d (want %d), DLQ %v (want fetcher/not_found %d)", done, wantVerified, dead, absent)
	}
	checkS3(t, h.cfg, append(append([]string{}, keys.Main...), keys.Fallback...))
	t.Logf("migration of %d keys with the secrets set: %s", wantTotal, time.Since(start).Round(100*time.Millisecond))

	for s, a := range addr {
		for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
			code, body := httpGet(t, a, path)
			if code == 0 && s == "producer" {
				continue // the producer may have finished its list and exited
			}
			if path == "/metrics" && (code != 200 || !strings.Contains(body, "ferry_")) {
				t.Errorf("%s /metrics: %d", s, code)
			}
			collect(s+" "+path, body)
		}
	}
	for _, args := range [][]string{{"status"}, {"dlq", "ls"}} {
		collect(strings.Join(args, " "), h.must(args...))
	}

	// --help of every command.
	top := h.must("--help")
	collect("--help", top)
	for _, cmd := range []string{"setup", "producer", "fetcher", "uploader", "verifier", "run", "dlq", "throttle", "seed",
		"bench", "diff", "status", "report"} {
		if !strings.Contains(top, cmd) {
			t.Errorf("ferry --help does not list %s", cmd)
		}
		collect(cmd+" --help", h.must(cmd, "--help"))
	}

	// Runs that fail on purpose, with the secrets still set.
	fail := func(what string, env []string, want string, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(h.environ(), env...)
		timer := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
		out, err := cmd.CombinedOutput()
		timer.Stop()
		collect(what, string(out))
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("%s: %v, want a failure mentioning %q:\n%s", what, err, want, tail(out, 2000))
		} else {
			t.Logf("%s: %s", what, lastLine(string(out)))
		}
	}
	fail("uploader with a wrong S3 secret", []string{"AWS_SECRET_ACCESS_KEY=" + wrongS3}, "check the credentials of the AWS chain", "uploader")
	fail("verifier with a wrong S3 secret", []string{"AWS_SECRET_ACCESS_KEY=" + wrongS3}, "check the credentials of the AWS chain", "verifier")
	fail("fetcher with a username but no password", []string{"FERRY_CASSANDRA_PASSWORD="}, "FERRY_CASSANDRA_PASSWORD is empty", "fetcher")

	// Every service's output, then the check.
	logs, _ := filepath.Glob(filepath.Join(h.dir, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		collect(filepath.Base(l), string(b))
	}
	for _, o := range outputs {
		for name, s := range secrets {
			if strings.Contains(o, s) {
				t.Errorf("%s appears in output %s", name, tail([]byte(o), 1500))
			}
		}
	}
	t.Logf("%d outputs (%d service logs, /metrics of 4 services, 14 --help, 3 failing runs) hold none of the %d secrets; whole test %s",
		len(outputs), len(logs), len(secrets), time.Since(start).Round(100*time.Millisecond))
}
