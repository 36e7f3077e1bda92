//go:build integration

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// secureCassandra runs deploy/local/cassandra-secure.sh with one argument (start, stop, status).
func secureCassandra(t *testing.T, timeout time.Duration, arg string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(t), "deploy/local/cassandra-secure.sh"), arg)
	cmd.Env = append(os.Environ(), "FERRY_ROOT="+repoRoot(t))
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCassandraSecurity starts the secured single-node cluster of deploy/local/cassandra-secure.sh
// (127.0.0.3: TLS required, PasswordAuthenticator, role ferry with a generated password and SELECT
// on ferry_secure), writes a few rows as the superuser, then reads them as ferry through a job
// file's target with username, password_file and tls.ca_file. A wrong password, TLS without
// ca_file, a wrong server_name, a clear-text client and no password must each fail with a one-line
// error that says what to check. Then a migration through the four services with that target (see
// secureMigration). Neither ferry's password nor the wrong one may be in an error, a log line (ours,
// gocql's), the script's output, an output of the migration (each service's log included) or the
// node's log. The node starts once and is stopped at the end.
func TestCassandraSecurity(t *testing.T) {
	start := time.Now()
	out, err := secureCassandra(t, 4*time.Minute, "start")
	t.Cleanup(func() {
		if out, err := secureCassandra(t, 2*time.Minute, "stop"); err != nil {
			t.Errorf("cassandra-secure.sh stop: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("cassandra-secure.sh start: %v\n%s", err, out)
	}
	t.Logf("secured node up in %s", time.Since(start).Round(100*time.Millisecond))
	sd := filepath.Join(repoRoot(t), ".local/data/cassandra-secure")
	pwFile, ca := filepath.Join(sd, "ferry.password"), filepath.Join(sd, "ca.pem")
	secret, err := config.ReadPasswordFile(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wrong := "wrong-" + randHex(t, 8)
	passwords := []string{secret, wrong} // not the superuser's "cassandra": it names everything here

	// Every log line (gocql's own go to slog) is kept to be searched for the passwords.
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(prev)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The table and its rows, as the superuser.
	super := config.Target{Name: "secure-admin", Hosts: []string{"127.0.0.3"}, LocalDC: "secure1",
		Username: "cassandra", PasswordFile: write("super.password", "cassandra\n"), TLS: &config.TargetTLS{CAFile: ca}}
	c, err := cass.ClusterConfig(super, 4)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 20 * time.Second
	s, err := cass.Open(ctx, super, c)
	if err != nil {
		t.Fatalf("superuser over TLS: %v", err)
	}
	rows := map[string]string{}
	for _, q := range []string{`CREATE TABLE IF NOT EXISTS ferry_secure.blobs (key text PRIMARY KEY, data blob)`} {
		if err := s.Query(q).WithContext(ctx).Exec(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for i := range 5 {
		k, v := fmt.Sprintf("sec-%d", i), fmt.Sprintf("blob %d %s", i, randHex(t, 8))
		rows[k] = v
		if err := s.Query(`INSERT INTO ferry_secure.blobs (key, data) VALUES (?, ?)`, k, []byte(v)).WithContext(ctx).Exec(); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	s.Close()

	// ferry's read target, from a job file.
	job := func(name, extra string) config.Target {
		t.Helper()
		y := fmt.Sprintf("source:\n  targets:\n    - {name: secure, hosts: [127.0.0.3], local_dc: secure1, table: ferry_secure.blobs, conn_timeout: 3s, %s}\ndestination: {bucket: ferry-demo}\n", extra)
		j, err := config.Load(write(name, y))
		if err != nil {
			t.Fatalf("job file %s: %v", name, err)
		}
		return j.Source.Targets[0]
	}
	good := job("good.yaml", fmt.Sprintf("username: ferry, password_file: %s, tls: {ca_file: %s}", pwFile, ca))
	r, err := cass.NewReader(ctx, good, 4)
	if err != nil {
		t.Fatalf("ferry with username, password_file and tls.ca_file: %v", err)
	}
	for k, v := range rows {
		got, err := r.Read(ctx, k)
		if err != nil || string(got) != v {
			t.Errorf("read %s = %q, %v; want %q", k, got, err, v)
		}
	}
	if _, err := r.Read(ctx, "sec-absent"); err == nil {
		t.Error("an absent key read without error")
	}
	r.Close()
	// Role ferry only reads.
	if c, err := cass.ClusterConfig(good, 1); err != nil {
		t.Fatal(err)
	} else if s, err := cass.Open(ctx, good, c); err != nil {
		t.Fatal(err)
	} else {
		err := s.Query(`INSERT INTO ferry_secure.blobs (key, data) VALUES ('x', 0x00)`).WithContext(ctx).Exec()
		s.Close()
		if err == nil || !strings.Contains(err.Error(), "has no MODIFY permission") {
			t.Errorf("role ferry wrote a row: %v, want Unauthorized", err)
		}
	}

	var errs []string
	fails := func(what string, target config.Target, want string) {
		t.Helper()
		t0 := time.Now()
		r, err := cass.NewReader(ctx, target, 4)
		if err == nil {
			r.Close()
			t.Errorf("%s: connected", what)
			return
		}
		msg := err.Error()
		errs = append(errs, msg)
		if !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
			t.Errorf("%s: %q, want one line containing %q", what, msg, want)
		} else {
			t.Logf("%s (%s): %s", what, time.Since(t0).Round(10*time.Millisecond), msg)
		}
	}
	fails("wrong password", job("wrong.yaml", fmt.Sprintf("username: ferry, password_file: %s, tls: {ca_file: %s}",
		write("wrong.password", wrong+"\n"), ca)), "check username and password_file")
	fails("TLS without ca_file", job("noca.yaml", fmt.Sprintf("username: ferry, password_file: %s, tls: {}", pwFile)), "check tls.ca_file")
	fails("wrong server_name", job("name.yaml", fmt.Sprintf("username: ferry, password_file: %s, tls: {ca_file: %s, server_name: cass.example}", pwFile, ca)),
		"check tls.server_name")
	fails("clear text", job("plain.yaml", fmt.Sprintf("username: ferry, password_file: %s", pwFile)), "does it require TLS?")
	t.Setenv(cass.PasswordEnv, "")
	fails("no password", job("nopw.yaml", "username: ferry, tls: {ca_file: "+ca+"}"), "FERRY_CASSANDRA_PASSWORD is empty")

	// A migration through the four services, reading as ferry.
	admin := good
	admin.Name, admin.Username, admin.PasswordFile = "secure-admin", "cassandra", super.PasswordFile
	outputs := secureMigration(t, good, admin)
	migrated := len(outputs)

	nodeLog, _ := os.ReadFile(filepath.Join(repoRoot(t), ".local/logs/cassandra-secure.log"))
	outputs = append(outputs, "errors:\n"+strings.Join(errs, "\n"), "test log lines:\n"+logs.String(),
		"cassandra-secure.sh start:\n"+out, "cassandra-secure.log:\n"+string(nodeLog))
	t.Logf("%d outputs searched (the migration's %d)", len(outputs), migrated)
	for _, o := range outputs {
		name, _, _ := strings.Cut(o, ":\n")
		for _, pw := range passwords {
			if strings.Contains(o, pw) {
				t.Errorf("a password (%d chars) is in %s", len(pw), name)
			}
		}
	}
	t.Logf("whole test %s (incl. node start)", time.Since(start).Round(100*time.Millisecond))
}

// secureMigration runs a migration from the secured node to S3 with the ferry binary. `ferry seed`
// writes the seed's keys (its realistic sizes, plus blobs of 0 B, 1.5 MB and 17 MiB: inline, the
// object store, a multipart upload) to target's table as admin; then `ferry setup` and a producer
// with a key list, a fetcher, an uploader and a verifier, each its own process, move them with
// target (username, password_file, tls.ca_file) as the job's only read target; a few absent keys
// are in the list. Every present key must be verified with its bytes in S3, every absent one
// dead-lettered fetcher/not_found, none lost. It returns every output of the run (the seed's,
// setup's, each service's log), each headed "name:\n", to be searched for the passwords.
func secureMigration(t *testing.T, target, admin config.Target) []string {
	t.Helper()
	const seedN, count, absent = 95001, 32, 3
	sizes := []int{0, 1_500_000, 17 << 20}
	start := time.Now()
	// Room for a busy machine and a 17 MiB read over TLS.
	target.ConnTimeout, target.Timeout = 10*time.Second, 20*time.Second
	r := newRig(t, "secured Cassandra: TLS, password_file", "secure", rigOptions{noProxy: true,
		edit: func(j *config.Job) { j.Source.Targets = []config.Target{target} }})
	seedJob := r.jobCfg
	seedJob.Source.Targets = []config.Target{admin}
	sizeList := make([]string, len(sizes))
	for i, n := range sizes {
		sizeList[i] = strconv.Itoa(n)
	}
	outputs := []string{"seed:\n" + r.must("--config", r.writeJob("seed.yaml", &seedJob), "seed",
		"--count", strconv.Itoa(count), "--sizes", strings.Join(sizeList, ","), "--seed", strconv.Itoa(seedN),
		"--replication", target.LocalDC+":1", "--concurrency", "4", "--keys-out", filepath.Join(r.dir, "seeded.txt"))}
	keys := seed.PlanKeys(seedN, count, 0, 0, sizes)
	list, want := r.keySet(keys, 0, absent)

	outputs = append(outputs, "setup:\n"+r.must("setup"))
	c := r.crew()
	c.add("producer", 1, "producer", "--keys", r.writeKeys("keys.txt", list))
	c.add("fetcher", 1, "fetcher", "--concurrency", "4")
	c.add("uploader", 1, "uploader", "--concurrency", "4")
	c.add("verifier", 1, "verifier", "--concurrency", "4")
	c.settle(5 * time.Minute)
	c.stop()
	if len(c.exits) > 0 {
		t.Errorf("services exited by themselves: %v", c.exits)
	}
	rw := r.reconcile(plan{want: want})
	if rw.verified != len(keys.Main) || rw.dead["fetcher/not_found"] != absent || len(rw.dead) != 1 || rw.lost != 0 {
		t.Errorf("migration from the secured node: %d verified (want %d), DLQ %s (want fetcher/not_found %d), %d lost",
			rw.verified, len(keys.Main), rw.deadString(), absent, rw.lost)
	}
	t.Logf("migration of %d keys from the secured node: %s", len(list), time.Since(start).Round(100*time.Millisecond))

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Error(err)
		}
		if len(b) == 0 {
			t.Errorf("%s wrote no log: nothing to search", p.name)
		}
		outputs = append(outputs, p.name+" log:\n"+string(b))
	}
	return outputs
}
