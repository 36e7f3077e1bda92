//go:build integration

// Package e2e drives the ferry binary against the real local stack (nats-server, two Cassandra
// datacenters, versitygw; `make up`) and checks outcomes: bytes in S3, entries in the DLQ.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/tools/seed"
)

var (
	bin     string // the ferry binary under test
	natsURL = envOr("FERRY_NATS", "nats://127.0.0.1:4222")
	cfgPath string
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "ferry")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build ferry: %v\n%s", err, out)
		os.Exit(1)
	}
	cfgPath, _ = filepath.Abs(envOr("FERRY_CONFIG", "../deploy/local/ferry.yaml"))
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		os.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
		os.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	code := m.Run()
	if err := printReport(os.Stdout, testing.Verbose()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = max(code, 1)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// seeded is the key set written once per test run: every test reads from it.
var (
	seedOnce sync.Once
	seedKeys seed.Keys
	seedList string
	seedErr  error
)

const (
	seedNum      = 7
	seedAbsent   = 25
	seedFallback = 25
)

// seedSizes are the edge cases: empty, above the 1 MiB inline limit, above the 16 MiB multipart
// threshold.
var seedSizes = []int{0, 1_500_000, 17 << 20}

func seedCount() int {
	var n int
	if _, err := fmt.Sscan(envOr("FERRY_E2E_KEYS", "20000"), &n); err != nil || n < 100 {
		return 20000
	}
	return n
}

func seeded(t *testing.T) (seed.Keys, string) {
	t.Helper()
	seedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-seed-")
		if err != nil {
			seedErr = err
			return
		}
		seedList = filepath.Join(dir, "keys.txt")
		sizes := make([]string, len(seedSizes))
		for i, s := range seedSizes {
			sizes[i] = fmt.Sprint(s)
		}
		start := time.Now()
		cmd := exec.Command(bin, "--config", cfgPath, "seed", "--count", fmt.Sprint(seedCount()),
			"--absent", fmt.Sprint(seedAbsent), "--fallback", fmt.Sprint(seedFallback),
			"--sizes", strings.Join(sizes, ","), "--seed", fmt.Sprint(seedNum), "--keys-out", seedList)
		if out, err := cmd.CombinedOutput(); err != nil {
			seedErr = fmt.Errorf("ferry seed: %v\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "seeded %d keys in %s\n", seedCount(), time.Since(start).Round(time.Second))
		seedKeys = seed.PlanKeys(seedNum, seedCount(), seedFallback, seedAbsent, seedSizes)
	})
	if seedErr != nil {
		t.Fatal(seedErr)
	}
	return seedKeys, seedList
}

// harness is one job on the local NATS, with its own working folder.
type harness struct {
	t     *testing.T
	job   string
	dir   string
	names bus.Names
	js    jetstream.JetStream
	nc    *nats.Conn
	cfg   string // job file
}

func newHarness(t *testing.T, prefix string) *harness {
	t.Helper()
	h := &harness{t: t, job: fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e9), dir: t.TempDir(), cfg: cfgPath}
	h.names = bus.For(h.job)
	var err error
	if h.nc, h.js, err = bus.Connect(context.Background(), natsURL, "e2e"); err != nil {
		t.Fatalf("local stack not running? (make up): %v", err)
	}
	t.Cleanup(func() {
		if !t.Failed() { // keep a failed job's streams for `nats stream info`
			ctx := context.Background()
			for _, s := range []string{h.names.Keys, h.names.Blobs, h.names.Uploaded, h.names.Done, h.names.DLQ, h.names.Advisories} {
				_ = h.js.DeleteStream(ctx, s)
			}
			_ = h.js.DeleteKeyValue(ctx, h.names.KV)
			_ = h.js.DeleteObjectStore(ctx, h.names.Objects)
		}
		h.nc.Close()
	})
	return h
}

// proc is a ferry process of the harness.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func (h *harness) env() []string {
	return append(os.Environ(), "FERRY_JOB="+h.job, "FERRY_NATS="+natsURL, "FERRY_CONFIG="+h.cfg, "FERRY_PROGRESS=false")
}

// start runs `ferry args...` in the background; its output goes to name.log, shown on failure.
func (h *harness) start(name string, args ...string) *proc {
	h.t.Helper()
	p := &proc{log: filepath.Join(h.dir, name+".log"), done: make(chan error, 1)}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = h.env(), f, f
	if err := p.cmd.Start(); err != nil {
		h.t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait(); f.Close() }()
	h.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if h.t.Failed() {
			b, _ := os.ReadFile(p.log)
			h.t.Logf("--- %s log (last 3000 bytes):\n%s", name, tail(b, 3000))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// kill SIGKILLs the process: no drain, no acks.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and returns the exit error; a clean shutdown exits 0.
func (p *proc) stop(t *testing.T) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(60 * time.Second):
		t.Errorf("%s did not exit within 60s of SIGTERM", p.cmd.Args)
		p.kill()
		return fmt.Errorf("timeout")
	}
}

// run runs `ferry args...` to completion and returns its output.
func (h *harness) run(args ...string) string {
	h.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = h.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (h *harness) msgs(stream string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), stream)
	if err != nil {
		h.t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatalf("stream info %s: %v", stream, err)
	}
	return info.State.Msgs
}

func (h *harness) dead() deadletter.Counts {
	h.t.Helper()
	c, err := deadletter.Count(context.Background(), h.js, h.names)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) backlog() uint64 {
	return h.msgs(h.names.Keys) + h.msgs(h.names.Blobs) + h.msgs(h.names.Uploaded) + h.msgs(h.names.Advisories)
}

// waitUntil polls cond every 250 ms; it fails the test after timeout, describing what it waited for.
func (h *harness) waitUntil(timeout time.Duration, what func() string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %s waiting: %s", timeout, what())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// doneEntries reads DONE: the verified source keys, each with the read target that served it.
func (h *harness) doneEntries() (map[string]string, int) {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.js.Stream(ctx, h.names.Done)
	if err != nil {
		h.t.Fatal(err)
	}
	total := int(h.msgs(h.names.Done))
	out := make(map[string]string, total)
	if total == 0 {
		return out, 0
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		h.t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		h.t.Fatal(err)
	}
	defer it.Stop()
	for i := 0; i < total; i++ {
		m, err := it.Next()
		if err != nil {
			h.t.Fatalf("read DONE: %v", err)
		}
		out[string(m.Data())] = m.Headers().Get(bus.HdrSource)
	}
	return out, total
}

// checkS3 GETs the object of every key and compares it with the bytes the seed wrote.
func checkS3(t *testing.T, cfgFile string, keys []string) {
	t.Helper()
	job, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := keyrules.Compile(job.Keys)
	if err != nil {
		t.Fatal(err)
	}
	store, err := blobstore.New(context.Background(), job.Destination, 32)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		bad  []string
		work = make(chan string)
	)
	for range 32 {
		wg.Go(func() {
			for k := range work {
				s3Key, err := rules.Map(k)
				var body []byte
				if err == nil {
					body, err = store.Get(context.Background(), s3Key)
				}
				if err == nil && !bytes.Equal(body, seed.Content(k)) {
					err = fmt.Errorf("%d bytes differ from the %d seeded", len(body), seed.Size(k))
				}
				if err != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s: %v", k, err))
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d of %d objects wrong in S3, e.g. %s", len(bad), len(keys), strings.Join(bad[:min(5, len(bad))], "; "))
	}
}
