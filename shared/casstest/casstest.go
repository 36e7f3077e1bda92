// Package casstest gives integration tests the local stack's job file and a small table of keys
// on the local Cassandra.
package casstest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
)

// KeyTable makes sure table (keyspace.table, replicated to dc1 and dc2) holds exactly the keys
// key(0..n-1) with 100-byte blobs, writing them once (later runs reuse the table), and returns
// every key's token. t is the read target to connect with.
func KeyTable(tb testing.TB, t config.Target, table string, n int, key func(int) string) map[string]int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cass.ClusterConfig(t, 32)
	if err != nil {
		tb.Fatal(err)
	}
	c.Timeout = 30 * time.Second
	s, err := cass.Open(ctx, t, c)
	if err != nil {
		tb.Fatalf("cassandra (make up first): %v", err)
	}
	defer s.Close()
	ks, _, _ := strings.Cut(table, ".")
	for _, q := range []string{
		fmt.Sprintf(`CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1, 'dc2': 1}`, ks),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (key text PRIMARY KEY, data blob)`, table),
	} {
		if err := s.Query(q).WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
	tokens := readTokens(ctx, tb, s, table)
	if len(tokens) != n {
		var wg sync.WaitGroup
		var once sync.Once
		var fillErr error
		sem := make(chan struct{}, 32)
		data := make([]byte, 100)
		ins := fmt.Sprintf(`INSERT INTO %s (key, data) VALUES (?, ?)`, table)
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := s.Query(ins, key(i), data).WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
					once.Do(func() { fillErr = err })
				}
			})
		}
		wg.Wait()
		if fillErr != nil {
			tb.Fatalf("fill %s: %v", table, fillErr)
		}
		tokens = readTokens(ctx, tb, s, table)
	}
	if len(tokens) != n {
		tb.Fatalf("%s holds %d rows, want %d (drop it to refill)", table, len(tokens), n)
	}
	return tokens
}

func readTokens(ctx context.Context, tb testing.TB, s *gocql.Session, table string) map[string]int64 {
	tb.Helper()
	out := map[string]int64{}
	iter := s.Query(fmt.Sprintf(`SELECT token(key), key FROM %s`, table)).WithContext(ctx).PageSize(5000).Iter()
	var tok int64
	var key string
	for iter.Scan(&tok, &key) {
		out[key] = tok
	}
	if err := iter.Close(); err != nil {
		tb.Fatalf("read %s: %v", table, err)
	}
	return out
}

// Covered counts the keys whose token lies in a range (start, end] at or below that range's
// checkpoint last[i]: the keys a scan's checkpoints say are published.
func Covered(tokens map[string]int64, starts, ends, last []int64) int {
	n := 0
	for _, tok := range tokens {
		for i := range starts {
			if tok > starts[i] && tok <= ends[i] && tok <= last[i] {
				n++
				break
			}
		}
	}
	return n
}

// LocalJob loads the job file of the local stack, $FERRY_CONFIG, else deploy/local/ferry.yaml
// of the module the test runs in, and says its path.
func LocalJob(tb testing.TB) (*config.Job, string) {
	tb.Helper()
	path := os.Getenv("FERRY_CONFIG")
	if path == "" {
		dir, err := os.Getwd()
		if err != nil {
			tb.Fatal(err)
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				tb.Fatal("no go.mod above the test's folder: set FERRY_CONFIG")
			}
			dir = parent
		}
		path = filepath.Join(dir, "deploy/local/ferry.yaml")
	}
	job, err := config.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	return job, path
}
