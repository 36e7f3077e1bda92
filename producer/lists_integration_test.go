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
	"github.com/ferry-migrate/ferry/shared/checkpoint"
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
				b, _ := json.Marshal(checkpoint.List{Path: resumed, Offset: tt.resume * int64(len("c-0000\n")), Line: tt.resume})
				if _, err := kv.Put(ctx, checkpoint.ListKey(resumed), b); err != nil {
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

// TestRunS3ListChanged: an S3 key list replaced since its checkpoint (another ETag) is resumed
// only when its bytes already published are unchanged, as a local one is.
func TestRunS3ListChanged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, _ := casstest.LocalJob(t)
	dest := job.Destination
	dest.Bucket = "ferry-test"
	s3, err := blobstore.New(ctx, dest, 4)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		kind          string // "", "gz", "zst"
		first, second string
		interrupted   bool
		wantNew       []string
		wantErr       bool
	}{
		{"a finished list replaced by a longer one publishes the new lines", "", "a\nb\n", "a\nb\nc\n", false, []string{"c"}, false},
		{"a finished list left alone is skipped", "", "a\nb\n", "", false, nil, false},
		{"a finished list whose lines changed is refused", "", "a\nb\n", "a\nB\n", false, nil, true},
		{"an interrupted list regenerated with other lines is refused", "", "key-1\nkey-2\n", "k-1\nkey-22\nkey-3\n", true, nil, true},
		{"an interrupted list that grew resumes with a ranged GET", "", "a\nb\n", "a\nb\nc\nd\n", true, []string{"c", "d"}, false},
		{"a gzip list recompressed with more lines publishes the new ones", "gz", "a\nb\n", "a\nb\nc\n", false, []string{"c"}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("producer-lists/%d/changed-%d.txt", time.Now().UnixNano(), i)
			name := "s3://ferry-test/" + key
			put := func(body []byte) {
				t.Helper()
				sum := md5.Sum(body)
				if _, err := s3.Put(ctx, blobstore.PutInput{Key: key, Body: body, MD5: sum[:]}); err != nil {
					t.Fatalf("put %s (make up first): %v", key, err)
				}
			}
			t.Cleanup(func() { _ = s3.Delete(context.Background(), key) })
			put(compress(t, tt.kind, tt.first))
			js, n := bustest.Job(t)
			env := &service.Env{Names: n, JS: js, Log: slog.Default()}
			env.SetJob(job)
			cfg := Config{Keys: *cli.NewStringSlice(name), Parallel: 1, InFlight: 4, HighWater: 1 << 40}
			if _, err := Run(ctx, env, cfg); err != nil {
				t.Fatal(err)
			}
			kv, _ := js.KeyValue(ctx, n.KV)
			var cp checkpoint.List
			if e, err := kv.Get(ctx, checkpoint.ListKey(name)); err != nil || json.Unmarshal(e.Value(), &cp) != nil || cp.ETag == "" || cp.SHA256 == "" {
				t.Fatalf("checkpoint %+v, %v; want the object's ETag and the list's hash", cp, err)
			}
			if tt.interrupted {
				interrupt(t, kv, checkpoint.ListKey(name))
			}
			if tt.second != "" {
				if err := s3.Delete(ctx, key); err != nil { // a new object, as a regenerated list is
					t.Fatal(err)
				}
				put(compress(t, tt.kind, tt.second))
			}
			published := len(keysIn(t, js, n.Keys))
			st, err := Run(ctx, env, cfg)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "--restart") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("second run = %+v, %v; want one line refusing the changed list and naming --restart", st, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("second run: %v", err)
			}
			got := keysIn(t, js, n.Keys)[published:]
			if strings.Join(got, ",") != strings.Join(tt.wantNew, ",") || st.Published != int64(len(tt.wantNew)) {
				t.Errorf("second run published %q (%+v), want %q", got, st, tt.wantNew)
			}
			if st, err := Run(ctx, env, cfg); err != nil || st.Published != 0 || st.SkippedFiles != 1 {
				t.Errorf("third run = %+v, %v; want the list skipped", st, err)
			}
		})
	}
}
