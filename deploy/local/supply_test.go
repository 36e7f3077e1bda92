// Package local has no Go code of its own: this test checks the local stack's downloads
// (deploy/local/tools.sh) against the checksum lock deploy/local/tools.sum. Every tool and jar the
// script fetches has a line there, the script's verify functions refuse a corrupted file, and the
// script itself refuses a jar or a tool module whose checksum differs from the lock.
package local

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const lockFile = "tools.sum"

// lock is tools.sum, parsed: the Go modules ("module@version" -> h1 hash) and the jars (file name
// -> SHA-256 and Maven coordinates).
type lock struct {
	mods  map[string]string
	jars  map[string]string
	coord map[string]string
}

var (
	h1Re     = regexp.MustCompile(`^h1:[A-Za-z0-9+/]{43}=$`)
	sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)
	coordRe  = regexp.MustCompile(`^([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+):([A-Za-z0-9_.+-]+)$`)
)

func readLock(t *testing.T, path string) lock {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l := lock{mods: map[string]string{}, jars: map[string]string{}, coord: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch {
		case f[0] == "go" && len(f) == 4:
			if !h1Re.MatchString(f[3]) {
				t.Errorf("%s:%d: %q is not a go.sum h1: hash", path, n, f[3])
			}
			key := f[1] + "@" + f[2]
			if _, dup := l.mods[key]; dup {
				t.Errorf("%s:%d: %s twice", path, n, key)
			}
			l.mods[key] = f[3]
		case f[0] == "jar" && len(f) == 4:
			if !sha256Re.MatchString(f[1]) {
				t.Errorf("%s:%d: %q is not a SHA-256 in hex", path, n, f[1])
			}
			m := coordRe.FindStringSubmatch(f[3])
			if m == nil {
				t.Errorf("%s:%d: %q is not group:artifact:version", path, n, f[3])
			} else if !strings.HasPrefix(f[2], m[2]+"-"+m[3]) || !strings.HasSuffix(f[2], ".jar") {
				t.Errorf("%s:%d: file %s is not %s's jar", path, n, f[2], f[3])
			}
			if _, dup := l.jars[f[2]]; dup {
				t.Errorf("%s:%d: %s twice", path, n, f[2])
			}
			l.jars[f[2]], l.coord[f[2]] = f[1], f[3]
		default:
			t.Errorf("%s:%d: want `go MODULE VERSION h1:…` or `jar SHA256 FILE GROUP:ARTIFACT:VERSION`, got %q", path, n, line)
		}
	}
	return l
}

// goTools reads tools.sh's go_tool calls and resolves their package and version from versions.sh:
// name -> [package, version].
func goTools(t *testing.T) map[string][2]string {
	t.Helper()
	b, err := os.ReadFile("tools.sh")
	if err != nil {
		t.Fatal(err)
	}
	calls := regexp.MustCompile(`(?m)^go_tool\s+(\S+)\s+"\$(\w+)"\s+"\$(\w+)"`).FindAllStringSubmatch(string(b), -1)
	if len(calls) == 0 {
		t.Fatal("tools.sh: no go_tool NAME \"$PKG\" \"$VERSION\" call found; teach the test")
	}
	out := map[string][2]string{}
	for _, c := range calls {
		v := bashOut(t, nil, fmt.Sprintf(`. ./versions.sh; printf '%%s %%s' "$%s" "$%s"`, c[2], c[3]))
		pkg, ver, _ := strings.Cut(v, " ")
		if pkg == "" || ver == "" {
			t.Errorf("tools.sh: go_tool %s: $%s or $%s is empty in versions.sh", c[1], c[2], c[3])
		}
		out[c[1]] = [2]string{pkg, ver}
	}
	return out
}

// moduleOf is the lock's module that pkg@version belongs to (the longest prefix).
func (l lock) moduleOf(pkg, version string) (string, bool) {
	best := ""
	for key := range l.mods {
		mod, ver, _ := strings.Cut(key, "@")
		if ver == version && (pkg == mod || strings.HasPrefix(pkg, mod+"/")) && len(mod) > len(best) {
			best = mod
		}
	}
	return best, best != ""
}

// bash runs script in deploy/local with lib.sh's functions loaded (FERRY_ROOT and TOOLS_SUM from
// env when given) and returns its combined output and error.
func bash(env []string, script string) (string, error) {
	cmd := exec.Command("bash", "-c", ". ./lib.sh; "+script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func bashOut(t *testing.T, env []string, script string) string {
	t.Helper()
	out, err := bash(env, script)
	if err != nil {
		t.Fatalf("bash %q: %v\n%s", script, err, out)
	}
	return out
}

func cassandraVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("cassandra", "pom.xml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<cassandra.version>([^<]+)</cassandra.version>`).FindSubmatch(b)
	if m == nil {
		t.Fatal("cassandra/pom.xml: no <cassandra.version>")
	}
	return string(m[1])
}

// TestLockCoversEveryDownload: every tool tools.sh installs and the Cassandra jars have a line in
// tools.sum; the Go hashes agree with ferry's own go.sum where both list a module; and when the jars
// are already downloaded (.local/cassandra/lib), they are exactly the locked files.
func TestLockCoversEveryDownload(t *testing.T) {
	l := readLock(t, lockFile)

	goSum := map[string]string{}
	if b, err := os.ReadFile(filepath.Join("..", "..", "go.sum")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && !strings.HasSuffix(f[1], "/go.mod") {
				goSum[f[0]+"@"+f[1]] = f[2]
			}
		}
	}
	for name, pv := range goTools(t) {
		mod, ok := l.moduleOf(pv[0], pv[1])
		if !ok {
			t.Errorf("tools.sh installs %s (%s@%s): no `go MODULE %s h1:…` line in %s", name, pv[0], pv[1], pv[1], lockFile)
			continue
		}
		if s, ok := goSum[mod+"@"+pv[1]]; ok && s != l.mods[mod+"@"+pv[1]] {
			t.Errorf("%s@%s: %s says %s, go.sum says %s", mod, pv[1], lockFile, l.mods[mod+"@"+pv[1]], s)
		}
	}

	v := cassandraVersion(t)
	main := "cassandra-all-" + v + ".jar"
	if _, ok := l.jars[main]; !ok {
		t.Errorf("cassandra/pom.xml wants cassandra-all %s: %s has no line for %s", v, lockFile, main)
	} else if l.coord[main] != "org.apache.cassandra:cassandra-all:"+v {
		t.Errorf("%s: coordinates %s", main, l.coord[main])
	}

	lib := filepath.Join("..", "..", ".local", "cassandra", "lib")
	if _, err := os.Stat(filepath.Join(lib, main)); err != nil {
		t.Logf("no %s: the downloaded jars are not compared (run make tools)", filepath.Join(lib, main))
		return
	}
	if out, err := bash(nil, "verify_jars "+lib); err != nil {
		t.Errorf("the jars in .local/cassandra/lib are not the locked ones:\n%s", out)
	}
}

// TestVerifyRefusesCorruptFile runs lib.sh's verify_sha256 and verify_jars on temporary files: a
// file with its locked SHA-256 passes; a changed byte, a jar the lock does not list and a missing
// one are refused.
func TestVerifyRefusesCorruptFile(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "lib")
	if err := os.Mkdir(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(lib, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(content))
		return hex.EncodeToString(s[:])
	}
	a, b := write("a-1.0.jar", "first jar"), write("b-2.0.jar", "second jar")
	sum := filepath.Join(dir, "tools.sum")
	if err := os.WriteFile(sum, []byte("# test lock\njar "+a+" a-1.0.jar g:a:1.0\njar "+b+" b-2.0.jar g:b:2.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"TOOLS_SUM=" + sum}

	if out, err := bash(env, fmt.Sprintf("verify_sha256 %s %s", filepath.Join(lib, "a-1.0.jar"), a)); err != nil {
		t.Fatalf("verify_sha256 refused the right file: %v\n%s", err, out)
	}
	if out, err := bash(env, "verify_jars "+lib); err != nil {
		t.Fatalf("verify_jars refused the locked jars: %v\n%s", err, out)
	}

	write("b-2.0.jar", "second jaR") // one byte changed
	out, err := bash(env, fmt.Sprintf("verify_sha256 %s %s", filepath.Join(lib, "b-2.0.jar"), b))
	if err == nil || !strings.Contains(out, "b-2.0.jar") {
		t.Errorf("verify_sha256 accepted a corrupted file (err %v):\n%s", err, out)
	}
	out, err = bash(env, "verify_jars "+lib)
	if err == nil || !strings.Contains(out, "b-2.0.jar") {
		t.Errorf("verify_jars accepted a corrupted jar (err %v):\n%s", err, out)
	}

	write("b-2.0.jar", "second jar")
	write("evil-6.6.jar", "not locked")
	out, err = bash(env, "verify_jars "+lib)
	if err == nil || !strings.Contains(out, "evil-6.6.jar") {
		t.Errorf("verify_jars accepted a jar the lock does not list (err %v):\n%s", err, out)
	}

	os.Remove(filepath.Join(lib, "evil-6.6.jar"))
	os.Remove(filepath.Join(lib, "a-1.0.jar"))
	out, err = bash(env, "verify_jars "+lib)
	if err == nil || !strings.Contains(out, "a-1.0.jar") {
		t.Errorf("verify_jars accepted a missing jar (err %v):\n%s", err, out)
	}
}

// TestToolsScriptRefuses runs tools.sh itself in a scratch copy of the checkout (FERRY_ROOT), with
// this checkout's installed tools and jars linked in, so that nothing is downloaded: it passes as
// is, refuses a jar changed after it was verified, and refuses a tool module whose hash is not the
// locked one. Skipped until `make tools` has installed everything here.
func TestToolsScriptRefuses(t *testing.T) {
	dotLocal, err := filepath.Abs(filepath.Join("..", "..", ".local"))
	if err != nil {
		t.Fatal(err)
	}
	tools := goTools(t)
	for name := range tools {
		if _, err := os.Stat(filepath.Join(dotLocal, "bin", name)); err != nil {
			t.Skipf("%s not installed in .local/bin (make tools)", name)
		}
	}
	jars, _ := filepath.Glob(filepath.Join(dotLocal, "cassandra", "lib", "*.jar"))
	if len(jars) == 0 {
		t.Skip("no jars in .local/cassandra/lib (make tools)")
	}

	root := t.TempDir()
	dl := filepath.Join(root, "deploy", "local")
	copyFile := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"tools.sh", "lib.sh", "versions.sh", lockFile, filepath.Join("cassandra", "pom.xml")} {
		copyFile(f, filepath.Join(dl, f))
	}
	bin, lib := filepath.Join(root, ".local", "bin"), filepath.Join(root, ".local", "cassandra", "lib")
	for _, d := range []string{bin, lib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name := range tools {
		if err := os.Symlink(filepath.Join(dotLocal, "bin", name), filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range jars {
		if err := os.Symlink(j, filepath.Join(lib, filepath.Base(j))); err != nil {
			t.Fatal(err)
		}
	}
	run := func() (string, error) {
		cmd := exec.Command("bash", filepath.Join(dl, "tools.sh"))
		// GOPROXY=off: a check that wants a download fails instead of reaching the network.
		cmd.Env = append(os.Environ(), "FERRY_ROOT="+root, "GOPROXY=off", "PATH="+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	if out, err := run(); err != nil {
		t.Fatalf("tools.sh with the locked tools and jars failed: %v\n%s", err, out)
	}

	// A jar changed after tools.sh verified it: refused, not used.
	victim := filepath.Join(lib, "cassandra-all-"+cassandraVersion(t)+".jar")
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(victim)
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(victim, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run()
	if err == nil || !strings.Contains(out, filepath.Base(victim)) || !strings.Contains(out, "REFUSED") {
		t.Errorf("tools.sh accepted a corrupted %s (err %v):\n%s", filepath.Base(victim), err, out)
	}
	os.Remove(victim)
	if err := os.Symlink(filepath.Join(dotLocal, "cassandra", "lib", filepath.Base(victim)), victim); err != nil {
		t.Fatal(err)
	}

	// A tool whose module hash is not the locked one (here: the lock edited): refused before any
	// go install.
	l := readLock(t, lockFile)
	pv := tools["nats"]
	mod, ok := l.moduleOf(pv[0], pv[1])
	if !ok {
		t.Fatalf("no lock line for %s@%s", pv[0], pv[1])
	}
	good := l.mods[mod+"@"+pv[1]]
	lb, _ := os.ReadFile(lockFile)
	bad := strings.Replace(string(lb), good, "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1)
	if err := os.WriteFile(filepath.Join(dl, lockFile), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run()
	switch {
	case err == nil:
		t.Errorf("tools.sh accepted %s@%s against a lock that says another hash:\n%s", mod, pv[1], out)
	case strings.Contains(out, "module lookup disabled"):
		t.Logf("%s@%s is not in the module cache: the download check was not reached offline", mod, pv[1])
	case !strings.Contains(out, "REFUSED") || !strings.Contains(out, mod):
		t.Errorf("tools.sh failed, but not by refusing %s@%s:\n%s", mod, pv[1], out)
	}
	if fi, err := os.Lstat(filepath.Join(bin, "nats")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("tools.sh replaced or removed the installed nats after refusing")
	}
}
