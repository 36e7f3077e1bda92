//go:build integration

package cass_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

// TestKeyScan reads a table whole by token ranges, with each blob's writetime, at LOCAL_QUORUM;
// a table that does not exist fails at once, without retries.
func TestKeyScan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, _ := casstest.LocalJob(t)
	tg := job.Source.Targets[0]
	tg.Table, tg.KeyColumn, tg.BlobColumn, tg.Consistency = "ferry_keyscan_test.keys", "key", "data", "LOCAL_QUORUM"
	tokens := casstest.KeyTable(t, tg, tg.Table, 1000, func(i int) string { return fmt.Sprintf("ks/%04d", i) })
	s, err := cass.NewSession(ctx, tg, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ring, err := cass.RingTokens(ctx, s)
	if err != nil || len(ring) == 0 {
		t.Fatalf("RingTokens: %v, %v", ring, err)
	}
	if name, err := cass.ClusterName(ctx, s); err != nil || name == "" {
		t.Errorf("ClusterName: %q, %v", name, err)
	}
	// Eight ranges covering the ring.
	var ranges []checkpoint.Range
	step := uint64(math.MaxUint64 / 8)
	start := int64(math.MinInt64)
	for i := range 8 {
		end := int64(uint64(start) + step)
		if i == 7 {
			end = math.MaxInt64
		}
		ranges = append(ranges, checkpoint.Range{Start: start, End: end})
		start = end
	}
	ks := cass.KeyScan{Session: s, Table: tg.Table, KeyColumn: "key", BlobColumn: "data", Ranges: ranges, Concurrency: 3, PageSize: 37}
	seen := map[string]int{}
	before := time.Now().Add(time.Hour).UnixMicro()
	st, err := ks.Run(ctx, func(r cass.KeyRow) error {
		seen[string(r.Key)]++
		if r.Null || r.WriteTime <= 0 || r.WriteTime > before || tokens[string(r.Key)] != r.Token {
			t.Errorf("row %q: %+v", r.Key, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(tokens) || st.Rows != int64(len(tokens)) {
		t.Errorf("read %d keys (%d rows), want %d once each", len(seen), st.Rows, len(tokens))
	}

	ks.Table = "ferry_keyscan_test.nosuchtable"
	began := time.Now()
	if _, err := ks.Run(ctx, func(cass.KeyRow) error { return nil }); err == nil || !strings.Contains(err.Error(), "nosuchtable") {
		t.Errorf("scan of a missing table: %v", err)
	}
	if time.Since(began) > 5*time.Second {
		t.Errorf("a missing table was retried (%s)", time.Since(began))
	}
}
