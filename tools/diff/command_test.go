package diff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

// TestDiffForScripts: `ferry diff` as a script uses it: the output folder made if missing and the
// files it wrote printed, - for stdout (the summary then on stderr), --json, and the exit status
// of diff(1): ErrDiffer when the sets differ, nil when they are the same.
func TestDiffForScripts(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")
	if err := os.WriteFile(a, []byte("k1\nk2\nk3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("k2\nk3\nk4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "new", "folder")
	for _, tc := range []struct {
		name           string
		args           []string
		err            error // ErrDiffer, nil, or errInvalid for a usage error
		stdout, stderr string
		file           string // a result file that must exist
	}{
		{"differ", []string{"--out", out, a, b}, ErrDiffer, "only in A: 1; only in B: 1", "", filepath.Join(out, OnlyInA)},
		{"files printed", []string{"--out", out, a, b}, ErrDiffer, "wrote " + filepath.Join(out, OnlyInB), "", ""},
		{"same", []string{"--out", out, a, a}, nil, "only in A: 0; only in B: 0; common: 3", "", ""},
		{"only in A to stdout", []string{"--out", out, "--only-a", "-", a, b}, ErrDiffer, "k1\n", "only in A: 1", filepath.Join(out, OnlyInB)},
		{"json", []string{"--out", out, "--json", a, b}, ErrDiffer, `"only_in_a":1,"only_in_b":1,"common":2`, "", ""},
		{"json beside stdout", []string{"--out", out, "--json", "--only-b", "-", a, b}, ErrDiffer, "k4\n", `"only_in_b":1`, ""},
		{"both to stdout", []string{"--only-a", "-", "--only-b", "-", a, b}, errInvalid, "", "", ""},
		{"out is a file", []string{"--out", notDir, a, b}, errInvalid, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			app := &cli.App{Name: "ferry", Flags: service.GlobalFlags(), Commands: []*cli.Command{Command()}, Writer: &stdout, ErrWriter: &stderr}
			err := app.RunContext(context.Background(), append([]string{"ferry", "diff", "--tmp", dir}, tc.args...))
			switch {
			case tc.err == errInvalid:
				if !config.IsInvalid(err) {
					t.Fatalf("%v, want a usage error", err)
				}
				return
			case !errors.Is(err, tc.err) && err != tc.err:
				t.Fatalf("%v, want %v", err, tc.err)
			}
			if !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", stdout.String(), tc.stdout, stderr.String(), tc.stderr)
			}
			if strings.Contains(tc.stdout, "{") {
				var m map[string]any
				if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &m); err != nil {
					t.Errorf("--json: %v in %q", err, stdout.String())
				}
			}
			if tc.file != "" {
				if _, err := os.Stat(tc.file); err != nil {
					t.Errorf("result file: %v", err)
				}
			}
		})
	}
}

var errInvalid = errors.New("usage error")
