//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
)

// TestLiveSource migrates a table while a writer keeps changing it (issue 14): it inserts keys,
// rewrites keys with new bytes (hot keys many times, some while their older version is in
// flight), deletes keys and writes rows with a TTL, through both datacenters' coordinators, during
// a full pass and two delta passes, with the fetcher and the uploader SIGKILLed in between. Then
// the writer stops, a final delta pass and `ferry prune --delete` run, and S3 is compared with the
// source key by key: the same key set, every object read back with the source's newest bytes, no
// deleted key left, no dead letter the writer did not cause, and the cut-over proof in `ferry
// report`. TestChaosLiveSource (make chaos) is the long version: more keys, more writes, multipart
// blobs.
func TestLiveSource(t *testing.T) {
	liveSource(t, envInt("FERRY_LIVE_KEYS", 1500), envInt("FERRY_LIVE_WRITES_PER_S", 40), []int{0, 1_200_000})
}

func TestChaosLiveSource(t *testing.T) {
	requireChaos(t)
	// Multipart blobs are rare (1 write in ~1,000): the local nodes' heaps take a few at a time.
	liveSource(t, envInt("FERRY_CHAOS_LIVE_KEYS", 20000), envInt("FERRY_CHAOS_LIVE_WRITES_PER_S", 100), []int{0, 1_200_000, 17 << 20})
}

func liveSource(t *testing.T, keys, rate int, sizes []int) {
	table := ""
	h := newRig(t, "live source: writes, rewrites, deletes, TTLs during 4 passes + prune", "live", rigOptions{edit: func(j *config.Job) {
		job, _, _ := strings.Cut(strings.TrimPrefix(j.Keys.Template, "chaos/"), "/") // newRig put the job's prefix there
		table = "ferry_live." + strings.ReplaceAll(job, "-", "_")
		first := j.Source.Targets[0]
		first.Table = table
		second := first // the same table read through dc2: the fallback when dc1 does not have a row yet
		second.Name, second.Hosts, second.LocalDC = "dc2", []string{"127.0.0.2"}, "dc2"
		j.Source.Targets = []config.Target{first, second}
	}})
	w := newLiveWriter(t, h.jobCfg.Source.Targets, table, sizes)
	t.Cleanup(w.close)
	w.fill(keys)
	h.must("setup")

	c := h.crew()
	c.add("fetcher", 1, "fetcher", "--concurrency", "16")
	c.add("uploader", 1, "uploader", "--concurrency", "16")
	c.add("verifier", 1, "verifier", "--concurrency", "16")

	ctx, stopWriter := context.WithCancel(context.Background())
	var writing sync.WaitGroup
	writing.Go(func() { w.run(ctx, rate) })

	scan := []string{"producer", "--scan", "--scan-page-size", "200", "--scan-rate", "4000", "--since-margin", "2s"}
	passes := []struct {
		since string
		kill  []string // killed while the pass runs
	}{{"", []string{"fetcher", "uploader"}}, {"1", []string{"uploader"}}, {"2", []string{"fetcher", "uploader"}}}
	for i, p := range passes {
		args := scan
		if p.since != "" {
			args = append(append([]string(nil), scan...), "--since", p.since)
		}
		prod := h.start(fmt.Sprintf("producer-pass%d", i+1), args...)
		for _, role := range p.kill {
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
			c.kill(role)
		}
		h.waitProducer(prod, 5*time.Minute)
		c.settleQueues(5 * time.Minute)
	}
	stopWriter()
	writing.Wait()
	// TTL rows still alive expire before the final pass: the source then holds its final key set.
	time.Sleep(time.Until(w.lastExpiry()) + time.Second)
	final := h.start("producer-final", append(append([]string(nil), scan...), "--since", "3")...)
	h.waitProducer(final, 5*time.Minute)
	c.settleQueues(5 * time.Minute)
	c.stop()

	// S3 is on this host: its clock is ours, so the guard against objects written during the scan
	// needs no minute of skew (the uploads ended seconds ago).
	out := h.must("prune", "--delete", "--max-delete", "100%", "--clock-skew", "1s", "--out", h.dir)
	t.Logf("prune:\n%s", tail([]byte(out), 1500))

	for n := 1; n <= 4; n++ {
		p := h.pass(n)
		t.Logf("pass %d (since %q): scanned %d, published %d, %s, complete %v", n, p.SinceFrom, p.Scanned, p.Published,
			p.End.Sub(p.Start).Round(100*time.Millisecond), p.Complete)
		if !p.Complete {
			t.Errorf("pass %d is not complete", n)
		}
	}
	t.Logf("writer: %s", w.summary())

	var problems []string
	problems = append(problems, h.compareLive(w)...)
	dead := map[string]int{}
	problems = append(problems, h.liveDeadLetters(w, dead)...)
	problems = append(problems, h.accounted()...)
	problems = append(problems, h.crashes()...)
	h.must("report", "--out", filepath.Join(h.dir, "report"))
	var rep struct {
		Status string `json:"proof_status"`
		Why    string `json:"proof_why"`
	}
	if b, err := os.ReadFile(filepath.Join(h.dir, "report", "report.json")); err != nil || json.Unmarshal(b, &rep) != nil || rep.Status != "PROVEN" {
		problems = append(problems, fmt.Sprintf("ferry report: cut-over proof %q (%s), want PROVEN (%v)", rep.Status, rep.Why, err))
	}
	rw := &row{scenario: h.scenario, keysIn: len(w.final), verified: len(w.final), dead: dead, dupPUTs: "n/a",
		wall: time.Since(h.began), result: "pass", note: w.summary()}
	if h.proxy != nil {
		dups, _ := h.proxy.Duplicates()
		rw.dupPUTs = strconv.Itoa(dups) + " (rewrites)"
	}
	if len(problems) > 0 {
		rw.result = "FAIL"
		sort.Strings(problems)
		t.Errorf("%d problems, e.g.:\n  %s", len(problems), strings.Join(problems[:min(20, len(problems))], "\n  "))
	}
	h.addRow(rw)
}

// ---- the writer ----

// liveWriter changes the source table as an application would, through both datacenters'
// coordinators, and remembers what it did.
type liveWriter struct {
	t        *testing.T
	table    string
	sessions []*gocql.Session // dc1's coordinator, dc2's
	sizes    []int            // big blob sizes, now and then
	rng      *rand.Rand

	mu                                        sync.Mutex
	next                                      int            // the next new key's number
	live                                      []string       // keys that exist (as far as the writer knows)
	version                                   map[string]int // writes per key
	gone                                      map[string]bool
	expiry                                    time.Time // the last TTL row's expiry
	hot                                       []string  // keys rewritten again and again
	inserted, rewritten, deleted, ttl, failed int

	final map[string][]byte // the source at the end, read by compareLive
}

func newLiveWriter(t *testing.T, targets []config.Target, table string, sizes []int) *liveWriter {
	w := &liveWriter{t: t, table: table, sizes: sizes, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 14)),
		version: map[string]int{}, gone: map[string]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tg := range targets {
		c, err := cass.ClusterConfig(tg, 16)
		if err != nil {
			t.Fatal(err)
		}
		c.Timeout = 20 * time.Second
		s, err := cass.Open(ctx, tg, c)
		if err != nil {
			t.Fatalf("cassandra (make up): %v", err)
		}
		w.sessions = append(w.sessions, s)
	}
	ks, _, _ := strings.Cut(table, ".")
	for _, q := range []string{
		`CREATE KEYSPACE IF NOT EXISTS ` + ks + ` WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1, 'dc2': 1}`,
		`CREATE TABLE IF NOT EXISTS ` + table + ` (key text PRIMARY KEY, data blob)`,
	} {
		if err := w.sessions[0].Query(q).WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return w
}

func (w *liveWriter) close() {
	if !w.t.Failed() {
		_ = w.sessions[0].Query(`DROP TABLE IF EXISTS ` + w.table).Exec()
	}
	for _, s := range w.sessions {
		s.Close()
	}
}

// content is version v of key's bytes: different for every write, some of them large.
func (w *liveWriter) content(key string, v int) []byte {
	h := uint32(v * 104729)
	for i := 0; i < len(key); i++ {
		h = h*31 + uint32(key[i])
	}
	size := 100 + int(h%3000)
	switch { // now and then a blob above the inline limit, rarely a multipart one
	case h%997 == 5 && len(w.sizes) > 2:
		size = w.sizes[2]
	case h%41 == 5 && len(w.sizes) > 1:
		size = w.sizes[1]
	}
	b := make([]byte, size)
	copy(b, fmt.Sprintf("%s v%d ", key, v))
	for i := min(len(key)+6, size); i < size; i++ {
		b[i] = byte(i*31 + int(h))
	}
	return b
}

// write runs one statement through a random datacenter's coordinator at LOCAL_ONE: the other DC
// gets it a moment later, as in production.
func (w *liveWriter) write(ctx context.Context, q string, args ...any) bool {
	s := w.sessions[w.rng.IntN(len(w.sessions))]
	for attempt := range 3 {
		err := s.Query(q, args...).WithContext(ctx).Consistency(gocql.LocalOne).Exec()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if attempt == 2 {
			w.t.Logf("writer: %s: %v", q, err)
		}
	}
	w.failed++
	return false
}

// fill writes n keys before the migration starts.
func (w *liveWriter) fill(n int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("live/%07d.jpg", i)
	}
	w.next = n
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := w.sessions[0].Query(`INSERT INTO `+w.table+` (key, data) VALUES (?, ?)`, k, w.content(k, 0)).
				WithContext(ctx).Consistency(gocql.All).Exec(); err != nil {
				w.t.Errorf("fill %s: %v", k, err)
			}
		})
	}
	wg.Wait()
	w.live = keys
	for _, k := range keys {
		w.version[k] = 0
	}
	w.hot = append([]string(nil), keys[:min(20, n)]...)
}

// run writes about rate statements a second until ctx ends.
func (w *liveWriter) run(ctx context.Context, rate int) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.step(ctx)
	}
}

func (w *liveWriter) step(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ins := `INSERT INTO ` + w.table + ` (key, data) VALUES (?, ?)`
	switch op := w.rng.IntN(100); {
	case op < 30: // a new key
		k := fmt.Sprintf("live/%07d.jpg", w.next)
		w.next++
		if w.write(ctx, ins, k, w.content(k, 0)) {
			w.live, w.version[k] = append(w.live, k), 0
			w.inserted++
		}
	case op < 45: // a hot key, rewritten again and again (often while its last version is in flight)
		k := w.hot[w.rng.IntN(len(w.hot))]
		if w.gone[k] {
			return
		}
		v := w.version[k] + 1
		if w.write(ctx, ins, k, w.content(k, v)) {
			w.version[k] = v
			w.rewritten++
		}
	case op < 75: // any key, rewritten
		k := w.live[w.rng.IntN(len(w.live))]
		v := w.version[k] + 1
		if w.write(ctx, ins, k, w.content(k, v)) {
			w.version[k] = v
			w.rewritten++
		}
	case op < 90: // a delete (never a hot key: they stay to be rewritten)
		i := w.rng.IntN(len(w.live))
		k := w.live[i]
		if strings.Compare(k, w.hot[len(w.hot)-1]) <= 0 {
			return
		}
		if w.write(ctx, `DELETE FROM `+w.table+` WHERE key = ?`, k) {
			w.live = append(w.live[:i], w.live[i+1:]...)
			w.gone[k] = true
			w.deleted++
		}
	default: // a new key that expires within seconds
		k := fmt.Sprintf("live/ttl-%07d.jpg", w.next)
		w.next++
		ttl := 3 + w.rng.IntN(10)
		if w.write(ctx, ins+` USING TTL ?`, k, w.content(k, 0), ttl) {
			w.gone[k] = true
			w.ttl++
			if exp := time.Now().Add(time.Duration(ttl) * time.Second); exp.After(w.expiry) {
				w.expiry = exp
			}
		}
	}
}

func (w *liveWriter) lastExpiry() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.expiry
}

func (w *liveWriter) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%d inserted, %d rewritten, %d deleted, %d TTL rows, %d writes failed", w.inserted, w.rewritten, w.deleted, w.ttl, w.failed)
}

// source reads the whole table at ALL: what the source holds at the end.
func (w *liveWriter) source() map[string][]byte {
	out := map[string][]byte{}
	iter := w.sessions[0].Query(`SELECT key, data FROM ` + w.table).Consistency(gocql.All).PageSize(500).Iter()
	var k string
	var b []byte
	for iter.Scan(&k, &b) {
		out[k] = bytes.Clone(b)
	}
	if err := iter.Close(); err != nil {
		w.t.Fatalf("read the source table %s: %v", w.table, err)
	}
	return out
}

// ---- the checks ----

// compareLive compares the bucket (under the job's prefix) with the source key by key: the same
// set, and every object read back with its key's newest bytes.
func (h *rig) compareLive(w *liveWriter) []string {
	w.final = w.source()
	rules, err := keyrules.Compile(h.jobCfg.Keys)
	if err != nil {
		h.t.Fatal(err)
	}
	store, err := blobstore.New(context.Background(), h.jobCfg.Destination, 32)
	if err != nil {
		h.t.Fatal(err)
	}
	prefix := "chaos/" + h.job + "/"
	inS3 := map[string]bool{}
	if err := store.List(context.Background(), h.jobCfg.Destination.Bucket, prefix, func(key string, _ int64) error {
		inS3[key] = true
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	var problems []string
	objs := make([]object, 0, len(w.final))
	bySource := map[string]string{}
	for k := range w.final {
		s3Key, err := rules.Map(k)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%q: %v", k, err))
			continue
		}
		bySource[s3Key] = k
		h.s3Keys = append(h.s3Keys, s3Key)
		if !inS3[s3Key] {
			problems = append(problems, fmt.Sprintf("%q: in the source, not in S3 (%s)", k, s3Key))
			continue
		}
		objs = append(objs, object{key: k, s3Key: s3Key})
	}
	for s3Key := range inS3 {
		if _, ok := bySource[s3Key]; !ok {
			h.s3Keys = append(h.s3Keys, s3Key)
			problems = append(problems, fmt.Sprintf("%s: in S3, not in the source (deleted key left behind)", s3Key))
		}
	}
	bad, err := compareS3(h.jobCfg.Destination, objs, func(k string) []byte { return w.final[k] })
	if err != nil {
		h.t.Fatal(err)
	}
	for _, b := range bad {
		problems = append(problems, fmt.Sprintf("%q: s3://%s not the source's newest bytes: %v", b.key, b.s3Key, b.err))
	}
	h.t.Logf("compared %d source keys with %d objects, read back %d", len(w.final), len(inS3), len(objs))
	return problems
}

// liveDeadLetters: the only dead letters allowed are keys the writer deleted or let expire, as
// fetcher/deleted (the scan saw the row, the fetch did not).
func (h *rig) liveDeadLetters(w *liveWriter, dead map[string]int) []string {
	var problems []string
	for _, e := range h.readStream(h.names.DLQ) {
		dead[e.outcome()]++
		k, _ := bus.Text(e.Header, bus.HdrKey)
		if k == "" {
			k = e.Key
		}
		if !w.gone[k] || e.outcome() != bus.StageFetcher+"/"+bus.ReasonDeleted {
			problems = append(problems, fmt.Sprintf("dead letter the writer did not cause: %q %s: %s", k, e.outcome(), e.Header.Get(bus.HdrError)))
		}
	}
	return problems
}

// accounted: every KEYS message ended in DONE or in the DLQ (a superseded one in DONE). One may
// end in both, and only as fetcher/deleted: its fetcher died after storing the blob and before
// the ack, and the redelivery found the row deleted meanwhile (the object goes with the prune).
func (h *rig) accounted() []string {
	info, ok := h.streamInfo(h.names.Keys)
	if !ok {
		return []string{"no KEYS stream info"}
	}
	ids := map[string]bool{}
	for _, e := range h.readDone() {
		ids[e.Header.Get(bus.HdrID)] = true
	}
	var problems []string
	both := 0
	for _, e := range h.readStream(h.names.DLQ) {
		id := e.Header.Get(bus.HdrID)
		if ids[id] {
			both++
			if e.outcome() != bus.StageFetcher+"/"+bus.ReasonDeleted {
				problems = append(problems, fmt.Sprintf("%s (%q): verified and dead-lettered %s", id, e.Key, e.outcome()))
			}
		}
		ids[id] = true
	}
	if published := info.State.LastSeq; published != uint64(len(ids)) {
		problems = append(problems, fmt.Sprintf("KEYS took %d messages, DONE and the DLQ account for %d", published, len(ids)))
	}
	h.t.Logf("%d KEYS messages accounted for; %d of them verified and then found deleted on a redelivery", len(ids), both)
	return problems
}

// pass reads scan pass n's record from the job's KV.
func (h *rig) pass(n int) checkpoint.Pass {
	h.t.Helper()
	kv, err := h.js.KeyValue(context.Background(), h.names.KV)
	if err != nil {
		h.t.Fatal(err)
	}
	var p checkpoint.Pass
	e, err := kv.Get(context.Background(), checkpoint.PassKey(h.jobCfg.Source.Targets[0], n))
	if err != nil {
		h.t.Errorf("pass %d record: %v", n, err)
		return p
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		h.t.Errorf("pass %d record: %v", n, err)
	}
	return p
}

// waitProducer waits for a producer to exit 0.
func (h *rig) waitProducer(p *svc, timeout time.Duration) {
	h.t.Helper()
	select {
	case <-p.exited:
		if p.err != nil {
			b, _ := os.ReadFile(p.log)
			h.t.Fatalf("%s: %v\n%s", p.name, p.err, tail(b, 3000))
		}
	case <-time.After(timeout):
		h.t.Fatalf("%s did not finish within %s", p.name, timeout)
	}
}

// kill SIGKILLs the crew's service of role and starts it again.
func (c *crew) kill(role string) {
	for _, m := range c.members {
		if m.role == role && m.svc.alive() {
			m.svc.kill()
			m.kills++
			m.svc = c.r.startEnv(m.role, m.env, m.args...)
		}
	}
}

// settleQueues waits until KEYS, BLOBS and UPLOADED have stayed empty for 3 s, tending the crew.
func (c *crew) settleQueues(timeout time.Duration) {
	empty := 0
	c.r.waitFor(timeout, "the pipeline to drain", func() bool {
		c.tend()
		if n, ok := c.r.backlog(); !ok || n > 0 {
			empty = 0
			return false
		}
		empty++
		return empty >= 6
	})
}
