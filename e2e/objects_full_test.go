//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// largeSeed keeps this test's large blobs apart from the other tests' keys.
const largeSeed = 93001

// TestFaultObjectsFull (scenario 9b): a backlog of blobs above the inline limit, the object store
// capped at its minimum (16 MiB) with `ferry setup --objects-max-bytes`, and no uploader running.
// The fetcher must stop reading from Cassandra once the object store is nearly full (its reads
// stay flat through a hold of several ack waits), the object store must stay under its cap, and
// nothing may be dead-lettered; once an uploader starts, every key is verified with its bytes.
// Before the object store had a cap and a place in the fetcher's gate, every large blob of the
// backlog was read and parked in NATS.
func TestFaultObjectsFull(t *testing.T) {
	const (
		capBytes = 16 << 20
		size     = 1_500_000 // above the 1 MiB inline limit
		count    = 48        // 72 MB: four and a half caps
	)
	keys := make([]string, count)
	blobs := make([]any, 0, 2*count)
	for i := range keys {
		keys[i] = seed.SizedKey(largeSeed, i, size)
		blobs = append(blobs, keys[i], seed.Content(keys[i]))
	}
	writeRows(t, 0, "INSERT INTO %[1]s (%[2]s, %[3]s) VALUES (?, ?)", blobs...)

	r := newRig(t, "9b object store at its 16 MiB cap, uploader down", "objcap", rigOptions{})
	r.must("setup", "--objects-max-bytes", fmt.Sprint(capBytes), "--ack-wait", "10s", "--dedupe-window", "2m")
	metrics := freeAddr(t)
	c := r.crew()
	c.add("fetcher", 1, "--metrics-addr", metrics, "fetcher", "--concurrency", "8")
	c.add("verifier", 1, "verifier", "--concurrency", "4")
	c.add("producer", 1, "producer", "--keys", r.writeKeys("keys.txt", keys))
	reads := func() float64 { return scrape(metrics, "ferry_fetcher_reads_total") }

	var peak uint64
	sample := func() {
		if info, ok := r.streamInfo("OBJ_" + r.names.Objects); ok {
			peak = max(peak, info.State.Bytes)
			if info.State.Bytes > capBytes {
				t.Errorf("object store holds %d bytes, over its %d-byte cap", info.State.Bytes, capBytes)
			}
		}
	}
	r.waitFor(3*time.Minute, "the object store to fill to 70% of its cap", func() bool {
		c.tend()
		sample()
		return peak >= capBytes*7/10
	})
	// Hold for longer than several ack waits: the fetcher must not read on, and held keys must not
	// be redelivered or dropped.
	hold := time.Now()
	var early float64 = -1
	r.waitFor(2*time.Minute, "the hold", func() bool {
		c.tend()
		sample()
		if early < 0 && time.Since(hold) > 10*time.Second {
			early = reads()
		}
		return time.Since(hold) > 40*time.Second
	})
	late := reads()
	keysLeft, _ := r.msgs(r.names.Keys)
	blobsIn, _ := r.msgs(r.names.Blobs)
	if d, ok := r.dead(); !ok || d.Total() != 0 {
		t.Errorf("dead letters while the object store was full: %v", d)
	}
	if late < 0 || late >= count {
		t.Errorf("%.0f Cassandra reads for %d keys while nothing drained: the fetcher did not stop reading", late, count)
	}
	if late != early {
		t.Errorf("the fetcher read on while the object store was full: %.0f reads 10 s into the hold, %.0f at 40 s", early, late)
	}
	if keysLeft == 0 {
		t.Errorf("KEYS is empty while the object store is full: the fetcher did not hold back")
	}
	gated := false
	for _, m := range c.members {
		if b, err := os.ReadFile(m.svc.log); err == nil && strings.Contains(string(b), "object store nearly full, fetchers wait") {
			gated = true
		}
	}
	if !gated {
		t.Errorf("the fetcher did not log that it waits for the object store")
	}
	held := fmt.Sprintf("held %s: %.0f of %d keys read, object store peak %.1f of 16 MiB, BLOBS %d msgs, KEYS %d waiting",
		time.Since(hold).Round(time.Second), late, count, float64(peak)/(1<<20), blobsIn, keysLeft)
	t.Log(held)

	c.add("uploader", 1, "uploader", "--concurrency", "8")
	r.waitFor(10*time.Minute, "the pipeline to drain", func() bool {
		c.tend()
		sample()
		n, ok := r.backlog()
		return ok && n == 0 && c.producersDone()
	})
	c.settle(5 * time.Minute)
	if n := reads(); n != count {
		held += fmt.Sprintf("; %.0f reads in all", n)
	}
	c.stop()
	want := map[string]string{}
	for _, k := range keys {
		want[k] = outcomeVerified
	}
	r.reconcile(plan{want: want, note: held})
}

// writeRows runs cql (with %[1]s the table, %[2]s the key column, %[3]s the blob column of read
// target i of the local job file) once per group of its placeholders' values in args, at
// consistency ALL, so every DC holds the rows.
func writeRows(t *testing.T, target int, cql string, args ...any) {
	t.Helper()
	seeded(t) // the keyspace and tables, when this test runs alone
	job, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	tg := job.Source.Targets[target]
	q := fmt.Sprintf(cql, tg.Table, tg.KeyColumn, tg.BlobColumn)
	per := strings.Count(q, "?")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := cass.NewSession(ctx, tg, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i+per <= len(args); i += per {
		if err := s.Query(q, args[i:i+per]...).WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
			t.Fatalf("%s %v: %v", q, args[i], err)
		}
	}
}
