//go:build integration

package prune

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/casstest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/service"
)

const pruneRows = 300

// stack is a job on the local stack: a table of pruneRows keys (ferry_prune_test.keys), objects
// under a prefix of its own in ferry-test, and an in-process NATS with the job set up.
type stack struct {
	t       *testing.T
	url     string
	prefix  string
	jobFile string
	s3      *blobstore.Client
	wts     map[string]int64 // writetime of every source key
	keys    []string
}

func newStack(t *testing.T) *stack {
	t.Helper()
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
	}
	if os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ctx := context.Background()
	job, _ := casstest.LocalJob(t)
	tg := job.Source.Targets[0]
	tg.Table, tg.KeyColumn, tg.BlobColumn = "ferry_prune_test.keys", "key", "data"
	casstest.KeyTable(t, tg, tg.Table, pruneRows, func(i int) string { return fmt.Sprintf("prune/%04d.jpg", i) })
	st := &stack{t: t, wts: map[string]int64{}}
	sess, err := cass.NewSession(ctx, tg, 4)
	if err != nil {
		t.Fatal(err)
	}
	iter := sess.Query("SELECT key, writetime(data) FROM " + tg.Table).WithContext(ctx).Iter()
	var k string
	var wt int64
	for iter.Scan(&k, &wt) {
		st.wts[k] = wt
		st.keys = append(st.keys, k)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	sess.Close()
	slices.Sort(st.keys)

	endpoint := os.Getenv("FERRY_TEST_S3")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:7070"
	}
	st.prefix = fmt.Sprintf("prune-it/%d-%d/", time.Now().UnixNano(), rand.IntN(1e6))
	dest := config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: "ferry-test", PathStyle: true, Timeout: 30 * time.Second}
	if st.s3, err = blobstore.New(ctx, dest, 8); err != nil {
		t.Fatal(err)
	}
	if err := st.s3.Check(ctx); err != nil {
		t.Fatalf("s3 (make up first): %v", err)
	}
	t.Cleanup(func() {
		_ = st.s3.ListObjects(context.Background(), st.prefix, "", "", func(o blobstore.Object) error {
			return st.s3.Delete(context.Background(), o.Key)
		})
	})
	st.jobFile = st.writeJob(t, tg.Hosts[0], tg.LocalDC, "2s")
	st.url, _, _ = bustest.JobAt(t)
	return st
}

// writeJob writes a job file reading the test table through host.
func (st *stack) writeJob(t *testing.T, host, dc, timeout string) string {
	t.Helper()
	y := fmt.Sprintf(`source:
  targets:
    - name: dc1
      hosts: [%q]
      local_dc: %s
      table: ferry_prune_test.keys
      timeout: %s
      conn_timeout: 2s
destination:
  endpoint: %s
  region: us-east-1
  bucket: ferry-test
  path_style: true
keys:
  template: '%s{key}'
prune:
  consistency: LOCAL_QUORUM
manifest:
  prefix: '%sferry-manifests/'
`, host, dc, timeout, "http://127.0.0.1:7070", st.prefix, st.prefix)
	if e := os.Getenv("FERRY_TEST_S3"); e != "" {
		y = strings.Replace(y, "http://127.0.0.1:7070", e, 1)
	}
	p := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// put stores an object under the job's prefix with the writetime metadata wt (none if 0).
func (st *stack) put(key string, wt int64) {
	st.t.Helper()
	body := []byte("blob " + key)
	sum := md5.Sum(body)
	meta := map[string]string{blobstore.OwnerMeta: blobstore.OwnerValue(key)}
	if wt != 0 {
		meta[WriteTimeMeta] = strconv.FormatInt(wt, 10)
	}
	if _, err := st.s3.Put(context.Background(), blobstore.PutInput{Key: st.prefix + key, Body: body, MD5: sum[:], Metadata: meta}); err != nil {
		st.t.Fatalf("put %s: %v", key, err)
	}
}

func (st *stack) exists(key string) bool {
	_, err := st.s3.Inspect(context.Background(), st.prefix+key)
	if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		st.t.Fatal(err)
	}
	return err == nil
}

// prune runs `ferry prune` with args; it returns the --out folder and the error.
func (st *stack) prune(jobFile string, args ...string) (string, error) {
	out := st.t.TempDir()
	app := &cli.App{Name: "ferry", Flags: service.GlobalFlags(), Commands: []*cli.Command{Command()}}
	argv := append([]string{"ferry", "--nats", st.url, "--job", "t", "--config", jobFile, "prune", "--out", out,
		"--clock-skew", "0s", "--retries", "2", "--ranges", "16"}, args...)
	return out, app.RunContext(context.Background(), argv)
}

func fileLines(t *testing.T, dir, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out) // the candidates are written in the order their HEADs answered
	return out
}

func (st *stack) proof() Proof {
	st.t.Helper()
	ctx := context.Background()
	nc, js, err := connect(st.url)
	if err != nil {
		st.t.Fatal(err)
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, "FERRY_t")
	if err != nil {
		st.t.Fatal(err)
	}
	p, err := LoadProof(ctx, kv)
	if err != nil || p == nil {
		st.t.Fatalf("proof: %v, %v", p, err)
	}
	return *p
}

func (st *stack) records() []Record {
	st.t.Helper()
	nc, js, err := connect(st.url)
	if err != nil {
		st.t.Fatal(err)
	}
	defer nc.Close()
	var recs []Record
	if err := ReadPruned(context.Background(), js, names(), func(r Record) error {
		recs = append(recs, r)
		return nil
	}); err != nil {
		st.t.Fatal(err)
	}
	return recs
}

// TestIntegrationPrune: against the local Cassandra and versitygw, a dry run lists the extra
// objects and deletes nothing; over --max-delete nothing goes; --quarantine moves the extras and
// --delete deletes new ones, each recorded in PRUNED; a source that cannot be reached deletes
// nothing. The proof says what is missing, only in S3 and stale, and PROVEN at the end.
func TestIntegrationPrune(t *testing.T) {
	st := newStack(t)
	missing := st.keys[:2] // no object
	stale := st.keys[2]    // an object older than its row
	for _, k := range st.keys[3:] {
		st.put(k, st.wts[k])
	}
	st.put(stale, st.wts[stale]-1)
	extras := []string{"prune/gone-1.jpg", "prune/gone-2.jpg", "prune/gone-3.jpg"}
	for _, k := range extras {
		st.put(k, 1)
	}
	// A manifest segment under the job's listing prefix: ferry's own file, never a candidate.
	st.put("ferry-manifests/t/done/00000000000000000001.csv.gz", 0)
	time.Sleep(1100 * time.Millisecond) // LastModified has whole seconds: the extras must predate the scan

	t.Run("dry run", func(t *testing.T) {
		out, err := st.prune(st.jobFile)
		if err != nil {
			t.Fatal(err)
		}
		if got := fileLines(t, out, FileCandidates); !slices.Equal(got, prefixed(st.prefix, extras)) {
			t.Errorf("candidates %q, want %q", got, extras)
		}
		if got := fileLines(t, out, FileMissing); !slices.Equal(got, missing) {
			t.Errorf("missing %q, want %q", got, missing)
		}
		if b, _ := os.ReadFile(filepath.Join(out, FileForeign)); strings.Contains(string(b), "ferry-manifests/") {
			t.Errorf("a manifest segment was listed as another's object: %s", b)
		}
		if got := fileLines(t, out, FileStale); len(got) != 1 || !strings.HasPrefix(got[0], stale+"\t") {
			t.Errorf("stale %q, want %s", got, stale)
		}
		for _, k := range extras {
			if !st.exists(k) {
				t.Errorf("dry run deleted %s", k)
			}
		}
		p := st.proof()
		if p.Proven() || !p.DryRun || p.SourceKeys != pruneRows || p.Missing != 2 || p.OnlyInS3 != 3 || p.Stale != 1 || p.Consistency != "LOCAL_QUORUM" {
			t.Errorf("proof %+v", p)
		}
	})

	t.Run("over --max-delete", func(t *testing.T) {
		_, err := st.prune(st.jobFile, "--delete", "--max-delete", "2")
		if !errors.Is(err, ErrRefused) {
			t.Errorf("err %v, want refused", err)
		}
		_, err = st.prune(st.jobFile, "--delete") // 0.1% of 301 objects is 0
		if !errors.Is(err, ErrRefused) {
			t.Errorf("default --max-delete: err %v, want refused", err)
		}
		for _, k := range extras {
			if !st.exists(k) {
				t.Errorf("refused run deleted %s", k)
			}
		}
		if n := len(st.records()); n != 0 {
			t.Errorf("%d records after refused runs", n)
		}
	})

	t.Run("source unreachable", func(t *testing.T) {
		// A stopped port, and a "node" that accepts connections and never answers. (A scan that
		// fails part way is TestRunRefuses's "scan failed mid-way".) Not a real node with a tiny
		// timeout: that one answers in time now and then, and the run deletes for real.
		mute, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer mute.Close()
		go func() {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for {
				c, err := mute.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		for _, bad := range []string{st.writeJob(t, "127.0.0.1:1", "dc1", "2s"), st.writeJob(t, mute.Addr().String(), "dc1", "2s")} {
			_, err := st.prune(bad, "--delete", "--max-delete", "100%")
			t.Logf("refused: %v", err)
			if err == nil || !strings.Contains(err.Error(), "nothing deleted") {
				t.Errorf("err %v, want a refusal that says nothing was deleted", err)
			}
			for _, k := range extras {
				if !st.exists(k) {
					t.Errorf("run without a source deleted %s", k)
				}
			}
			if p := st.proof(); p.Complete || p.Error == "" || p.Proven() {
				t.Errorf("proof after an unreachable source: %+v", p)
			}
		}
	})

	t.Run("source lost mid-scan", func(t *testing.T) {
		ctx := context.Background()
		job, err := config.Load(st.jobFile)
		if err != nil {
			t.Fatal(err)
		}
		src, err := openSource(ctx, job, ScanConfig{Consistency: "LOCAL_QUORUM", Ranges: 16, Concurrency: 2, PageSize: 20, Retries: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		rows := 0
		lost := scanFunc(func(ctx context.Context, fn func(Row) error) error {
			return src.Scan(ctx, func(r Row) error {
				if rows++; rows == 50 { // the node goes away after 50 keys
					src.tables[0].session.Close()
				}
				return fn(r)
			})
		})
		rules, err := keyrules.Compile(job.Keys)
		if err != nil {
			t.Fatal(err)
		}
		rec := &fakeRecorder{}
		o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: st.prefix, Delete: true,
			MaxDelete: Threshold{Percent: 100, IsPercent: true}, Listers: 2, Workers: 2}
		res, err := Run(ctx, lost, bucketOf(st.s3), rules, rec, o)
		t.Logf("refused after %d rows: %v", rows, err)
		if err == nil || res != nil || !strings.Contains(err.Error(), "did not finish") {
			t.Errorf("result %+v, err %v; want a refusal", res, err)
		}
		for _, k := range extras {
			if !st.exists(k) {
				t.Errorf("a scan that lost its source deleted %s", k)
			}
		}
		if len(rec.recs) != 0 {
			t.Errorf("records %+v", rec.recs)
		}
	})

	t.Run("quarantine", func(t *testing.T) {
		// Outside the rules' prefix: one inside it is refused (a moved object could land on a
		// live key's object).
		if _, err := st.prune(st.jobFile, "--delete", "--quarantine", st.prefix+"quarantine/"); err == nil || !config.IsInvalid(err) {
			t.Errorf("--quarantine under the job's prefix: %v, want refused", err)
		}
		q := "prune-it-quarantine/" + strings.TrimPrefix(st.prefix, "prune-it/")
		t.Cleanup(func() {
			_ = st.s3.ListObjects(context.Background(), q, "", "", func(o blobstore.Object) error {
				return st.s3.Delete(context.Background(), o.Key)
			})
		})
		_, err := st.prune(st.jobFile, "--delete", "--max-delete", "3", "--quarantine", q)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range extras {
			_, qerr := st.s3.Inspect(context.Background(), q+st.prefix+k)
			if st.exists(k) || qerr != nil {
				t.Errorf("%s not moved under %s: %v", k, q, qerr)
			}
		}
		recs := st.records()
		if len(recs) != 3 {
			t.Fatalf("records %+v, want 3", recs)
		}
		for _, r := range recs {
			if r.Action != "quarantined:"+q+r.Object || r.Key != strings.TrimPrefix(r.Object, st.prefix) {
				t.Errorf("record %+v", r)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		st.put("prune/gone-4.jpg", 1)
		time.Sleep(1100 * time.Millisecond)
		out, err := st.prune(st.jobFile, "--delete", "--max-delete", "1")
		if err != nil {
			t.Fatal(err)
		}
		if got := fileLines(t, out, FileCandidates); !slices.Equal(got, []string{st.prefix + "prune/gone-4.jpg"}) {
			t.Errorf("candidates %q", got)
		}
		if st.exists("prune/gone-4.jpg") {
			t.Error("gone-4 not deleted")
		}
		recs := st.records()
		if last := recs[len(recs)-1]; len(recs) != 4 || last.Action != "deleted" || last.Object != st.prefix+"prune/gone-4.jpg" {
			t.Errorf("records %+v", recs)
		}
		if p := st.proof(); p.Deleted != 1 || p.Remaining() != 0 || p.Missing != 2 || p.Proven() {
			t.Errorf("proof %+v", p)
		}
	})

	t.Run("proven", func(t *testing.T) {
		for _, k := range missing {
			st.put(k, st.wts[k])
		}
		st.put(stale, st.wts[stale])
		time.Sleep(1100 * time.Millisecond)
		if _, err := st.prune(st.jobFile); err != nil {
			t.Fatal(err)
		}
		if p := st.proof(); !p.Proven() {
			t.Errorf("not proven: %s (%+v)", p.Why(), p)
		}
	})
}

// scanFunc is a Source made of a function.
type scanFunc func(ctx context.Context, fn func(Row) error) error

func (f scanFunc) Scan(ctx context.Context, fn func(Row) error) error { return f(ctx, fn) }

// Holds: no target holds any key the scan did not give.
func (f scanFunc) Holds(context.Context, string) (bool, error) { return false, nil }

func prefixed(p string, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = p + k
	}
	return out
}

func connect(url string) (*nats.Conn, jetstream.JetStream, error) {
	return bus.Connect(context.Background(), url, "test")
}

func names() bus.Names { return bus.For("t") }
