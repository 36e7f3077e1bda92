//go:build integration

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
	"github.com/ferry-migrate/ferry/tools/seed"
)

// The fault-tolerance suite. Every scenario runs a job through real ferry processes while
// something breaks, then reconciles: each key that entered is verified in S3 (its bytes read back
// and compared) or in the DLQ with the expected reason; lost = 0. The short versions (TestFault*)
// run in `make test`; the long ones (TestChaos*) only with FERRY_CHAOS=1 (`make chaos`).
// TestMain prints the table of every scenario that ran.

func chaosOn() bool { return os.Getenv("FERRY_CHAOS") == "1" }

func requireChaos(t *testing.T) {
	t.Helper()
	if !chaosOn() {
		t.Skip("long fault-tolerance scenario: FERRY_CHAOS=1 (make chaos)")
	}
}

func init() {
	// The long kill scenario wants at least 30,000 keys. The seed is deterministic, so seeding
	// 30,000 rewrites the first 20,000 the other tests use, unchanged.
	if chaosOn() && os.Getenv("FERRY_E2E_KEYS") == "" {
		os.Setenv("FERRY_E2E_KEYS", "30000")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// ---- the reliability table ----

type row struct {
	scenario string
	keysIn   int
	verified int
	dead     map[string]int // "stage/reason" -> keys
	lost     int
	dupPUTs  string
	wall     time.Duration
	result   string
	note     string
}

var report struct {
	mu   sync.Mutex
	rows []*row
}

// addRow records a row of this rig's scenario in the report.
func (r *rig) addRow(rw *row) {
	report.mu.Lock()
	report.rows = append(report.rows, rw)
	report.mu.Unlock()
	r.rows = append(r.rows, rw)
}

// reliabilityTable is the markdown table of the scenarios' rows.
func reliabilityTable(rows []*row) string {
	var b strings.Builder
	b.WriteString("| scenario | keys in | verified | DLQ by reason | lost | duplicate PUTs | wall | result | notes |\n")
	b.WriteString("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |\n")
	for _, r := range rows {
		keysIn, verified, lost := "-", "-", "-"
		if r.keysIn > 0 || r.note != "did not finish" {
			keysIn, verified, lost = strconv.Itoa(r.keysIn), strconv.Itoa(r.verified), strconv.Itoa(r.lost)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.scenario, keysIn, verified,
			r.deadString(), lost, r.dupPUTs, r.wall.Round(time.Second), r.result, strings.ReplaceAll(r.note, "|", "/"))
	}
	return b.String()
}

// printReport prints the reliability table of every fault scenario that ran, once the tests are
// done (TestMain): on w with FERRY_CHAOS=1 (make chaos) or -v, and into $FERRY_CHAOS_REPORT when
// set. Nothing when no scenario ran.
func printReport(w io.Writer, verbose bool) error {
	report.mu.Lock()
	rows := append([]*row(nil), report.rows...)
	report.mu.Unlock()
	if len(rows) == 0 {
		return nil
	}
	table := reliabilityTable(rows)
	if chaosOn() || verbose {
		fmt.Fprintf(w, "\nferry reliability (%s)\n\n%s\n", time.Now().Format(time.DateTime), table)
	}
	if path := os.Getenv("FERRY_CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			return fmt.Errorf("FERRY_CHAOS_REPORT: %w", err)
		}
	}
	return nil
}

func (r *row) deadString() string {
	if len(r.dead) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(r.dead))
	for k := range r.dead {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, r.dead[k])
	}
	return strings.Join(parts, ", ")
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

// stop sends SIGTERM and waits up to timeout; a clean shutdown returns nil.
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
		return fmt.Errorf("%s did not exit within %s of SIGTERM", s.name, timeout)
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

// ---- the rig: one job, its job files, its processes ----

type rigOptions struct {
	nats    string            // NATS URL(s); default the local stack's
	faults  faultRates        // S3 faults of the proxy; nil: none (it only counts writes)
	noProxy bool              // services talk to S3 directly
	edit    func(*config.Job) // changes to the job file
	env     []string          // extra environment of every service
	connect []nats.Option     // authentication and TLS of the rig's own connection
}

type rig struct {
	t        *testing.T
	scenario string
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
// written by this job, and its job file pointing at a fault proxy in front of S3.
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r.nc, r.js, err = bus.Connect(ctx, r.url, "chaos", o.connect...); err != nil {
		t.Fatalf("NATS %s not running? (make up): %v", r.url, err)
	}
	t.Cleanup(r.cleanup)
	return r
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
	if len(r.rows) == 0 && !t.Skipped() { // failed before it could reconcile
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
			t.Logf("--- %s log (last 2500 bytes):\n%s", p.name, tail(b, 2500))
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

// must runs `ferry args...` and fails the test unless it exits 0.
func (r *rig) must(args ...string) string {
	r.t.Helper()
	out, code := r.runFerry(5*time.Minute, nil, args...)
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

// ---- watching the job (every call tolerates a broker that is down) ----

func (r *rig) msgs(stream string) (uint64, bool) {
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

// waitFor polls cond every 500 ms; after timeout it fails the test with what it waited for.
func (r *rig) waitFor(timeout time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, r.progress())
		}
		time.Sleep(500 * time.Millisecond)
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
	for {
		m, err := it.Next(jetstream.NextMaxWait(15 * time.Second))
		if err != nil {
			r.t.Fatalf("read %s after %d messages: %v", name, len(out), err)
		}
		md, err := m.Metadata()
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, entry{Key: string(m.Data()), Header: m.Headers(), Time: md.Timestamp})
		if md.NumPending == 0 {
			return out
		}
	}
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
	done, dead := r.readStream(r.names.Done), r.readStream(r.names.DLQ)
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
	ctx := context.Background()
	store, err := blobstore.New(ctx, r.jobCfg.Destination, 32)
	if err != nil {
		r.t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		bad  []string
		work = make(chan entry)
	)
	for range 32 {
		wg.Go(func() {
			for e := range work {
				s3Key, _ := bus.Text(e.Header, bus.HdrS3Key)
				body, err := store.Get(ctx, s3Key)
				if err == nil && !bytes.Equal(body, content(e.Key)) {
					err = fmt.Errorf("S3 holds %d bytes that differ from the source's %d", len(body), len(content(e.Key)))
				}
				mu.Lock()
				r.s3Keys = append(r.s3Keys, s3Key)
				if err != nil {
					bad = append(bad, fmt.Sprintf("%.80q verified but LOST: s3://%s: %v", e.Key, s3Key, err))
				}
				mu.Unlock()
			}
		})
	}
	for _, e := range entries {
		work <- e
	}
	close(work)
	wg.Wait()
	return bad
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

// ---- expectations of the seeded keys ----

// absentKeys are n keys of the seed's format that this job alone uses and no table holds. (The
// seed's own absent keys do not stay absent: TestPipeline writes them to test `dlq replay`.)
func (r *rig) absentKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		sum := sha256.Sum256(fmt.Appendf(nil, "ferry-chaos/absent/%s/%d", r.job, i))
		out[i] = "t01" + hex.EncodeToString(sum[:12]) + ".jpg"
	}
	return out
}

// keySet is n seeded keys (shuffled, fallback ones among them, the edge-case sizes always in)
// with absent keys spread through them, and what each must end as: the absent ones dead-lettered
// not_found by the fetcher, the others verified.
func (r *rig) keySet(keys seed.Keys, n, absent int) ([]string, map[string]string) {
	skip := map[string]bool{}
	for _, k := range keys.Absent {
		skip[k] = true
	}
	var list []string
	for _, k := range keys.All() {
		if !skip[k] && (n <= 0 || len(list) < n) {
			list = append(list, k)
		}
	}
	list = withSized(keys, list)
	want := make(map[string]string, len(list)+absent)
	for _, k := range list {
		want[k] = outcomeVerified
	}
	gone := r.absentKeys(absent)
	for i, k := range gone {
		want[k] = "fetcher/not_found"
		at := (i + 1) * len(list) / (absent + 1)
		list = append(list[:at], append([]string{k}, list[at:]...)...)
	}
	return list, want
}

// withSized makes sure the keys with the edge-case sizes (0 bytes, above the inline limit, above
// the multipart threshold) are in a subset of the seeded keys.
func withSized(keys seed.Keys, subset []string) []string {
	have := map[string]bool{}
	for _, k := range subset {
		have[k] = true
	}
	for _, k := range keys.Main[len(keys.Main)-len(seedSizes):] {
		if !have[k] {
			subset = append(subset, k)
		}
	}
	return subset
}

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
