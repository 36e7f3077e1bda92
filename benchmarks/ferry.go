package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/manifest"
)

// stall is how long a ferry variant may make no progress before the harness gives up.
const stall = 3 * time.Minute

// ferryArgs are the global flags of a ferry command: they go before the subcommand.
func (b *bench) ferryArgs(job, cfg, metricsAddr string, withNATS bool) []string {
	args := []string{b.o.Ferry, "--job", job, "--config", cfg}
	if metricsAddr != "" {
		args = append(args, "--metrics-addr", metricsAddr)
		// The profiler has its own address (the metrics port serves metrics only).
		if port, err := freePort(); err == nil {
			pprof := "127.0.0.1:" + strconv.Itoa(port)
			pprofAddrs.Store(metricsAddr, pprof)
			args = append(args, "--pprof-addr", pprof)
		}
	}
	if withNATS {
		args = append(args, "--nats", b.o.NATS)
	}
	return args
}

// ferryOnce runs a short ferry command (setup, setup --delete) and returns its error with output.
func ferryOnce(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args[1:], " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// splitStage is one process of the split variant: its name and ferry's arguments.
type splitStage struct {
	name string
	args []string
}

// runSplit runs the four ferry services as separate processes on the local nats-server, under a
// fresh job, and profiles them while they work; with b.drain, a `ferry manifest` beside them.
func (b *bench) runSplit(ctx context.Context, keys string, n int, profDir string) (*variantResult, error) {
	job := b.id + "-split"
	cfg, err := b.variantConfig(vSplit)
	if err != nil {
		return nil, err
	}
	if err := ferryOnce(ctx, append(b.ferryArgs(job, cfg, "", true), "setup")...); err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := ferryOnce(dctx, append(b.ferryArgs(job, cfg, "", true), "setup", "--delete", "--yes")...); err != nil {
			logf("warning: %v", err)
		}
	}()
	nc, js, err := bus.Connect(ctx, b.o.NATS, "bench")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	names := bus.For(job)
	brokerPID, brokerCPU0 := b.natsCPU()

	conc := strconv.Itoa(b.o.Concurrency)
	stages := []splitStage{
		{"fetcher", []string{"fetcher", "--concurrency", conc}},
		{"uploader", []string{"uploader", "--concurrency", conc}},
		{"verifier", []string{"verifier", "--concurrency", conc}},
		{"producer", []string{"producer", "--keys", keys}},
	}
	if b.drain != nil {
		stages = append(stages, splitStage{"manifest", b.drain.args("manifest", "")})
	}
	procs := map[string]*child{}
	addrs := map[string]string{}
	defer func() {
		for _, c := range procs {
			c.stop(45 * time.Second)
		}
	}()
	start := time.Now()
	for _, s := range stages {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addrs[s.name] = "127.0.0.1:" + strconv.Itoa(port)
		args := append(b.ferryArgs(job, cfg, addrs[s.name], true), s.args...)
		c, err := startLogged(ctx, b.dir, "split-"+s.name, childEnv(), args...)
		if err != nil {
			return nil, err
		}
		c.start = start
		procs[s.name] = c
	}

	r := &variantResult{Name: vSplit, Keys: n, BrokerCPU: -1}
	prof := newProfiler(ctx, profDir, b.o.ProfileSeconds)
	var uploadedAt, verifiedAt time.Duration
	var last counters
	var done, dead uint64
	pauses := newPauseMeter()
	lastChange, lastProgress := time.Now(), time.Now()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		for name, c := range procs {
			if c.exited() && (name != "producer" || c.err != nil) {
				return nil, fmt.Errorf("%s exited early: %v (see %s)", name, c.err, filepath.Join(b.dir, "split-"+name+".log"))
			}
		}
		if s, err := scrape(ctx, addrs["uploader"]); err == nil {
			last.uploaded = readCounters(s).uploaded
		}
		if s, err := scrape(ctx, addrs["fetcher"]); err == nil {
			last.fetched = readCounters(s).fetched
		}
		d, err1 := manifest.Verified(ctx, js, names) // every DONE entry, drained ones too
		q, err2 := streamMsgs(ctx, js, names.DLQ)
		if err1 == nil && err2 == nil {
			if d != done || q != dead {
				pauses.change()
				lastChange = time.Now()
			}
			done, dead = d, q
		}
		elapsed := time.Since(start)
		if uploadedAt == 0 && uint64(last.uploaded)+dead >= uint64(n) {
			uploadedAt = elapsed
		}
		if !prof.started && (last.uploaded >= float64(n)/20 || elapsed > 10*time.Second) {
			prof.cpu(addrs, procs)
		}
		if time.Since(lastProgress) >= 5*time.Second {
			lastProgress = time.Now()
			logf("  %s: %.0f fetched, %.0f uploaded, %d verified of %d, %d dead, %.0f files/s verified", vSplit,
				last.fetched, last.uploaded, done, n, dead, float64(done)/elapsed.Seconds())
		}
		if done+dead >= uint64(n) {
			verifiedAt = elapsed
			break
		}
		if time.Since(lastChange) > stall {
			return nil, fmt.Errorf("no progress for %s at %d verified of %d (logs in %s)", stall, done, n, b.dir)
		}
	}

	prof.allocs(addrs, procs)
	prof.wait()
	if s, err := scrape(ctx, addrs["fetcher"]); err == nil {
		r.Reads = int64(readCounters(s).reads)
	} else {
		r.Notes = append(r.Notes, "fetcher reads not scraped: "+err.Error())
	}
	for _, s := range stages {
		c := procs[s.name]
		c.stop(45 * time.Second)
		_ = c.wait(ctx)
		r.addProcess(s.name, c.usage())
	}
	if brokerPID > 0 {
		if cpu, err := procCPU(brokerPID); err == nil {
			r.BrokerCPU, r.BrokerName = cpu-brokerCPU0, "nats-server"
		}
	}
	r.Files, r.Failed = int64(done), int64(dead)
	r.UploadedSeconds, r.VerifiedSeconds = uploadedAt.Seconds(), verifiedAt.Seconds()
	if dead > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d dead letters (job %s)", dead, job))
	}
	r.Notes = append(r.Notes, pauses.notes()...)
	r.Profiles, r.ProfileNotes = prof.tops(ctx)
	if b.drain != nil {
		if r.Store, err = jobStore(ctx, js, names, brokerPID); err != nil {
			r.Notes = append(r.Notes, "NATS store not read: "+err.Error())
		}
	}
	return r.finish(), nil
}

// natsCPU is the local nats-server's pid and CPU seconds so far (0, 0 when unknown).
func (b *bench) natsCPU() (int, float64) {
	pid, err := pidFile(b.o.NATSPidFile)
	if err != nil {
		return 0, 0
	}
	cpu, err := procCPU(pid)
	if err != nil {
		return 0, 0
	}
	return pid, cpu
}

func streamMsgs(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	st, err := streamState(ctx, js, name)
	return st.Msgs, err
}

func streamState(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return info.State, nil
}

// runFerry runs `ferry run` on its embedded server (a fresh data folder, no FERRY_NATS) until it
// exits by itself, following its metrics for the moments all keys were uploaded and verified.
// It also takes a CPU profile and, halfway, a heap profile of the process into profDir. v is
// vRun (the embedded server syncs every write, ferry run's default) or vRunSync2m (nats-server's
// 2-minute background sync), so the cost of the sync shows side by side.
func (b *bench) runFerry(ctx context.Context, v, keys string, n int, profDir string) (*variantResult, error) {
	b.runs++
	job := fmt.Sprintf("%s-run%d", b.id, b.runs)
	cfg, err := b.variantConfig(v)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(b.dir, fmt.Sprintf("run-data-%d", b.runs))
	defer os.RemoveAll(data)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	conc := strconv.Itoa(b.o.Concurrency)
	sync := "always"
	if v == vRunSync2m {
		sync = "2m"
	}
	args := append(b.ferryArgs(job, cfg, addr, false), "run", "--data", data, "--keys", keys,
		"--fetcher-concurrency", conc, "--uploader-concurrency", conc, "--verifier-concurrency", conc, "--nats-sync-interval", sync)
	if b.drain != nil {
		args = append(args, b.drain.args("", "manifest-")...)
	}
	if v == vRunStreams {
		args = append(args, "--fused=false")
	}
	name := fmt.Sprintf("run-%d", n)
	if b.o.Repeat > 1 {
		name = fmt.Sprintf("run-%d-%d", n, b.runs)
	}
	c, err := startLogged(ctx, b.dir, name, childEnv(), args...)
	if err != nil {
		return nil, err
	}
	defer c.stop(45 * time.Second)

	r := &variantResult{Name: v, Keys: n, BrokerCPU: -1}
	prof := newProfiler(ctx, profDir, b.o.ProfileSeconds)
	procs, addrs := map[string]*child{name: c}, map[string]string{name: addr}
	heapTaken := b.o.ProfileSeconds <= 0
	pauses := newPauseMeter()
	var uploadedAt, verifiedAt time.Duration
	var last counters
	lastChange, lastProgress := time.Now(), time.Now()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for !c.exited() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		s, err := scrape(ctx, addr)
		if err != nil {
			continue // starting, or exiting
		}
		cur := readCounters(s)
		if cur != last {
			lastChange = time.Now()
		}
		if cur.verified != last.verified && last.verified < float64(n) {
			pauses.change()
		}
		last = cur
		elapsed := time.Since(c.start)
		if uploadedAt == 0 && last.uploaded+last.dead >= float64(n) {
			uploadedAt = elapsed
		}
		if verifiedAt == 0 && last.verified+last.dead >= float64(n) {
			verifiedAt = elapsed
		}
		if !prof.started && (last.uploaded >= float64(n)/20 || elapsed > 10*time.Second) {
			prof.cpu(addrs, procs)
		}
		if !heapTaken && last.verified >= float64(n)/2 {
			heapTaken = true
			prof.heap(addrs, procs)
		}
		if time.Since(lastProgress) >= 5*time.Second {
			lastProgress = time.Now()
			logf("  %s: %.0f fetched, %.0f uploaded, %.0f verified of %d, %.0f files/s verified", v,
				last.fetched, last.uploaded, last.verified, n, last.verified/elapsed.Seconds())
		}
		if time.Since(lastChange) > stall {
			return nil, fmt.Errorf("no progress for %s (log %s)", stall, filepath.Join(b.dir, name+".log"))
		}
	}
	if err := c.wait(ctx); err != nil {
		return nil, fmt.Errorf("%w (log %s)", err, filepath.Join(b.dir, name+".log"))
	}
	exitedAt := time.Since(c.start)
	prof.wait()
	r.Profiles, r.ProfileNotes = prof.tops(ctx)
	r.addProcess("run", c.usage())
	r.Reads = int64(last.reads)
	sum, err := parseRunSummary(filepath.Join(b.dir, name+".out"))
	if err != nil {
		return nil, err
	}
	r.Files, r.Failed = sum.verified, sum.dead
	r.Notes = append(r.Notes, fmt.Sprintf("its summary: %s, %s files/s verified; exited after %.1fs",
		sum.elapsed, sum.rate, exitedAt.Seconds()))
	if verifiedAt == 0 { // finished between two scrapes: the run waits 1.5s of empty queues before it exits
		verifiedAt = exitedAt - 1500*time.Millisecond
		r.Notes = append(r.Notes, "verified time estimated from the exit")
	}
	if uploadedAt == 0 {
		uploadedAt = verifiedAt
	}
	r.UploadedSeconds, r.VerifiedSeconds = uploadedAt.Seconds(), verifiedAt.Seconds()
	if sum.dead > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d dead letters", sum.dead))
	}
	r.Notes = append(r.Notes, pauses.notes()...)
	if b.drain != nil {
		if r.Store, err = dataStore(data); err != nil {
			r.Notes = append(r.Notes, "NATS store not read: "+err.Error())
		}
	}
	return r.finish(), nil
}

// pauseMeter finds the longest time nothing was verified between the first and the last key: a
// pipeline that stalls shows here even when its average looks fine.
type pauseMeter struct {
	last    time.Time
	longest time.Duration
	at      time.Time
}

func newPauseMeter() *pauseMeter { return &pauseMeter{} }

// change records that the verified count moved.
func (p *pauseMeter) change() {
	now := time.Now()
	if !p.last.IsZero() && now.Sub(p.last) > p.longest {
		p.longest, p.at = now.Sub(p.last), p.last
	}
	p.last = now
}

func (p *pauseMeter) notes() []string {
	if p.longest < 5*time.Second {
		return nil
	}
	return []string{fmt.Sprintf("stalled: nothing verified for %.0fs from %s", p.longest.Seconds(), p.at.Format("15:04:05"))}
}

type runSummary struct {
	verified, dead int64
	elapsed, rate  string
}

var (
	runLine1 = regexp.MustCompile(`keys verified in S3 \((\d+) in this run\), (\d+) dead-lettered`)
	runLine2 = regexp.MustCompile(`elapsed (\S+), (\d+) files/s verified`)
)

// parseRunSummary reads the summary `ferry run` prints on stdout.
func parseRunSummary(path string) (runSummary, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return runSummary{}, err
	}
	m1, m2 := runLine1.FindSubmatch(raw), runLine2.FindSubmatch(raw)
	if m1 == nil || m2 == nil {
		return runSummary{}, fmt.Errorf("no ferry run summary in %s", path)
	}
	var s runSummary
	s.verified, _ = strconv.ParseInt(string(m1[1]), 10, 64)
	s.dead, _ = strconv.ParseInt(string(m1[2]), 10, 64)
	s.elapsed, s.rate = string(m2[1]), string(m2[2])
	return s, nil
}

// profiler takes CPU and allocation profiles from running ferry processes over their
// --metrics-addr (net/http/pprof) and keeps what failed, for the report.
type profiler struct {
	ctx     context.Context
	dir     string
	seconds int
	started bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	files   map[string]string // process → CPU profile file
	heaps   map[string]string // process → heap profile file
	errs    []string
}

func newProfiler(ctx context.Context, dir string, seconds int) *profiler {
	return &profiler{ctx: ctx, dir: dir, seconds: seconds, files: map[string]string{}, heaps: map[string]string{}, started: seconds <= 0}
}

func (p *profiler) fail(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, fmt.Sprintf(format, args...))
}

// cpu starts a CPU profile of every live process; they run in the background.
func (p *profiler) cpu(addrs map[string]string, procs map[string]*child) {
	p.started = true
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		p.fail("profiles: %v", err)
		return
	}
	for name, c := range procs {
		if c.exited() {
			p.fail("%s: exited before its CPU profile (see bench-scale for the producer's)", name)
			continue
		}
		file := filepath.Join(p.dir, name+".cpu.pprof")
		p.wg.Go(func() {
			path := "profile?seconds=" + strconv.Itoa(p.seconds)
			if err := fetchProfile(p.ctx, addrs[name], path, file, time.Duration(p.seconds+30)*time.Second); err != nil {
				p.fail("%s: %v", name, err)
				return
			}
			p.mu.Lock()
			p.files[name] = file
			p.mu.Unlock()
		})
	}
}

// allocs saves the allocation profile (since start) of every live process.
func (p *profiler) allocs(addrs map[string]string, procs map[string]*child) {
	if p.seconds <= 0 {
		return
	}
	for name, c := range procs {
		if c.exited() {
			continue
		}
		file := filepath.Join(p.dir, name+".allocs.pprof")
		p.wg.Go(func() {
			if err := fetchProfile(p.ctx, addrs[name], "allocs", file, 30*time.Second); err != nil {
				p.fail("%s: %v", name, err)
			}
		})
	}
}

// heap saves the heap profile of every live process (in use now, and allocations since start).
func (p *profiler) heap(addrs map[string]string, procs map[string]*child) {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		p.fail("profiles: %v", err)
		return
	}
	for name, c := range procs {
		if c.exited() {
			continue
		}
		file := filepath.Join(p.dir, name+".heap.pprof")
		p.wg.Go(func() {
			if err := fetchProfile(p.ctx, addrs[name], "heap", file, 30*time.Second); err != nil {
				p.fail("%s: %v", name, err)
				return
			}
			p.mu.Lock()
			p.heaps[name] = file
			p.mu.Unlock()
		})
	}
}

func (p *profiler) wait() { p.wg.Wait() }

// tops prints and returns the top 10 functions of each CPU profile, and of each heap profile by
// the memory in use.
func (p *profiler) tops(ctx context.Context) (map[string]string, []string) {
	out := map[string]string{}
	for name, file := range p.files {
		top, err := pprofTop(ctx, file, 10)
		if err != nil {
			p.fail("%s: %v", name, err)
			continue
		}
		out[name] = top
		logf("CPU profile of %s (%s):\n%s", name, file, top)
	}
	for name, file := range p.heaps {
		top, err := pprofTop(ctx, file, 10, "-sample_index=inuse_space")
		if err != nil {
			p.fail("%s: %v", name, err)
			continue
		}
		out[name+" heap in use"] = top
		logf("heap profile of %s, in use (%s):\n%s", name, file, top)
	}
	for _, e := range p.errs {
		logf("profile: %s", e)
	}
	return out, p.errs
}
