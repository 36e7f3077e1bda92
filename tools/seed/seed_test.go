package seed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func validConfig() Config {
	return Config{Count: 10, KeysOut: "keys.txt", Concurrency: 4, Consistency: "ALL", Replication: "dc1:1,dc2:1", Seed: 1}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; empty: valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"sizes", func(c *Config) { c.Sizes = "0, 3145728,17825792" }, ""},
		{"lower-case consistency", func(c *Config) { c.Consistency = "local_quorum" }, ""},
		{"negative count", func(c *Config) { c.Count = -1 }, "negative"},
		{"no key file", func(c *Config) { c.KeysOut = "" }, "--keys-out"},
		{"bad size", func(c *Config) { c.Sizes = "0,3MiB" }, "--sizes"},
		{"negative size", func(c *Config) { c.Sizes = "-1" }, "--sizes"},
		{"zero concurrency", func(c *Config) { c.Concurrency = 0 }, "--concurrency"},
		{"bad consistency", func(c *Config) { c.Consistency = "MOST" }, "--consistency"},
		{"replication without count", func(c *Config) { c.Replication = "dc1" }, "--replication"},
		{"replication zero", func(c *Config) { c.Replication = "dc1:0" }, "--replication"},
		{"replication quote", func(c *Config) { c.Replication = "dc1':1" }, "--replication"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseReplication(t *testing.T) {
	rs, err := parseReplication("dc1:3, dc2:1")
	if err != nil || len(rs) != 2 || rs[0] != (replica{"dc1", 3}) || rs[1] != (replica{"dc2", 1}) {
		t.Errorf("got %v, %v", rs, err)
	}
}

// app is the smallest app that runs the command as ferry does: "config" is a global flag.
func app() *cli.App {
	return &cli.App{
		Name:     "ferry",
		Flags:    []cli.Flag{&cli.StringFlag{Name: "config", Value: "ferry.yaml"}},
		Commands: []*cli.Command{Command()},
	}
}

func TestCommandRejectsBadInputBeforeConnecting(t *testing.T) {
	dir := t.TempDir()
	job := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(job, []byte(`
source:
  targets:
    - {name: only, hosts: [127.0.0.1], table: ks.t}
destination: {bucket: some-bucket}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad flag value", []string{"--config", job, "seed", "--replication", "dc1"}, "--replication"},
		{"missing job file", []string{"--config", filepath.Join(dir, "nope.yaml"), "seed"}, "nope.yaml"},
		{"fallback without second target", []string{"--config", job, "seed", "--fallback", "1"}, "second read target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := app().Run(append([]string{"ferry"}, tt.args...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestWriteKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.txt")
	if err := writeKeyFile(path, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "a\nb\n" {
		t.Errorf("file = %q, %v", b, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary file left behind: %v", entries)
	}
}
