//go:build integration

package seed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/casstest"
)

func TestSeedCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	job, path := casstest.LocalJob(t)
	keysOut := filepath.Join(t.TempDir(), "keys.txt")
	const seed = 91002

	a := app()
	var out, progress bytes.Buffer
	a.Writer, a.ErrWriter = &out, &progress
	err := a.RunContext(ctx, []string{"ferry", "--config", path, "seed", "--count", "50", "--absent", "3",
		"--fallback", "3", "--sizes", "0,1048577", "--keys-out", keysOut, "--seed", "91002", "--concurrency", "8"})
	t.Log(progress.String() + out.String())
	if err != nil {
		t.Fatal(err)
	}

	lines := readLines(t, keysOut)
	if len(lines) != 50+2+3+3 {
		t.Errorf("%d lines in the key file, want 58", len(lines))
	}
	keys := PlanKeys(seed, 50, 3, 3, []int{0, 1048577})
	want := keys.All()
	for i := range want {
		if i >= len(lines) || lines[i] != want[i] {
			t.Fatalf("key file line %d = %q, want %q (the planned, shuffled list)", i+1, lines[i], want[i])
		}
	}

	// Read each table through the dc1 target, so a row present only in dc2 would not count.
	main := job.Source.Targets[0]
	old := job.Source.Targets[1]
	old.Hosts, old.LocalDC, old.Name = main.Hosts, main.LocalDC, "dc1-old"
	mainR, err := cass.NewReader(ctx, main, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer mainR.Close()
	oldR, err := cass.NewReader(ctx, old, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer oldR.Close()

	check := func(r *cass.Reader, key string, present bool) {
		t.Helper()
		b, err := r.Read(ctx, key)
		switch {
		case present && err != nil:
			t.Errorf("%s in %s: %v", key, r.Name(), err)
		case present && !Matches(key, b):
			t.Errorf("%s in %s: %d bytes that are not the seeded %d", key, r.Name(), len(b), Size(key))
		case !present && !errors.Is(err, cass.ErrNotFound):
			t.Errorf("%s in %s: err = %v, want not found", key, r.Name(), err)
		}
	}
	for _, k := range keys.Fallback {
		check(oldR, k, true)
		check(mainR, k, false)
	}
	for _, k := range keys.Main {
		check(mainR, k, true)
	}
	for _, k := range keys.Main[:5] {
		check(oldR, k, false)
	}
	for _, k := range keys.Absent {
		check(mainR, k, false)
		check(oldR, k, false)
	}
	if !strings.Contains(out.String(), "seeded 52 blobs") {
		t.Errorf("summary %q", out.String())
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}
