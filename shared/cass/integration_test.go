//go:build integration

// This test lives in package cass_test rather than cass: it seeds through package seed, which
// imports cass, and an internal test importing seed would be an import cycle.
package cass_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// testSeed keeps this test's keys apart from the demo's (seed 1).
const testSeed = 91001

func loadJob(t *testing.T) *config.Job {
	t.Helper()
	job, path := casstest.LocalJob(t)
	if len(job.Source.Targets) < 2 {
		t.Fatalf("%s: want two read targets (one per DC)", path)
	}
	return job
}

// targets are a reader per DC on the same table: the job's first target, and the second target's
// hosts and DC pointed at the first target's table.
func targets(job *config.Job) (dc1, dc2 config.Target) {
	dc1 = job.Source.Targets[0]
	dc2 = job.Source.Targets[1]
	dc2.Name += "-same-table"
	dc2.Table, dc2.KeyColumn, dc2.BlobColumn, dc2.Query = dc1.Table, dc1.KeyColumn, dc1.BlobColumn, dc1.Query
	return dc1, dc2
}

func TestReaderBothDCs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	job := loadJob(t)

	// 17 MiB is past Cassandra's default 16 MiB frame and mutation limits: the local stack raises
	// them, and this shows the driver reads such a blob whole.
	cfg := seed.Config{Count: 5, Sizes: "0,3145728,17825792", KeysOut: filepath.Join(t.TempDir(), "keys.txt"),
		Concurrency: 4, Consistency: "ALL", Replication: "dc1:1,dc2:1", Seed: testSeed}
	if _, err := seed.Write(ctx, job, cfg, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	keys := seed.PlanKeys(testSeed, 5, 0, 0, []int{0, 3145728, 17825792}).Main

	dc1, dc2 := targets(job)
	for _, target := range []config.Target{dc1, dc2} {
		t.Run(target.Name, func(t *testing.T) {
			r, err := cass.NewReader(ctx, target, 8)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Name() != target.Name {
				t.Errorf("Name() = %q", r.Name())
			}
			for _, key := range keys {
				b, err := r.Read(ctx, key)
				if err != nil {
					t.Fatalf("read %s: %v", key, err)
				}
				if b == nil {
					t.Errorf("%s: nil blob; a 0-byte blob must read as an empty slice", key)
				}
				if !seed.Matches(key, b) {
					t.Errorf("%s: %d bytes that are not the seeded %d", key, len(b), seed.Size(key))
				}
			}
			missing := seed.AbsentKey(testSeed, 0)
			_, err = r.Read(ctx, missing)
			if !errors.Is(err, cass.ErrNotFound) || !strings.Contains(err.Error(), missing) {
				t.Errorf("missing key: err = %v, want ErrNotFound naming the key", err)
			}
			if cass.IsTransient(err) {
				t.Error("not found classified as transient")
			}
		})
	}
}

// TestSessionStaysInDC checks the host filter: every query of a dc2 session is coordinated by a
// dc2 node, even though the dc1 node is up and known to the driver.
func TestSessionStaysInDC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, dc2 := targets(loadJob(t))
	s, err := cass.NewSession(ctx, dc2, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 20 {
		var dc string
		if err := s.Query("SELECT data_center FROM system.local").WithContext(ctx).Scan(&dc); err != nil {
			t.Fatal(err)
		}
		if dc != dc2.LocalDC {
			t.Fatalf("query served by a node in %s, want %s", dc, dc2.LocalDC)
		}
	}
}

func TestNewReaderBadConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc1, _ := targets(loadJob(t))

	noTable := dc1
	noTable.Table = "ferry_demo.no_such_table"
	_, err := cass.NewReader(ctx, noTable, 1)
	t.Log(err)
	if err == nil || cass.IsTransient(err) || !strings.Contains(err.Error(), dc1.Name) {
		t.Errorf("missing table: err = %v, want a permanent error naming the target", err)
	}

	wrongDC := dc1
	wrongDC.LocalDC = "dc9"
	_, err = cass.NewReader(ctx, wrongDC, 1)
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "local_dc dc9") {
		t.Errorf("unknown DC: err = %v, want an error naming local_dc", err)
	}
}

// TestReaderNullBlob: a row whose blob is NULL (written as null, or never written) is "not found
// at this target", so the fetcher asks the next target and dead-letters not_found when none has
// it; a blob of 0 bytes is a real, empty blob. Rows are written to dc1's table only.
func TestReaderNullBlob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job := loadJob(t)
	first := job.Source.Targets[0]
	wc, err := cass.ClusterConfig(first, 1)
	if err != nil {
		t.Fatal(err)
	}
	wc.HostFilter, wc.Consistency = nil, gocql.All
	ws, err := cass.Open(ctx, first, wc)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	table, kc, bc := first.Table, first.KeyColumn, first.BlobColumn
	tests := []struct {
		name     string
		cql      string // writes the key's row; "" writes nothing
		args     []any  // after the key
		want     []byte // nil: ErrNotFound
		notFound bool
	}{
		{name: "null blob", cql: fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, null)", table, kc, bc), notFound: true},
		{name: "blob column never written", cql: fmt.Sprintf("INSERT INTO %s (%s) VALUES (?)", table, kc), notFound: true},
		{name: "blob deleted", cql: fmt.Sprintf("DELETE %s FROM %s WHERE %s = ?", bc, table, kc), notFound: true},
		{name: "0-byte blob", cql: fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, ?)", table, kc, bc), args: []any{[]byte{}}, want: []byte{}},
		{name: "3-byte blob", cql: fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, ?)", table, kc, bc), args: []any{[]byte("abc")}, want: []byte("abc")},
		{name: "no row", notFound: true},
	}
	r, err := cass.NewReader(ctx, first, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := seed.SizedKey(testSeed, 200+i, 0)
			// A fresh row each run: drop what an earlier run wrote.
			if err := ws.Query(fmt.Sprintf("DELETE FROM %s WHERE %s = ?", table, kc), key).WithContext(ctx).Exec(); err != nil {
				t.Fatal(err)
			}
			if tc.cql != "" {
				if err := ws.Query(tc.cql, append([]any{key}, tc.args...)...).WithContext(ctx).Exec(); err != nil {
					t.Fatal(err)
				}
			}
			b, err := r.Read(ctx, key)
			if tc.notFound {
				if !errors.Is(err, cass.ErrNotFound) || !strings.Contains(err.Error(), key) {
					t.Fatalf("Read = %d bytes (nil %v), %v; want ErrNotFound naming the key", len(b), b == nil, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b == nil || !bytes.Equal(b, tc.want) {
				t.Fatalf("Read = %q (nil %v), want %q (non-nil)", b, b == nil, tc.want)
			}
		})
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
