package run

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

// TestRunFailsFirst: a run that cannot start says why once, exits non-zero and prints no
// summary (which would read like an empty success): a missing key list is a usage error found
// before the embedded server starts (no --data folder appears), and an unreachable Cassandra
// fails the run with its error alone.
func TestRunFailsFirst(t *testing.T) {
	dir := t.TempDir()
	job, err := os.ReadFile("../../deploy/local/ferry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := strings.NewReplacer("hosts: [127.0.0.1]", `hosts: ["127.0.0.1:1"]`, "hosts: [127.0.0.2]", `hosts: ["127.0.0.2:1"]`).Replace(string(job))
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(unreachable), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(keys, []byte("a\nb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		invalid bool
		says    string
	}{
		{"missing key list", []string{"--keys", filepath.Join(dir, "nokeys.txt")}, true, "--keys: key list: stat"},
		{"glob matching nothing", []string{"--keys", filepath.Join(dir, "*.gz")}, true, "matches no file"},
		{"unreachable Cassandra", []string{"--keys", keys}, false, "fetcher: cassandra target dc1: connect to 127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(dir, "data-"+strings.ReplaceAll(tc.name, " ", "-"))
			var out bytes.Buffer
			a := &cli.App{Name: "ferry", Flags: service.GlobalFlags(), Commands: []*cli.Command{Command()}, Writer: &out, ErrWriter: &out}
			t.Setenv(service.NATSEnv, "") // restored after the test
			os.Unsetenv(service.NATSEnv)  // the embedded server, not a NATS of the machine
			err := a.RunContext(context.Background(), append([]string{"ferry", "--job", "t", "--config", filepath.Join(dir, "bad.yaml"),
				"--metrics-addr", "", "--data", data, "run", "--progress=false"}, tc.args...))
			if err == nil || config.IsInvalid(err) != tc.invalid || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("%v (usage error: %v), want one saying %q (usage error: %v)", err, config.IsInvalid(err), tc.says, tc.invalid)
			}
			if strings.Count(err.Error(), "fetcher:") > 1 {
				t.Errorf("%q: the stage named twice", err)
			}
			if strings.Contains(out.String(), "keys verified") {
				t.Errorf("a summary for a run that never started:\n%s", out.String())
			}
			if _, err := os.Stat(data); tc.invalid && err == nil {
				t.Errorf("the embedded server started (%s exists) before the inputs were checked", data)
			}
		})
	}
}
