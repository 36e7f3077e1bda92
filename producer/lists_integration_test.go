//go:build integration

package producer

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/service"
)

// TestRunS3Lists publishes key lists stored in versitygw: a prefix pattern naming a plain and a
// gzip list, and a plain list resumed from a checkpoint with a ranged GET.
func TestRunS3Lists(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, _ := casstest.LocalJob(t)
	dest := job.Destination
	dest.Bucket = "ferry-test"
	s3, err := blobstore.New(ctx, dest, 4)
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("producer-lists/%d/", time.Now().UnixNano())
	put := func(name string, body []byte) string {
		t.Helper()
		sum := md5.Sum(body)
		if _, err := s3.Put(ctx, blobstore.PutInput{Key: prefix + name, Body: body, MD5: sum[:]}); err != nil {
			t.Fatalf("put %s (make up first): %v", name, err)
		}
		t.Cleanup(func() { _ = s3.Delete(context.Background(), prefix+name) })
		return "s3://ferry-test/" + prefix + name
	}
	lines := func(p string, n int) []byte {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%s-%04d\n", p, i)
		}
		return []byte(b.String())
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(lines("g", 250))
	zw.Close()
	put("a.txt", lines("a", 150))
	put("b.txt.gz", gz.Bytes())
	resumed := put("c.txt", lines("c", 100))

	tests := []struct {
		name   string
		keys   []string
		resume int64 // a checkpoint of c.txt at this line
		want   int64
	}{
		{"prefix pattern, plain and gzip", []string{"s3://ferry-test/" + prefix + "*"}, 0, 500},
		{"plain object resumed with a ranged GET", []string{resumed}, 60, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			env := &service.Env{Names: n, JS: js, Log: slog.Default()}
			env.SetJob(job)
			if tt.resume > 0 {
				kv, _ := js.KeyValue(ctx, n.KV)
				b, _ := json.Marshal(Checkpoint{Path: resumed, Offset: tt.resume * int64(len("c-0000\n")), Line: tt.resume})
				if _, err := kv.Put(ctx, checkpointKey(resumed), b); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{Keys: *cli.NewStringSlice(tt.keys...), Parallel: 2, InFlight: 64, HighWater: 1 << 40}
			st, err := Run(ctx, env, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if st.Published != tt.want {
				t.Errorf("published %d, want %d (%+v)", st.Published, tt.want, st)
			}
			if got := bustest.Msgs(t, js, n.Keys); got != uint64(tt.want) {
				t.Errorf("KEYS holds %d, want %d", got, tt.want)
			}
		})
	}
}
