//go:build integration

package cass_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// TestReaderWriteTime: the blob and its writetime come in one query; a custom query gives the
// writetime when its second column is writetime(blob), 0 (unknown) when it selects the blob
// alone, and a second column of another type fails NewReader (configuration, not every key).
func TestReaderWriteTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := loadJob(t).Source.Targets[0]
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
	key := seed.SizedKey(testSeed, 300, 0)
	// An explicit timestamp, so a rerun writes the same cell again (a DELETE first would leave a
	// newer tombstone that shadows it).
	ins := fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, ?) USING TIMESTAMP 12345", table, kc, bc)
	if err := ws.Query(ins, key, []byte("wt")).WithContext(ctx).Exec(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		query   string // "" for the table target
		want    int64
		wantErr string // NewReader fails with this
	}{
		{name: "table target", want: 12345},
		{name: "custom query with writetime", query: fmt.Sprintf("SELECT %s, writetime(%s) FROM %s WHERE %s = ?", bc, bc, table, kc), want: 12345},
		{name: "custom query without writetime", query: fmt.Sprintf("SELECT %s FROM %s WHERE %s = ?", bc, table, kc), want: 0},
		{name: "second column not a writetime", query: fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s = ?", bc, kc, table, kc), wantErr: "writetime"},
		{name: "three columns", query: fmt.Sprintf("SELECT %s, writetime(%s), %s FROM %s WHERE %s = ?", bc, bc, kc, table, kc), wantErr: "3 columns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := first
			target.Query = tc.query
			r, err := cass.NewReader(ctx, target, 2)
			if tc.wantErr != "" {
				if err == nil || cass.IsTransient(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NewReader = %v, want a permanent error naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			b, err := r.ReadBlob(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if string(b.Data) != "wt" || b.WriteTime != tc.want {
				t.Fatalf("ReadBlob = %q at %d, want %q at %d", b.Data, b.WriteTime, "wt", tc.want)
			}
		})
	}
}
