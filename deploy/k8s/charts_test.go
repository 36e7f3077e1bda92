package k8s

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// chartsUsed are the Helm charts ferry's Kubernetes deployment installs.
var chartsUsed = []string{"nats/nats", "kedacore/keda"}

// docsPending are files whose helm commands are logged rather than failed; none now: every doc
// carries the pinned commands.
var docsPending []string

var (
	helmInstall  = regexp.MustCompile(`\bhelm\s+(?:upgrade|install)\b`)
	helmVersion  = regexp.MustCompile(`--version(?:=|\s+)(\S+)`)
	exactVersion = regexp.MustCompile(`^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$`)
	chartRef     = regexp.MustCompile(`(?:^|\s)([a-z0-9-]+/[a-z0-9-]+)(?:\s|$)`)
)

// helmCommands returns every `helm install` / `helm upgrade` command in the repository's text files
// (continuation lines joined), by file.
func helmCommands(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while walking: other work goes on in this tree
		}
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "vendor" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".go") || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) || (err == nil && info.Size() > 1<<20) {
			return nil
		} else if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil || strings.ContainsRune(string(b[:min(len(b), 512)]), 0) {
			return err // nil for a binary file: skipped
		}
		joined := strings.ReplaceAll(string(b), "\\\n", " ")
		for _, line := range strings.Split(joined, "\n") {
			if helmInstall.MatchString(line) {
				rel, _ := filepath.Rel(root, path)
				out[rel] = append(out[rel], strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHelmChartsPinned: every `helm install`/`helm upgrade` of a chart in the repository names an
// exact chart `--version` (a bare install takes whatever the repository serves that day), the same
// version wherever the same chart is installed, and each chart ferry needs is installed, pinned,
// somewhere in deploy/.
func TestHelmChartsPinned(t *testing.T) {
	root := filepath.Join("..", "..")
	versions := map[string]map[string][]string{} // chart -> version -> where
	for file, cmds := range helmCommands(t, root) {
		pending := false
		for _, p := range docsPending {
			pending = pending || file == p
		}
		for _, cmd := range cmds {
			c, _, _ := strings.Cut(strings.TrimLeft(cmd, "# \t"), " #") // a shell comment's own text, not a trailing one
			m := chartRef.FindStringSubmatch(c)
			if m == nil {
				continue // helm upgrade of something that is not a repo/chart (a local path)
			}
			chart := m[1]
			v := helmVersion.FindStringSubmatch(cmd)
			if v == nil || !exactVersion.MatchString(v[1]) {
				if pending {
					t.Logf("%s (docs pending): %q installs %s without an exact --version", file, cmd, chart)
				} else {
					t.Errorf("%s: %q installs %s without an exact --version", file, cmd, chart)
				}
				continue
			}
			if versions[chart] == nil {
				versions[chart] = map[string][]string{}
			}
			versions[chart][v[1]] = append(versions[chart][v[1]], file)
		}
	}
	for _, chart := range chartsUsed {
		if len(versions[chart]) == 0 {
			t.Errorf("%s: installed with a pinned --version nowhere (deploy/k8s must say how to install it)", chart)
		}
	}
	for chart, vs := range versions {
		if len(vs) > 1 {
			t.Errorf("%s is pinned at different versions: %v", chart, vs)
		}
	}
}

func TestCheckImageRef(t *testing.T) {
	for ref, ok := range map[string]bool{
		"registry.example.invalid/ferry:unset":    true,
		"localhost/ferry:dev":                     true,
		"registry.internal:5000/team/ferry:1.2.3": true,
		"ghcr.io/acme/ferry@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": true,
		"ferry":                             false,
		"ferry:1.0":                         false,
		"acme/ferry:1.0":                    false,
		"docker.io/acme/ferry:1.0":          false,
		"registry.example.com/ferry":        false,
		"registry.example.com/ferry:latest": false,
	} {
		if err := checkImageRef(ref); (err == nil) != ok {
			t.Errorf("checkImageRef(%q) = %v, want ok=%v", ref, err, ok)
		}
	}
}
