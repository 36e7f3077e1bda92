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

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// inputCase is one kind of bad line in a key list and what must become of it. docs/reliability.md
// has the same table.
type inputCase struct {
	name  string
	lines []string // raw lines, each with its line ending
	want  string   // outcomeVerified, outcomeSkipped, or the dead letter's "stage/reason"
}

const (
	outcomeSkipped = "skipped"
	aliasCase      = "two keys, one S3 key, same bytes (`_1` rule)"
)

// inputCases builds the corpus from seeded keys (k(i) is the i-th seeded key).
func inputCases(keys seed.Keys, job, absent string) []inputCase {
	k := func(i int) string { return keys.Main[i] }
	alias := strings.TrimSuffix(k(10), ".jpg") + "_1.jpg"
	custom := "/d/chaos-" + job + ".png"
	dup := make([]string, 1000)
	for i := range dup {
		dup[i] = k(9) + "\n"
	}
	return []inputCase{
		{name: "UTF-8 BOM before the first key", lines: []string{"\xef\xbb\xbf" + k(0) + "\n"}, want: outcomeVerified},
		{name: "empty line", lines: []string{"\n"}, want: outcomeSkipped},
		{name: "whitespace-only line", lines: []string{" \t  \n"}, want: outcomeSkipped},
		{name: "CRLF blank line", lines: []string{"\r\n"}, want: outcomeSkipped},
		{name: "CRLF line ending", lines: []string{k(1) + "\r\n"}, want: outcomeVerified},
		{name: "spaces and tabs around the key", lines: []string{"  \t" + k(2) + " \t \n"}, want: outcomeVerified},
		{name: "BOM in the middle of the file", lines: []string{"\xef\xbb\xbf" + k(3) + "\n"}, want: "fetcher/invalid_key"},
		{name: "invalid UTF-8", lines: []string{"t01\xff\xfe.jpg\n"}, want: "producer/invalid_key"},
		{name: "NUL byte", lines: []string{"t01\x00nul.jpg\n"}, want: "producer/invalid_key"},
		{name: "control character (ESC)", lines: []string{"t01\x1bx.jpg\n"}, want: "producer/invalid_key"},
		{name: "1 MB line", lines: []string{strings.Repeat("x", 1<<20) + "\n"}, want: "producer/invalid_key"},
		{name: "2,000-byte key (over 1 KiB)", lines: []string{strings.Repeat("y", 2000) + "\n"}, want: "producer/invalid_key"},
		{name: "1,024-byte key: S3 key over 1,024 bytes once prefixed", lines: []string{"t01" + strings.Repeat("z", 1017) + ".jpg\n"}, want: "fetcher/invalid_key"},
		{name: "`..` segment", lines: []string{"a/../" + k(4) + "\n"}, want: "fetcher/invalid_key"},
		{name: "`.` segment", lines: []string{"a/./" + k(5) + "\n"}, want: "fetcher/invalid_key"},
		{name: "`//` (empty segment)", lines: []string{"a//" + k(6) + "\n"}, want: "fetcher/invalid_key"},
		{name: "leading `/`", lines: []string{"/" + k(7) + "\n"}, want: "fetcher/invalid_key"},
		{name: "trailing `/`", lines: []string{k(8) + "/\n"}, want: "fetcher/invalid_key"},
		{name: "space inside the key", lines: []string{"t01 space.jpg\n"}, want: "fetcher/invalid_key"},
		{name: "non-ASCII key", lines: []string{"t01ünïcødé.jpg\n"}, want: "fetcher/invalid_key"},
		{name: "`/d/` custom key (rewritten to custom/)", lines: []string{custom + "\n"}, want: outcomeVerified},
		{name: "key in no read target", lines: []string{absent + "\n"}, want: "fetcher/not_found"},
		{name: "the same key 1,000 times", lines: dup, want: outcomeVerified},
		{name: aliasCase, lines: []string{k(10) + "\n", alias + "\n"}, want: outcomeVerified},
	}
}

// TestFaultInput (scenario 7, short): a key list full of bad lines goes through `ferry run`; each
// line ends as its case says (verified, skipped, deduplicated or dead-lettered with a reason), and
// nothing crashes or hangs.
func TestFaultInput(t *testing.T) { inputScenario(t, "7 bad input corpus (short)", 300, false) }

// TestChaosInput (scenario 7): the corpus among 3,000 good keys, and then a key whose S3 key
// collides with an already verified one but whose bytes differ.
func TestChaosInput(t *testing.T) {
	requireChaos(t)
	inputScenario(t, "7 bad input corpus", 3000, true)
}

func inputScenario(t *testing.T, scenario string, good int, collision bool) {
	keys, _ := seeded(t)
	r := newRig(t, scenario, "input", rigOptions{})
	cases := inputCases(keys, r.job, r.absentKeys(1)[0])
	// The source rows the cases need beyond the seed: the custom key, and the `_1` alias of k(10)
	// holding the same image.
	alias := strings.TrimSuffix(keys.Main[10], ".jpg") + "_1.jpg"
	custom := "/d/chaos-" + r.job + ".png"
	putBlobs(t, r.direct, map[string][]byte{custom: seed.Content(custom), alias: seed.Content(keys.Main[10])})

	var b strings.Builder
	want := map[string]string{}
	contents := map[string][]byte{alias: seed.Content(keys.Main[10])}
	line, lines, blank, dups := 0, 0, 0, 0
	add := func(c inputCase) {
		for i, l := range c.lines {
			line++
			b.WriteString(l)
			switch {
			case c.want == outcomeSkipped:
				blank++
			case i == 0 || c.name == aliasCase: // both alias lines are keys of their own
				want[strconv.Itoa(line)] = c.want
			default:
				dups++ // the broker drops it: its line must leave no trace
			}
		}
	}
	for _, c := range cases {
		add(c)
	}
	for i := 12; i < 12+good; i++ {
		add(inputCase{lines: []string{keys.Main[i] + "\n"}, want: outcomeVerified})
	}
	last := keys.Main[11]
	add(inputCase{lines: []string{last}, want: outcomeVerified}) // no final newline
	lines = line
	file := filepath.Join(r.dir, "keys.txt")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	out, code := r.runFerry(5*time.Minute, nil, "--nats", r.url, "run", "--keys", file,
		"--fetcher-concurrency", "16", "--uploader-concurrency", "16", "--verifier-concurrency", "16")
	if code != 0 || crashRE.MatchString(out) {
		t.Errorf("ferry run exit %d:\n%s", code, tail([]byte(out), 3000))
	}
	if i := strings.Index(out, "ferry run, job"); i >= 0 {
		t.Logf("%s", strings.TrimSpace(out[i:]))
	}
	r.reconcile(plan{
		want: want,
		idOf: entry.originLine,
		content: func(key string) []byte {
			if c, ok := contents[key]; ok {
				return c
			}
			return seed.Content(key)
		},
		note: fmt.Sprintf("%d lines: %d blank skipped, %d duplicate lines dropped by the broker", lines, blank, dups),
	})

	if !collision {
		return
	}
	// 7b: the `_1` alias of a verified key, holding different bytes. The uploader's conditional PUT
	// refuses to overwrite another source key's object: the first stays verified and intact, the
	// second is dead-lettered upload_error (the key rules need fixing).
	since := time.Now()
	first := keys.Main[12]
	second := strings.TrimSuffix(first, ".jpg") + "_1.jpg"
	putBlobs(t, r.direct, map[string][]byte{second: seed.Content(second)})
	file2 := r.writeKeys("collision.txt", []string{second})
	if out, code := r.runFerry(5*time.Minute, nil, "--nats", r.url, "run", "--keys", file2); code != 0 {
		t.Errorf("ferry run exit %d:\n%s", code, tail([]byte(out), 3000))
	}
	r.reconcile(plan{scenario: "7b two keys, one S3 key, different bytes", since: since, ignoreUnexpected: true,
		want: map[string]string{first: outcomeVerified, second: "uploader/upload_error"}})
}

// deleteBlobs removes source rows from the first read target's table of the job file.
func deleteBlobs(t *testing.T, cfgFile string, keys []string) {
	t.Helper()
	job, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	target := job.Source.Targets[0]
	s, err := cass.NewSession(context.Background(), target, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := fmt.Sprintf("DELETE FROM %s WHERE %s = ?", target.Table, target.KeyColumn)
	for _, k := range keys {
		if err := s.Query(q, k).Consistency(gocql.All).Exec(); err != nil {
			t.Fatalf("delete %s: %v", k, err)
		}
	}
}

// putBlobs writes source rows into the first read target's table of the job file.
func putBlobs(t *testing.T, cfgFile string, blobs map[string][]byte) {
	t.Helper()
	job, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	target := job.Source.Targets[0]
	s, err := cass.NewSession(context.Background(), target, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, ?)", target.Table, target.KeyColumn, target.BlobColumn)
	for k, b := range blobs {
		if err := s.Query(q, k, b).Consistency(gocql.All).Exec(); err != nil {
			t.Fatalf("write %s: %v", k, err)
		}
	}
}
