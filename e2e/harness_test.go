//go:build integration

// Package e2e drives the ferry binary against the real local stack (nats-server, two Cassandra
// datacenters, versitygw; `make up`) and checks outcomes: bytes in S3, entries in the DLQ.
//
// One harness serves every test (this file): TestMain builds ferry and prints the reliability
// table at the end; seeded writes the shared key set once; newRig makes a job (its streams, job
// files, an optional fault proxy in front of S3), starts ferry processes one by one or as a crew
// that is restarted when it dies, watches and waits on the streams, reads them back and
// reconciles every input against DONE, the DLQ and the bytes in S3.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/tools/seed"
	"github.com/ferry-migrate/ferry/tools/status"
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

// ---- ferry processes ----

// svc is one ferry process of a scenario.
type svc struct {
	name, log string
	cmd       *exec.Cmd
	exited    chan struct{}
	err       error // valid once exited is closed
}

func (s *svc) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the process: no drain, no acks.
func (s *svc) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// errStopTimeout: a process did not exit within its time after SIGTERM (it was killed).
var errStopTimeout = errors.New("no exit after SIGTERM")

// stop sends SIGTERM and waits up to timeout; a clean shutdown returns nil, a process still
// running after timeout is killed and errStopTimeout returned.
func (s *svc) stop(timeout time.Duration) error {
	if !s.alive() {
		return s.err
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.err
	case <-time.After(timeout):
		s.kill()
		return fmt.Errorf("%s: %w within %s", s.name, errStopTimeout, timeout)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// ---- the harness: one job, its job files, its processes ----

type rigOptions struct {
	// plain runs the job with the stack's job file as it is ($FERRY_CONFIG): S3 keys without the
	// job's prefix, no fault proxy; faults, noProxy and edit do not apply.
	plain   bool
	nats    string            // NATS URL(s); default the local stack's
	faults  faultRates        // S3 faults of the proxy; nil: none (it only counts writes)
	noProxy bool              // services talk to S3 directly
	edit    func(*config.Job) // changes to the job file
	env     []string          // extra environment of every service
	connect []nats.Option     // authentication and TLS of the rig's own connection
}

// rig is the e2e harness: one job on the local NATS with its own working folder, job files, ferry
// processes (one by one or as a crew), its streams read back and reconciled.
type rig struct {
	t        *testing.T
	scenario string // its row in the reliability table; "": none
	job      string
	dir      string
	url      string
	names    bus.Names
	nc       *nats.Conn
	js       jetstream.JetStream
	cfg      string     // the job file of the services (S3 through the proxy)
	direct   string     // the same job with S3 directly, for checking
	jobCfg   config.Job // the direct job
	proxy    *faultProxy
	env      []string
	began    time.Time
	rows     []*row // the rows this rig added to the report

	mu     sync.Mutex
	procs  []*svc
	seq    int
	s3Keys []string // objects to delete when the scenario passed
}

// newRig makes a job with its own S3 key prefix (chaos/<job>/...), so every object it checks was
// written by this job, and its job file pointing at a fault proxy in front of S3; with o.plain, a
// job on the stack's job file. A scenario (not "") is a row of the reliability table.
func newRig(t *testing.T, scenario, prefix string, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, scenario: scenario, job: fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e9),
		dir: t.TempDir(), url: o.nats, env: o.env, began: time.Now()}
	if r.url == "" {
		r.url = natsURL
	}
	r.names = bus.For(r.job)
	job, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if o.plain {
		r.jobCfg, r.direct, r.cfg = *job, cfgPath, cfgPath
		r.connect(o)
		return r
	}
	job.Keys.Template = "chaos/" + r.job + "/" + job.Keys.Template
	if o.edit != nil {
		o.edit(job)
	}
	r.jobCfg = *job
	r.direct = r.writeJob("direct.yaml", job)
	r.cfg = r.direct
	if !o.noProxy {
		r.proxy = newFaultProxy(t, job.Destination.Endpoint, job.Destination.Bucket, o.faults)
		viaProxy := *job
		viaProxy.Destination.Endpoint = r.proxy.URL
		r.cfg = r.writeJob("ferry.yaml", &viaProxy)
	}
	r.connect(o)
	return r
}

func (r *rig) connect(o rigOptions) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if r.nc, r.js, err = bus.Connect(ctx, r.url, "e2e", o.connect...); err != nil {
		r.t.Fatalf("NATS %s not running? (make up): %v", r.url, err)
	}
	r.t.Cleanup(r.cleanup)
}

// rewriteJob changes the job files in place (the fix of a broken configuration); services started
// afterwards read the new one.
func (r *rig) rewriteJob(edit func(*config.Job)) {
	r.t.Helper()
	edit(&r.jobCfg)
	r.writeJob("direct.yaml", &r.jobCfg)
	if r.proxy != nil {
		viaProxy := r.jobCfg
		viaProxy.Destination.Endpoint = r.proxy.URL
		r.writeJob("ferry.yaml", &viaProxy)
	}
}

func (r *rig) writeJob(name string, job *config.Job) string {
	r.t.Helper()
	b, err := yaml.Marshal(job)
	if err != nil {
		r.t.Fatal(err)
	}
	path := filepath.Join(r.dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		r.t.Fatal(err)
	}
	if _, err := config.Load(path); err != nil {
		r.t.Fatalf("job file %s does not load back: %v\n%s", path, err, b)
	}
	return path
}

func (r *rig) cleanup() {
	t := r.t
	r.mu.Lock()
	procs := append([]*svc(nil), r.procs...)
	r.mu.Unlock()
	for _, p := range procs {
		if p.alive() {
			p.kill()
		}
	}
	if r.scenario != "" && len(r.rows) == 0 && !t.Skipped() { // failed before it could reconcile
		r.addRow(&row{scenario: r.scenario, dupPUTs: "n/a", wall: time.Since(r.began), result: "FAIL", note: "did not finish"})
	}
	if t.Failed() && len(r.rows) > 0 {
		failed := false
		for _, rw := range r.rows {
			failed = failed || rw.result != "pass"
		}
		if last := r.rows[len(r.rows)-1]; !failed {
			last.result, last.note = "FAIL", joinNote(last.note, "test failed, see its log")
		}
	}
	if t.Failed() {
		for _, p := range procs {
			b, _ := os.ReadFile(p.log)
			t.Logf("--- %s log (last 3000 bytes):\n%s", p.name, tail(b, 3000))
		}
		t.Logf("job %s kept for inspection: nats stream ls | grep %s", r.job, r.job)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_ = bus.Delete(ctx, r.js, r.names)
		r.deleteObjects(ctx)
	}
	r.nc.Close()
}

// deleteObjects removes the job's objects from S3 (they all live under its own prefix).
func (r *rig) deleteObjects(ctx context.Context) {
	if len(r.s3Keys) == 0 {
		return
	}
	store, err := blobstore.New(ctx, r.jobCfg.Destination, 16)
	if err != nil {
		return
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for k := range work {
				_ = store.Delete(ctx, k)
			}
		})
	}
	for _, k := range r.s3Keys {
		work <- k
	}
	close(work)
	wg.Wait()
}

func (r *rig) environ(extra ...string) []string {
	env := append(os.Environ(), "FERRY_JOB="+r.job, "FERRY_NATS="+r.url, "FERRY_CONFIG="+r.cfg, "FERRY_PROGRESS=false")
	env = append(env, r.env...)
	return append(env, extra...)
}

// startEnv runs `ferry args...` in the background with extra environment; output in role-N.log.
func (r *rig) startEnv(role string, extra []string, args ...string) *svc {
	r.t.Helper()
	r.mu.Lock()
	r.seq++
	name := fmt.Sprintf("%s-%d", role, r.seq)
	r.mu.Unlock()
	s := &svc{name: name, log: filepath.Join(r.dir, name+".log"), exited: make(chan struct{})}
	f, err := os.Create(s.log)
	if err != nil {
		r.t.Fatal(err)
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env, s.cmd.Stdout, s.cmd.Stderr = r.environ(extra...), f, f
	if err := s.cmd.Start(); err != nil {
		r.t.Fatalf("start %s: %v", name, err)
	}
	go func() { s.err = s.cmd.Wait(); f.Close(); close(s.exited) }()
	r.mu.Lock()
	r.procs = append(r.procs, s)
	r.mu.Unlock()
	return s
}

func (r *rig) start(role string, args ...string) *svc { return r.startEnv(role, nil, args...) }

// runFerry runs `ferry args...` to its end (at most timeout: a hang fails the test) and returns
// its combined output and exit code.
func (r *rig) runFerry(timeout time.Duration, extra []string, args ...string) (string, int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = r.environ(extra...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		r.t.Fatalf("ferry %s hung: no exit within %s\n%s", strings.Join(args, " "), timeout, tail(out, 3000))
	}
	return string(out), exitCode(err)
}

// must runs `ferry args...` and fails the test unless it exits 0 (within 10 minutes).
func (r *rig) must(args ...string) string {
	r.t.Helper()
	out, code := r.runFerry(10*time.Minute, nil, args...)
	if code != 0 {
		r.t.Fatalf("ferry %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// writeKeys writes a key list file.
func (r *rig) writeKeys(name string, keys []string) string {
	r.t.Helper()
	path := filepath.Join(r.dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(keys, "\n")+"\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// ---- watching the job ----

// mustMsgs, mustDead and mustBacklog are msgs, dead and backlog for a broker that must answer:
// they fail the test when it does not.

func (r *rig) mustMsgs(stream string) uint64 {
	r.t.Helper()
	n, ok := r.msgs(stream)
	if !ok {
		r.t.Fatalf("stream %s: no answer", stream)
	}
	return n
}

func (r *rig) mustDead() deadletter.Counts {
	r.t.Helper()
	c, ok := r.dead()
	if !ok {
		r.t.Fatal("DLQ: no answer")
	}
	return c
}

func (r *rig) mustBacklog() uint64 {
	r.t.Helper()
	n, ok := r.backlog()
	if !ok {
		r.t.Fatal("backlog: no answer")
	}
	return n
}

// msgs, streamInfo, backlog, dead and progress tolerate a broker that is down: ok is false.

// held is the number of messages stream holds now (for DONE too: msgs counts DONE's every entry).
func (r *rig) held(stream string) uint64 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, stream)
	if err != nil {
		r.t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		r.t.Fatalf("stream info %s: %v", stream, err)
	}
	return info.State.Msgs
}

func (r *rig) msgs(stream string) (uint64, bool) {
	if r.names.Partitions > 1 && r.names.Base(stream) == "" &&
		(stream == r.names.Keys || stream == r.names.Blobs || stream == r.names.Uploaded) {
		var total uint64
		for _, s := range r.names.Streams(stream) { // a partitioned work queue: the sum
			n, ok := r.msgs(s)
			if !ok {
				return 0, false
			}
			total += n
		}
		return total, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, stream)
	if err != nil {
		return 0, false
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, false
	}
	if stream == r.names.Done {
		// Every entry DONE ever stored: `ferry manifest` (inside ferry run too) drains it.
		return info.State.LastSeq, true
	}
	return info.State.Msgs, true
}

func (r *rig) streamInfo(stream string) (*jetstream.StreamInfo, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, stream)
	if err != nil {
		return nil, false
	}
	info, err := s.Info(ctx)
	return info, err == nil
}

func (r *rig) backlog() (uint64, bool) {
	var total uint64
	for _, s := range []string{r.names.Keys, r.names.Blobs, r.names.Uploaded, r.names.Advisories} {
		n, ok := r.msgs(s)
		if !ok {
			return 0, false
		}
		total += n
	}
	return total, true
}

func (r *rig) dead() (deadletter.Counts, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := deadletter.Count(ctx, r.js, r.names)
	return c, err == nil
}

func (r *rig) progress() string {
	done, _ := r.msgs(r.names.Done)
	dead, _ := r.dead()
	keys, _ := r.msgs(r.names.Keys)
	blobs, _ := r.msgs(r.names.Blobs)
	up, _ := r.msgs(r.names.Uploaded)
	return fmt.Sprintf("DONE %d, DLQ %d %v, backlog KEYS %d BLOBS %d UPLOADED %d", done, dead.Total(), dead, keys, blobs, up)
}

// status runs `ferry status --json` and decodes it.
func (r *rig) status() *status.Status {
	r.t.Helper()
	out, code := r.runFerry(time.Minute, nil, "status", "--json")
	var st status.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		r.t.Fatalf("ferry status --json: exit %d, %v\n%s", code, err, out)
	}
	return &st
}

// waitFor polls cond every 500 ms; after timeout it fails the test with what it waited for and
// the job's progress.
func (r *rig) waitFor(timeout time.Duration, what string, cond func() bool) {
	r.t.Helper()
	r.poll(timeout, 500*time.Millisecond, func() string { return "for " + what + ": " + r.progress() }, cond)
}

// waitUntil polls cond every 250 ms; after timeout it fails the test, describing what it waited
// for as what() says then.
func (r *rig) waitUntil(timeout time.Duration, what func() string, cond func() bool) {
	r.t.Helper()
	r.poll(timeout, 250*time.Millisecond, func() string { return ": " + what() }, cond)
}

func (r *rig) poll(timeout, every time.Duration, what func() string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %s waiting %s", timeout, what())
		}
		time.Sleep(every)
	}
}

// ---- a crew of services, restarted when they die (as a supervisor would) ----

type member struct {
	role     string
	args     []string
	env      []string
	svc      *svc
	finished bool // a producer that exited 0: its key lists are published
	kills    int
}

type crew struct {
	r       *rig
	members []*member
	exits   []string // services that died on their own
}

func (r *rig) crew() *crew { return &crew{r: r} }

func (c *crew) add(role string, copies int, args ...string) {
	for range copies {
		m := &member{role: role, args: args}
		m.svc = c.r.start(role, args...)
		c.members = append(c.members, m)
	}
}

// tend notes services that exited by themselves and starts them again; a producer that exits 0
// has finished.
func (c *crew) tend() {
	for _, m := range c.members {
		if m.finished || m.svc.alive() {
			continue
		}
		code := exitCode(m.svc.err)
		if m.role == "producer" && code == 0 {
			m.finished = true
			continue
		}
		b, _ := os.ReadFile(m.svc.log)
		c.exits = append(c.exits, fmt.Sprintf("%s exit %d", m.svc.name, code))
		c.r.t.Logf("%s exited by itself (exit %d), restarting it; log tail:\n%s", m.svc.name, code, tail(b, 1200))
		m.svc = c.r.startEnv(m.role, m.env, m.args...)
	}
}

// killRandom SIGKILLs one running service and starts its replacement.
func (c *crew) killRandom() *member {
	var live []*member
	for _, m := range c.members {
		if !m.finished && m.svc.alive() {
			live = append(live, m)
		}
	}
	if len(live) == 0 {
		return nil
	}
	m := live[rand.IntN(len(live))]
	m.svc.kill()
	m.kills++
	m.svc = c.r.startEnv(m.role, m.env, m.args...)
	return m
}

func (c *crew) producersDone() bool {
	for _, m := range c.members {
		if m.role == "producer" && !m.finished {
			return false
		}
	}
	return true
}

func (c *crew) killsByRole() (int, string) {
	by := map[string]int{}
	total := 0
	for _, m := range c.members {
		by[m.role] += m.kills
		total += m.kills
	}
	var parts []string
	for _, role := range []string{"producer", "fetcher", "uploader", "verifier"} {
		if by[role] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", role, by[role]))
		}
	}
	return total, strings.Join(parts, ", ")
}

// stop SIGTERMs every running service; each must exit 0.
func (c *crew) stop() {
	for _, m := range c.members {
		if m.svc.alive() {
			if err := m.svc.stop(60 * time.Second); err != nil {
				c.r.t.Errorf("%s did not shut down cleanly on SIGTERM: %v", m.svc.name, err)
			}
		}
	}
}

// settle waits until the producers are done and the work queues have stayed empty for 3 s,
// tending the crew meanwhile.
func (c *crew) settle(timeout time.Duration) {
	r := c.r
	r.t.Helper()
	empty := 0
	r.waitFor(timeout, "the pipeline to drain", func() bool {
		c.tend()
		n, ok := r.backlog()
		if !ok || n > 0 || !c.producersDone() {
			empty = 0
			return false
		}
		empty++
		return empty >= 6
	})
}

// ---- reading streams back ----

type entry struct {
	Key    string
	Header nats.Header
	Time   time.Time
	Seq    uint64 // in its stream (or DONE's, for an entry read from a manifest segment)
}

func (e entry) outcome() string {
	return e.Header.Get(bus.HdrStage) + "/" + e.Header.Get(bus.HdrReason)
}

// originLine is the line number in a Ferry-Origin of the form file:line.
func (e entry) originLine() string {
	o := e.Header.Get(bus.HdrOrigin)
	return o[strings.LastIndexByte(o, ':')+1:]
}

// readStream reads every message of a stream.
func (r *rig) readStream(name string) []entry {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := r.js.Stream(ctx, name)
	if err != nil {
		r.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		r.t.Fatalf("stream info %s: %v", name, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		r.t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		r.t.Fatal(err)
	}
	defer it.Stop()
	out := make([]entry, 0, info.State.Msgs)
	var last uint64
	for {
		m, err := it.Next(jetstream.NextMaxWait(15 * time.Second))
		if err != nil {
			// DONE's drain may purge what was still to read: then there is nothing after last.
			if now, ierr := s.Info(ctx); ierr == nil && (now.State.Msgs == 0 || now.State.LastSeq <= last) {
				return out
			}
			r.t.Fatalf("read %s after %d messages: %v", name, len(out), err)
		}
		md, err := m.Metadata()
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, entry{Key: string(m.Data()), Header: m.Headers(), Time: md.Timestamp, Seq: md.Sequence.Stream})
		last = md.Sequence.Stream
		if md.NumPending == 0 {
			return out
		}
	}
}

// manifestState is the manifest drain's state (zero before its first segment).
func (r *rig) manifestState() manifest.State {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := r.js.KeyValue(ctx, r.names.KV)
	if err != nil {
		r.t.Fatalf("kv %s: %v", r.names.KV, err)
	}
	st, _, err := manifest.LoadState(ctx, kv)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// readDone reads every DONE entry: those the manifest drain moved into segments in S3 (read as
// ferry wrote them, from the job file's manifest place), then those still in DONE.
func (r *rig) readDone() []entry {
	r.t.Helper()
	// A drain running meanwhile may record a segment and purge DONE between the two reads: read
	// again until the drain's state stood still over both.
	for try := 0; ; try++ {
		st := r.manifestState()
		out := r.readDoneAt(st)
		if r.manifestState().NextSeq == st.NextSeq {
			return out
		}
		if try == 20 {
			r.t.Fatalf("the manifest drain moved on during each of %d reads of DONE", try+1)
		}
	}
}

// readDoneAt reads the segments below st.NextSeq and DONE's entries from there.
func (r *rig) readDoneAt(st manifest.State) []entry {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out []entry
	if st.NextSeq > 1 {
		store, err := manifest.StoreFor(ctx, &r.jobCfg)
		if err != nil {
			r.t.Fatal(err)
		}
		var keys []string
		if err := store.ListObjects(ctx, manifest.Dir(r.jobCfg.Manifest.Prefix, r.job), "", "", func(o blobstore.Object) error {
			keys = append(keys, o.Key)
			return nil
		}); err != nil {
			r.t.Fatalf("list manifest segments: %v", err)
		}
		for _, k := range keys {
			b, err := store.Get(ctx, k)
			if err != nil {
				r.t.Fatalf("manifest segment %s: %v", k, err)
			}
			if err := manifest.Decode(bytes.NewReader(b), func(e manifest.Entry) error {
				if e.Seq < st.NextSeq { // a segment recorded after st was read counts from DONE
					h := nats.Header{}
					e.Record.Encode(h)
					out = append(out, entry{Key: e.Record.Key, Header: h, Time: e.Stored, Seq: e.Seq})
				}
				return nil
			}); err != nil {
				r.t.Fatalf("manifest segment %s: %v", k, err)
			}
		}
		if uint64(len(out))+st.Lost != st.NextSeq-1 {
			r.t.Fatalf("manifest segments hold %d entries (+%d lost), the drain's state says %d", len(out), st.Lost, st.NextSeq-1)
		}
	}
	for _, e := range r.readStream(r.names.Done) {
		if e.Seq >= st.NextSeq { // below: drained, DONE not yet purged (a drain between its steps)
			out = append(out, e)
		}
	}
	return out
}

// doneEntries reads DONE: the verified source keys, each with the read target that served it,
// and the number of entries.
func (r *rig) doneEntries() (map[string]string, int) {
	r.t.Helper()
	done := r.readDone()
	out := make(map[string]string, len(done))
	for _, e := range done {
		out[e.Key] = e.Header.Get(bus.HdrSource)
	}
	return out, len(done)
}

// ---- reconciliation ----

const outcomeVerified = "verified"

// plan says what each input must end as.
type plan struct {
	// want maps each input (by id) to outcomeVerified or "stage/reason".
	want map[string]string
	// idOf is an entry's id; default its source key.
	idOf func(entry) string
	// content is a verified key's bytes; default seed.Content.
	content func(key string) []byte
	// ignoreUnexpected: DONE or DLQ entries of ids not in want are not an error.
	ignoreUnexpected bool
	note             string
	scenario         string    // default the rig's
	since            time.Time // start of the wall time; default the rig's start
}

// reconcile reads DONE and the DLQ back, GETs every verified object and compares its bytes, and
// records the scenario's row. Every input that is neither verified nor dead-lettered is lost.
func (r *rig) reconcile(p plan) *row {
	t := r.t
	t.Helper()
	if p.idOf == nil {
		p.idOf = func(e entry) string { return e.Key }
	}
	if p.content == nil {
		p.content = seed.Content
	}
	done, dead := r.readDone(), r.readStream(r.names.DLQ)
	doneBy, deadBy := map[string][]entry{}, map[string][]entry{}
	for _, e := range done {
		doneBy[p.idOf(e)] = append(doneBy[p.idOf(e)], e)
	}
	for _, e := range dead {
		deadBy[p.idOf(e)] = append(deadBy[p.idOf(e)], e)
	}
	if p.scenario == "" {
		p.scenario = r.scenario
	}
	rw := &row{scenario: p.scenario, keysIn: len(p.want), dead: map[string]int{}, dupPUTs: "n/a", note: p.note}
	var problems []string
	var toCheck []entry
	doneDups := 0
	ids := make([]string, 0, len(p.want))
	for id := range p.want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		want := p.want[id]
		d, x := doneBy[id], deadBy[id]
		switch {
		case len(d) > 0:
			doneDups += len(d) - 1
			toCheck = append(toCheck, d[0])
			if want != outcomeVerified {
				problems = append(problems, fmt.Sprintf("%.80q: verified, want %s", id, want))
			}
			if len(x) > 0 {
				problems = append(problems, fmt.Sprintf("%.80q: verified and also dead-lettered (%s)", id, x[0].outcome()))
			}
		case len(x) > 0:
			rw.dead[x[0].outcome()]++
			if want != x[0].outcome() {
				problems = append(problems, fmt.Sprintf("%.80q: dead-lettered %s (%s), want %s", id, x[0].outcome(), x[0].Header.Get(bus.HdrError), want))
			}
		default:
			rw.lost++
			problems = append(problems, fmt.Sprintf("%.80q: LOST (want %s): neither in DONE nor in the DLQ", id, want))
		}
	}
	if !p.ignoreUnexpected {
		for id, es := range doneBy {
			if _, ok := p.want[id]; !ok {
				problems = append(problems, fmt.Sprintf("unexpected DONE entry %.80q", es[0].Key))
			}
		}
		for id, es := range deadBy {
			if _, ok := p.want[id]; !ok {
				problems = append(problems, fmt.Sprintf("unexpected dead letter %.80q: %s %s", es[0].Key, es[0].outcome(), es[0].Header.Get(bus.HdrError)))
			}
		}
	}
	bad := r.checkBytes(toCheck, p.content)
	rw.verified = len(toCheck) - len(bad)
	rw.lost += len(bad)
	problems = append(problems, bad...)
	if doneDups > 0 {
		rw.note = joinNote(rw.note, fmt.Sprintf("%d keys verified twice", doneDups))
	}
	if r.proxy != nil {
		dups, _ := r.proxy.Duplicates()
		rw.dupPUTs = strconv.Itoa(dups)
	}
	problems = append(problems, r.crashes()...)
	if p.since.IsZero() {
		p.since = r.began
	}
	rw.wall = time.Since(p.since)
	rw.result = "pass"
	if len(problems) > 0 {
		rw.result = "FAIL"
		sort.Strings(problems)
		t.Errorf("%s: %d problems, e.g.:\n  %s", p.scenario, len(problems), strings.Join(problems[:min(15, len(problems))], "\n  "))
	}
	r.addRow(rw)
	t.Logf("%s: %d in, %d verified, DLQ %s, %d lost, duplicate PUTs %s, %s; %s", rw.scenario, rw.keysIn, rw.verified,
		rw.deadString(), rw.lost, rw.dupPUTs, rw.wall.Round(time.Second), rw.note)
	return rw
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + "; " + b
}

// checkBytes GETs each verified entry's object straight from S3 and compares it with what the
// source holds. It returns one line per object that is wrong.
func (r *rig) checkBytes(entries []entry, content func(string) []byte) []string {
	if len(entries) == 0 {
		return nil
	}
	objs := make([]object, len(entries))
	for i, e := range entries {
		objs[i].key = e.Key
		objs[i].s3Key, _ = bus.Text(e.Header, bus.HdrS3Key)
		r.s3Keys = append(r.s3Keys, objs[i].s3Key)
	}
	bad, err := compareS3(r.jobCfg.Destination, objs, content)
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]string, len(bad))
	for i, b := range bad {
		out[i] = fmt.Sprintf("%.80q verified but LOST: s3://%s: %v", b.key, b.s3Key, b.err)
	}
	return out
}

// checkS3 GETs the object of every key, named by the key rules of the job file cfgFile, and
// compares it with the bytes the seed wrote.
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
	objs := make([]object, len(keys))
	for i, k := range keys {
		objs[i].key = k
		objs[i].s3Key, objs[i].err = rules.Map(k)
	}
	bad, err := compareS3(job.Destination, objs, seed.Content)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		lines := make([]string, len(bad))
		for i, b := range bad {
			lines[i] = fmt.Sprintf("%s: %v", b.key, b.err)
		}
		t.Fatalf("%d of %d objects wrong in S3, e.g. %s", len(bad), len(keys), strings.Join(lines[:min(5, len(lines))], "; "))
	}
}

// object is a source key and its S3 object; err is why it is wrong.
type object struct {
	key, s3Key string
	err        error
}

// compareS3 GETs every object (32 at a time) and compares its bytes with content(key); it returns
// the objects that are missing, unreadable or differ. An object whose err is already set (its key
// did not map) is returned as it is.
func compareS3(dest config.Destination, objs []object, content func(string) []byte) ([]object, error) {
	ctx := context.Background()
	store, err := blobstore.New(ctx, dest, 32)
	if err != nil {
		return nil, err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		bad  []object
		work = make(chan object)
	)
	for range 32 {
		wg.Go(func() {
			for o := range work {
				if o.err == nil {
					var body []byte
					body, o.err = store.Get(ctx, o.s3Key)
					if want := content(o.key); o.err == nil && !bytes.Equal(body, want) {
						o.err = fmt.Errorf("S3 holds %d bytes that differ from the source's %d", len(body), len(want))
					}
				}
				if o.err != nil {
					mu.Lock()
					bad = append(bad, o)
					mu.Unlock()
				}
			}
		})
	}
	for _, o := range objs {
		work <- o
	}
	close(work)
	wg.Wait()
	return bad, nil
}

// crashes lists the processes whose log shows a panic or a Go runtime crash.
func (r *rig) crashes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.procs {
		b, _ := os.ReadFile(p.log)
		if crashRE.Match(b) {
			out = append(out, fmt.Sprintf("%s crashed: %s", p.name, crashRE.Find(b)))
		}
	}
	return out
}

var crashRE = regexp.MustCompile(`(?m)^(panic: .*|fatal error: .*|goroutine \d+ \[.*)$`)

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
