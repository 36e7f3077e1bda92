package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// The scan benchmark's table: keys in the seed's format, 100-byte blobs, in both DCs.
const (
	scanKeyspace = "ferry_bench_scan"
	scanSeed     = 2000 // keys are seed.Key(scanSeed, i), i < rows
	scanBlobSize = 100

	// ferry producer's defaults, which the restart measurement runs with.
	ferryScanConcurrency = 4
	ferryScanPageSize    = 1000
)

// scanOptions are `ferry-bench scan`'s flags (make bench-scan).
type scanOptions struct {
	Rows            int
	FillConcurrency int
	BaselinePage    int
	Runs            string // ferry runs: scan concurrencies, each optionally xPAGESIZE
	Ranges          int    // concurrency of the token-range scan without NATS (0: none)
	Restart         bool
	DeltaRuns       int     // full pass + delta pass pairs (0: none)
	DeltaFraction   float64 // rows rewritten before each delta pass
	Config          string
	NATS            string
	NATSPidFile     string
	CassPidFile     string
	Ferry           string
	Work            string
	Results         string
	ProfileSeconds  int
}

func scanCommand() *cli.Command {
	var o scanOptions
	return &cli.Command{
		Name:  "scan",
		Usage: "ferry producer --scan against one unsplit SELECT of the keys, a kill/restart of the scan, and delta passes against full ones (make bench-scan)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "rows", Value: 1_000_000, EnvVars: []string{"BENCH_SCAN_ROWS"}, Destination: &o.Rows, Usage: "rows of the scanned table (filled once)"},
			&cli.IntFlag{Name: "fill-concurrency", Value: 64, EnvVars: []string{"BENCH_SCAN_FILL_CONCURRENCY"}, Destination: &o.FillConcurrency, Usage: "inserts in flight while filling the table"},
			&cli.IntFlag{Name: "baseline-page-size", Value: 5000, EnvVars: []string{"BENCH_SCAN_BASELINE_PAGE_SIZE"}, Destination: &o.BaselinePage, Usage: "driver page size of the single SELECT"},
			&cli.StringFlag{Name: "runs", Value: "4,8", EnvVars: []string{"BENCH_SCAN_RUNS"}, Destination: &o.Runs, Usage: "ferry runs, each a --scan-concurrency with an optional xPAGESIZE (e.g. 4,8,8x2000)"},
			&cli.IntFlag{Name: "ranges-only", Value: 8, EnvVars: []string{"BENCH_SCAN_RANGES_ONLY"}, Destination: &o.Ranges, Usage: "also read the table by ferry's token ranges with this many in parallel, publishing nothing: the Cassandra side alone (0: skip)"},
			&cli.BoolFlag{Name: "restart", Value: true, EnvVars: []string{"BENCH_SCAN_RESTART"}, Destination: &o.Restart, Usage: "also kill a scan halfway and measure what its restart re-reads"},
			&cli.IntFlag{Name: "delta-runs", Value: 3, EnvVars: []string{"BENCH_SCAN_DELTA_RUNS"}, Destination: &o.DeltaRuns, Usage: "also measure this many full passes, each followed by a delta pass (--since 1) after --delta-fraction of the rows were rewritten (0: skip)"},
			&cli.Float64Flag{Name: "delta-fraction", Value: 0.01, EnvVars: []string{"BENCH_SCAN_DELTA_FRACTION"}, Destination: &o.DeltaFraction, Usage: "share of the rows rewritten (newer writetime) before each delta pass"},
			&cli.StringFlag{Name: "config", Value: "deploy/local/ferry.yaml", EnvVars: []string{"FERRY_CONFIG"}, Destination: &o.Config, Usage: "job file of the local stack; its first target is pointed at the benchmark table"},
			&cli.StringFlag{Name: "nats", Value: "nats://127.0.0.1:4222", EnvVars: []string{"FERRY_NATS"}, Destination: &o.NATS, Usage: "the local nats-server"},
			&cli.StringFlag{Name: "nats-pid-file", Value: ".local/run/nats.pid", Destination: &o.NATSPidFile, Usage: "pid file of the local nats-server, for its CPU time"},
			&cli.StringFlag{Name: "cassandra-pid-file", Value: ".local/run/cassandra-dc1.pid", Destination: &o.CassPidFile, Usage: "pid file of the scanned Cassandra node, for its CPU time"},
			&cli.StringFlag{Name: "ferry", EnvVars: []string{"BENCH_FERRY"}, Destination: &o.Ferry, Usage: "ferry binary (default: beside ferry-bench)"},
			&cli.StringFlag{Name: "work", Value: ".local/bench", EnvVars: []string{"BENCH_WORK"}, Destination: &o.Work, Usage: "scratch folder: job file and logs of each run"},
			&cli.StringFlag{Name: "results", Value: "benchmarks/results", EnvVars: []string{"BENCH_RESULTS"}, Destination: &o.Results, Usage: "where the report and profiles go"},
			&cli.IntFlag{Name: "profile-seconds", Value: 5, EnvVars: []string{"BENCH_PROFILE_SECONDS"}, Destination: &o.ProfileSeconds, Usage: "CPU profile of each ferry run, from its second second (0: none)"},
		},
		Action: func(c *cli.Context) error {
			runs, err := parseScanRuns(o.Runs)
			if err != nil {
				return err
			}
			if o.Rows < 1000 {
				return fmt.Errorf("--rows %d: at least 1000", o.Rows)
			}
			if o.DeltaRuns < 0 || o.DeltaFraction <= 0 || o.DeltaFraction > 0.5 {
				return fmt.Errorf("--delta-runs %d, --delta-fraction %g: at least 0 runs, a fraction in (0, 0.5]", o.DeltaRuns, o.DeltaFraction)
			}
			if o.Ferry == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				o.Ferry = filepath.Join(filepath.Dir(self), "ferry")
			}
			if _, err := os.Stat(o.Ferry); err != nil {
				return fmt.Errorf("ferry binary: %w (make build)", err)
			}
			return runScanBench(c.Context, o, runs)
		},
	}
}

// scanRunSpec is one ferry run: its --scan-concurrency and --scan-page-size (0: ferry's default).
// inFlight is its --in-flight (0: ferry's default); failed is why a run with the default failed.
type scanRunSpec struct {
	concurrency, pageSize, inFlight int
	failed                          string
}

// clientMaxPending is shared/bus's jetstream.WithPublishAsyncMaxPending: the async publishes the
// client lets one connection have outstanding; beyond it a publish waits 200 ms, then fails.
const clientMaxPending = 2048

func parseScanRuns(s string) ([]scanRunSpec, error) {
	var specs []scanRunSpec
	if strings.TrimSpace(s) == "" || s == "none" {
		return nil, nil // the other measurements only
	}
	for f := range strings.SplitSeq(s, ",") {
		c, p, _ := strings.Cut(strings.TrimSpace(f), "x")
		var spec scanRunSpec
		var err error
		if spec.concurrency, err = strconv.Atoi(c); err != nil || spec.concurrency < 1 {
			return nil, fmt.Errorf("--runs %q: %q is not a concurrency[xPAGESIZE]", s, f)
		}
		if p != "" {
			if spec.pageSize, err = strconv.Atoi(p); err != nil || spec.pageSize < 1 {
				return nil, fmt.Errorf("--runs %q: %q is not a concurrency[xPAGESIZE]", s, f)
			}
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// scanRun is one measured process: the single SELECT or a ferry producer.
type scanRun struct {
	Name       string  `json:"name"`
	Command    string  `json:"command"`
	Seconds    float64 `json:"wall_seconds"`
	KeysRead   int64   `json:"keys_read"`
	KeysInKEYS uint64  `json:"keys_in_keys_stream,omitempty"`
	Duplicates int64   `json:"duplicates,omitempty"`
	Rate       float64 `json:"keys_per_second"` // rows / wall
	CPU        float64 `json:"cpu_seconds"`
	CPUPer1k   float64 `json:"cpu_ms_per_1k_keys"`
	MaxRSSMiB  float64 `json:"peak_rss_mib"`
	CassCPU    float64 `json:"cassandra_cpu_seconds"`   // the scanned node, -1: unknown
	NATSCPU    float64 `json:"nats_server_cpu_seconds"` // -1: unknown
	Busy       float64 `json:"machine_cpu_busy_percent"`
	Ratio      float64 `json:"rate_ratio_over_single,omitempty"`
	Profile    string  `json:"cpu_profile_top,omitempty"`
	Notes      string  `json:"notes,omitempty"`
}

// scanRestart is a scan killed halfway and run again.
type scanRestart struct {
	KilledAtSeconds float64 `json:"killed_at_seconds"`
	StoredAtKill    uint64  `json:"keys_in_keys_at_kill"`
	Checkpointed    int64   `json:"keys_under_checkpoints_at_kill"`
	Second          scanRun `json:"second_run"`
	ReRead          int64   `json:"re_read"` // stored at the kill + read by the second run - rows
	Bound           int     `json:"bound"`   // scan concurrency x page size
	WithinBound     bool    `json:"within_bound"`
	Final           uint64  `json:"keys_in_keys_at_end"`
}

type scanReport struct {
	Date      string       `json:"date"`
	Commit    string       `json:"commit"`
	Cores     int          `json:"cores"`
	GoVersion string       `json:"go_version"`
	Table     string       `json:"table"`
	Rows      int          `json:"rows"`
	Runs      []scanRun    `json:"runs"`
	Restart   *scanRestart `json:"restart,omitempty"`
	Delta     *scanDelta   `json:"delta,omitempty"`
}

// scanBench is one `ferry-bench scan`.
type scanBench struct {
	o      scanOptions
	target config.Target // the first target of the job file, on the benchmark table
	cfg    string        // job file with that target first
	id     string
	dir    string
	prof   string // profiles folder
	js     jetstream.JetStream
	rep    scanReport
}

func runScanBench(ctx context.Context, o scanOptions, runs []scanRunSpec) error {
	job, err := config.Load(o.Config)
	if err != nil {
		return err
	}
	sb := &scanBench{o: o, id: "s" + time.Now().Format("0102-150405")}
	sb.dir = filepath.Join(o.Work, "runs", sb.id)
	if err := os.MkdirAll(sb.dir, 0o755); err != nil {
		return err
	}
	t := job.Source.Targets[0]
	t.Table, t.KeyColumn, t.BlobColumn, t.Query = scanKeyspace+"."+scanTable(o.Rows), "key", "data", ""
	job.Source.Targets[0] = t
	sb.target = t
	// Others may rebuild .local/bin/ferry while this runs: every run uses the same copy.
	if sb.o.Ferry, err = copyBinary(o.Ferry, filepath.Join(sb.dir, "ferry")); err != nil {
		return err
	}
	if sb.cfg, err = writeJobFile(filepath.Join(sb.dir, "scan.yaml"), job); err != nil {
		return err
	}
	name := time.Now().Format("2006-01-02") + "-" + gitCommit() + "-scan"
	if o.Rows != 1_000_000 {
		name += fmt.Sprintf("-n%d", o.Rows)
	}
	sb.prof = filepath.Join(o.Results, name)
	sb.rep = scanReport{Date: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), Cores: runtime.NumCPU(),
		GoVersion: runtime.Version(), Table: t.Table, Rows: o.Rows}
	logf("ferry bench-scan %s: %s with %d rows on %s (%s); logs in %s", sb.id, t.Table, o.Rows, t.Name, strings.Join(t.Hosts, ","), sb.dir)

	if err := ensureScanTable(ctx, t, o.Rows, o.FillConcurrency); err != nil {
		return err
	}
	waitQuiet(ctx, 3*time.Minute)
	nc, js, err := bus.Connect(ctx, o.NATS, "bench")
	if err != nil {
		return err
	}
	defer nc.Close()
	sb.js = js

	single, err := sb.runSingle(ctx)
	if err != nil {
		return fmt.Errorf("single select: %w", err)
	}
	sb.rep.Runs = append(sb.rep.Runs, *single)
	if o.Ranges > 0 {
		r, err := sb.runRangesOnly(ctx, o.Ranges)
		if err != nil {
			return fmt.Errorf("token ranges without NATS: %w", err)
		}
		r.Ratio = r.Rate / single.Rate
		sb.rep.Runs = append(sb.rep.Runs, *r)
	}
	for _, spec := range runs {
		r, err := sb.runFerry(ctx, spec)
		if err != nil && strings.Contains(err.Error(), "too many outstanding async published") {
			// --in-flight is per range: concurrency x 1024 can exceed what the client allows, and a
			// slow PubAck then ends the producer. Measure it again within the client's limit.
			logf("%v: again with --in-flight %d", err, clientMaxPending/spec.concurrency)
			spec.inFlight, spec.failed = clientMaxPending/spec.concurrency, err.Error()
			r, err = sb.runFerry(ctx, spec)
		}
		if err != nil {
			return fmt.Errorf("ferry %d: %w", spec.concurrency, err)
		}
		r.Ratio = r.Rate / single.Rate
		sb.rep.Runs = append(sb.rep.Runs, *r)
	}
	if o.Restart {
		if sb.rep.Restart, err = sb.runRestart(ctx); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
	}

	if o.DeltaRuns > 0 {
		if sb.rep.Delta, err = sb.runDelta(ctx); err != nil {
			return fmt.Errorf("delta: %w", err)
		}
	}

	text := sb.rep.markdown(name)
	fmt.Println()
	fmt.Print(text)
	if err := os.MkdirAll(o.Results, 0o755); err != nil {
		return err
	}
	md := filepath.Join(o.Results, name+".md")
	if err := os.WriteFile(md, []byte(text), 0o644); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(sb.rep, "", "  ")
	js2 := filepath.Join(o.Results, name+".json")
	if err := os.WriteFile(js2, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	logf("report: %s, %s", md, js2)
	return nil
}

// waitQuiet waits (at most max) until the machine is less than 25% busy over 5 seconds: after a
// fill, Cassandra flushes and compacts for a while, and the first run would pay for it.
func waitQuiet(ctx context.Context, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m := startBusy()
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
		p := m.percent()
		if p < 25 {
			return
		}
		logf("  waiting for a quiet machine: %.0f%% busy", p)
	}
}

// meter is the CPU of the scanned Cassandra node, the nats-server and the whole machine over a run.
type meter struct {
	cassPID, natsPID int
	cass0, nats0     float64
	busy             busyMeter
}

func (sb *scanBench) startMeter() meter {
	m := meter{busy: startBusy()}
	if pid, err := pidFile(sb.o.CassPidFile); err == nil {
		m.cassPID = pid
		m.cass0, _ = procCPU(pid)
	}
	if pid, err := pidFile(sb.o.NATSPidFile); err == nil {
		m.natsPID = pid
		m.nats0, _ = procCPU(pid)
	}
	return m
}

func (m meter) finish(r *scanRun) {
	r.Busy, r.CassCPU, r.NATSCPU = m.busy.percent(), -1, -1
	if cpu, err := procCPU(m.cassPID); m.cassPID > 0 && err == nil {
		r.CassCPU = cpu - m.cass0
	}
	if cpu, err := procCPU(m.natsPID); m.natsPID > 0 && err == nil {
		r.NATSCPU = cpu - m.nats0
	}
}

// finish fills in the rates of a run of the whole table; peak is the child's VmHWM in MiB.
func (r *scanRun) finish(rows int, u usage, peak float64) {
	r.CPU, r.MaxRSSMiB = u.CPUSeconds, peak
	r.Rate = float64(rows) / r.Seconds
	r.CPUPer1k = r.CPU / float64(rows) * 1e6
}

// runSingle runs the baseline, `ferry-bench scan-select`, as a child process.
func (sb *scanBench) runSingle(ctx context.Context) (*scanRun, error) {
	logf("== single SELECT key FROM %s, page size %d", sb.target.Table, sb.o.BaselinePage)
	return sb.runWorker(ctx, "single", "single SELECT",
		fmt.Sprintf("SELECT key FROM %s (page size %d)", sb.target.Table, sb.o.BaselinePage),
		"scan-select", "--page-size", strconv.Itoa(sb.o.BaselinePage))
}

// runRangesOnly reads the table as ferry does, by token ranges in parallel, but publishes nothing.
func (sb *scanBench) runRangesOnly(ctx context.Context, concurrency int) (*scanRun, error) {
	logf("== token ranges of %s, %d in parallel, page size %d, no NATS", sb.target.Table, concurrency, ferryScanPageSize)
	return sb.runWorker(ctx, "ranges", fmt.Sprintf("token ranges, no NATS, c%d", concurrency),
		fmt.Sprintf("SELECT token(key), key FROM %s WHERE token(key) > ? AND token(key) <= ? (ferry's ranges, %d in parallel, page size %d)",
			sb.target.Table, concurrency, ferryScanPageSize),
		"scan-ranges", "--concurrency", strconv.Itoa(concurrency), "--page-size", strconv.Itoa(ferryScanPageSize))
}

// runWorker runs a worker subcommand of this binary as a child process and measures it.
func (sb *scanBench) runWorker(ctx context.Context, file, name, command string, args ...string) (*scanRun, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	out := filepath.Join(sb.dir, file+".json")
	args = append([]string{self, args[0], "--config", sb.cfg, "--out", out}, args[1:]...)
	m := sb.startMeter()
	c, err := startLogged(ctx, sb.dir, file, childEnv(), args...)
	if err != nil {
		return nil, err
	}
	peak := peakRSS(c)
	if err := c.wait(ctx); err != nil {
		return nil, fmt.Errorf("%w (log %s)", err, filepath.Join(sb.dir, file+".log"))
	}
	r := &scanRun{Name: name, Command: command, Seconds: time.Since(c.start).Seconds()}
	m.finish(r)
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var res struct{ Rows int64 }
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, err
	}
	r.KeysRead = res.Rows
	r.finish(sb.o.Rows, c.usage(), peak())
	if res.Rows != int64(sb.o.Rows) {
		return nil, fmt.Errorf("%s read %d rows, not %d: drop %s and run again", name, res.Rows, sb.o.Rows, scanKeyspace+".filled")
	}
	logf("%s: %d rows in %.1fs, %.0f rows/s, %.1f CPU s, peak RSS %.0f MiB, Cassandra %.1f CPU s",
		name, r.KeysRead, r.Seconds, r.Rate, r.CPU, r.MaxRSSMiB, r.CassCPU)
	return r, nil
}

// producerArgs is `ferry producer --scan` for job, with the run's knobs.
func (sb *scanBench) producerArgs(job, metricsAddr string, spec scanRunSpec) []string {
	args := []string{sb.o.Ferry, "--job", job, "--config", sb.cfg, "--nats", sb.o.NATS}
	if metricsAddr != "" {
		args = append(args, "--metrics-addr", metricsAddr)
	}
	args = append(args, "producer", "--scan", "--scan-concurrency", strconv.Itoa(spec.concurrency))
	if spec.pageSize > 0 {
		args = append(args, "--scan-page-size", strconv.Itoa(spec.pageSize))
	}
	if spec.inFlight > 0 {
		args = append(args, "--in-flight", strconv.Itoa(spec.inFlight))
	}
	return args
}

// withJob creates job's streams, runs f, and deletes them.
func (sb *scanBench) withJob(ctx context.Context, job string, f func() error) error {
	base := []string{sb.o.Ferry, "--job", job, "--config", sb.cfg, "--nats", sb.o.NATS, "setup"}
	if err := ferryOnce(ctx, base...); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := ferryOnce(dctx, append(base, "--delete", "--yes")...); err != nil {
			logf("warning: %v", err)
		}
	}()
	return f()
}

var finishedLine = regexp.MustCompile(`producer finished.* read=(\d+) published=(\d+) duplicates=(\d+)`)

// producerTotals reads the counts of the producer's last "producer finished" log line.
func producerTotals(log string) (read, published, duplicates int64, err error) {
	raw, err := os.ReadFile(log)
	if err != nil {
		return 0, 0, 0, err
	}
	all := finishedLine.FindAllSubmatch(raw, -1)
	if all == nil {
		return 0, 0, 0, fmt.Errorf("no \"producer finished\" line in %s", log)
	}
	m := all[len(all)-1]
	read, _ = strconv.ParseInt(string(m[1]), 10, 64)
	published, _ = strconv.ParseInt(string(m[2]), 10, 64)
	duplicates, _ = strconv.ParseInt(string(m[3]), 10, 64)
	return read, published, duplicates, nil
}

// runFerry scans the table with `ferry producer --scan` under a fresh job, profiling it.
func (sb *scanBench) runFerry(ctx context.Context, spec scanRunSpec) (*scanRun, error) {
	name := fmt.Sprintf("ferry-c%d", spec.concurrency)
	if spec.pageSize > 0 {
		name += fmt.Sprintf("-p%d", spec.pageSize)
	}
	if spec.inFlight > 0 {
		name += fmt.Sprintf("-if%d", spec.inFlight)
	}
	job := sb.id + "-" + name
	logf("== %s (job %s)", name, job)
	var r *scanRun
	err := sb.withJob(ctx, job, func() error {
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := sb.producerArgs(job, addr, spec)
		m := sb.startMeter()
		c, err := startLogged(ctx, sb.dir, name, childEnv(), args...)
		if err != nil {
			return err
		}
		peak := peakRSS(c)
		defer c.stop(30 * time.Second)
		prof := newProfiler(ctx, filepath.Join(sb.prof, name), sb.o.ProfileSeconds)
		procs, addrs := map[string]*child{"producer": c}, map[string]string{"producer": addr}
		keys := bus.For(job).Keys
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for !c.exited() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
			if !prof.started && time.Since(c.start) > 2*time.Second {
				prof.cpu(addrs, procs)
			}
			if time.Since(last) >= 5*time.Second {
				last = time.Now()
				if n, err := streamMsgs(ctx, sb.js, keys); err == nil {
					logf("  %s: %d of %d keys in KEYS", name, n, sb.o.Rows)
				}
			}
		}
		log := filepath.Join(sb.dir, name+".log")
		if err := c.wait(ctx); err != nil {
			return fmt.Errorf("%w (log %s)", err, log)
		}
		r = &scanRun{Name: name, Command: strings.Join(args[1:], " "), Seconds: time.Since(c.start).Seconds()}
		m.finish(r)
		prof.wait()
		r.finish(sb.o.Rows, c.usage(), peak())
		tops, notes := prof.tops(ctx)
		r.Profile, r.Notes = tops["producer"], strings.Join(notes, "; ")
		if spec.failed != "" {
			r.Notes = strings.TrimPrefix(r.Notes+"; with the default --in-flight 1024 it failed: "+spec.failed, "; ")
		}
		if r.KeysRead, _, r.Duplicates, err = producerTotals(log); err != nil {
			return err
		}
		if r.KeysInKEYS, err = streamMsgs(ctx, sb.js, keys); err != nil {
			return err
		}
		logf("%s: read %d, %d in KEYS, %.1fs, %.0f keys/s, %.1f CPU s, peak RSS %.0f MiB, Cassandra %.1f CPU s, nats %.1f CPU s",
			name, r.KeysRead, r.KeysInKEYS, r.Seconds, r.Rate, r.CPU, r.MaxRSSMiB, r.CassCPU, r.NATSCPU)
		if r.KeysInKEYS != uint64(sb.o.Rows) {
			return fmt.Errorf("KEYS holds %d keys, not %d", r.KeysInKEYS, sb.o.Rows)
		}
		return nil
	})
	return r, err
}

// runRestart starts a scan with ferry's defaults, SIGKILLs it when KEYS holds half the rows, and
// runs it again to the end: what the second run reads beyond the keys missing is the re-read.
func (sb *scanBench) runRestart(ctx context.Context) (*scanRestart, error) {
	const name = "restart"
	job := sb.id + "-" + name
	spec := scanRunSpec{concurrency: ferryScanConcurrency}
	logf("== %s (job %s): kill at %d keys in KEYS, then run again", name, job, sb.o.Rows/2)
	res := &scanRestart{Bound: ferryScanConcurrency * ferryScanPageSize}
	err := sb.withJob(ctx, job, func() error {
		keys := bus.For(job).Keys
		args := sb.producerArgs(job, "", spec)
		c, err := startLogged(ctx, sb.dir, name+"-1", childEnv(), args...)
		if err != nil {
			return err
		}
		defer c.stop(30 * time.Second)
		for {
			if c.exited() {
				return fmt.Errorf("the first run ended before half the keys were in KEYS (log %s)", filepath.Join(sb.dir, name+"-1.log"))
			}
			if n, err := streamMsgs(ctx, sb.js, keys); err == nil && n >= uint64(sb.o.Rows/2) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		_ = c.cmd.Process.Kill()
		<-c.done
		res.KilledAtSeconds = time.Since(c.start).Seconds()
		time.Sleep(time.Second) // anything the server still had in its socket buffer is stored by now
		if res.StoredAtKill, err = streamMsgs(ctx, sb.js, keys); err != nil {
			return err
		}
		if res.Checkpointed, err = checkpointedKeys(ctx, sb.js, bus.For(job).KV); err != nil {
			return err
		}
		logf("  killed after %.1fs: %d keys in KEYS, %d under checkpoints", res.KilledAtSeconds, res.StoredAtKill, res.Checkpointed)

		m := sb.startMeter()
		c2, err := startLogged(ctx, sb.dir, name+"-2", childEnv(), args...)
		if err != nil {
			return err
		}
		peak := peakRSS(c2)
		defer c2.stop(30 * time.Second)
		log := filepath.Join(sb.dir, name+"-2.log")
		if err := c2.wait(ctx); err != nil {
			return fmt.Errorf("%w (log %s)", err, log)
		}
		r := &res.Second
		*r = scanRun{Name: "restart, second run", Command: strings.Join(args[1:], " "), Seconds: time.Since(c2.start).Seconds()}
		m.finish(r)
		r.finish(sb.o.Rows, c2.usage(), peak())
		if r.KeysRead, _, r.Duplicates, err = producerTotals(log); err != nil {
			return err
		}
		r.Rate = float64(r.KeysRead) / r.Seconds // it read only what was left
		r.CPUPer1k = r.CPU / float64(max(r.KeysRead, 1)) * 1e6
		if res.Final, err = streamMsgs(ctx, sb.js, keys); err != nil {
			return err
		}
		r.KeysInKEYS = res.Final
		res.ReRead = int64(res.StoredAtKill) + r.KeysRead - int64(sb.o.Rows)
		res.WithinBound = res.ReRead <= int64(res.Bound)
		logf("%s: second run read %d in %.1fs (%d duplicates); re-read %d (bound %d); %d in KEYS",
			name, r.KeysRead, r.Seconds, r.Duplicates, res.ReRead, res.Bound, res.Final)
		if res.Final != uint64(sb.o.Rows) {
			return fmt.Errorf("KEYS holds %d keys after the restart, not %d", res.Final, sb.o.Rows)
		}
		return nil
	})
	return res, err
}

// checkpointedKeys sums the keys of every scan range checkpoint in the job's KV bucket.
func checkpointedKeys(ctx context.Context, js jetstream.JetStream, bucket string) (int64, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return 0, err
	}
	lister, err := kv.ListKeysFiltered(ctx, "scan.>")
	if err != nil {
		return 0, err
	}
	var sum int64
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			return 0, err
		}
		var cp struct {
			Keys *int64 `json:"keys"`
		}
		if json.Unmarshal(e.Value(), &cp) == nil && cp.Keys != nil { // the plan has no "keys"
			sum += *cp.Keys
		}
	}
	return sum, nil
}

func (rep *scanReport) markdown(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ferry producer --scan benchmark %s\n\n", name)
	fmt.Fprintf(&b, "`make bench-scan` on %s, commit %s, %d cores, %s. Table `%s`: %d rows, keys `t01` + 24 hex + `.jpg`, "+
		"100-byte blobs, replicated to dc1 and dc2; every run reads dc1 (one node) at LOCAL_ONE. Each run is a child process "+
		"(wall time from start to exit, connections included; CPU from the kernel's rusage, peak RSS its VmHWM). The single SELECT "+
		"is one unsplit `SELECT key` paged by gocql; ferry is `ferry producer --scan` under a fresh job, publishing every key "+
		"to KEYS on the local nats-server and checkpointing each range after every page. Cassandra and nats-server CPU are "+
		"what those processes used during the run.\n\n",
		rep.Date, rep.Commit, rep.Cores, rep.GoVersion, rep.Table, rep.Rows)
	b.WriteString("| run | wall | keys/s | × single | CPU | CPU ms / 1k keys | peak RSS | Cassandra CPU | nats CPU | CPU floor | machine busy |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rep.Runs {
		ratio := "1.00"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("**%.2f**", r.Ratio)
		}
		floor := (r.CPU + max(r.CassCPU, 0) + max(r.NATSCPU, 0)) / float64(rep.Cores)
		fmt.Fprintf(&b, "| %s | %.1f s | %.0f | %s | %.1f s | %.1f | %.0f MiB | %.1f s | %.1f s | %.1f s | %.0f%% |\n",
			r.Name, r.Seconds, r.Rate, ratio, r.CPU, r.CPUPer1k, r.MaxRSSMiB, r.CassCPU, r.NATSCPU, floor, r.Busy)
	}
	b.WriteString("\nTarget: ferry ≥ 2.00 × the single SELECT's keys/s. Every ferry run left exactly the row count in KEYS. " +
		"CPU floor: the CPU of the run's process, the Cassandra node and nats-server divided by the cores, the shortest wall " +
		"time the machine allows for that work; a wall time near it means the run was CPU-bound.\n")
	for _, r := range rep.Runs[1:] {
		fmt.Fprintf(&b, "\n`ferry %s`\n", r.Command)
		if r.Profile != "" {
			fmt.Fprintf(&b, "\nCPU profile of %s:\n\n```\n%s```\n", r.Name, r.Profile)
		}
		if r.Notes != "" {
			fmt.Fprintf(&b, "\nNote: %s\n", r.Notes)
		}
	}
	if x := rep.Restart; x != nil {
		fmt.Fprintf(&b, "\n## Restart\n\n`ferry producer --scan` (defaults) SIGKILLed after %.1f s with %d keys in KEYS (%d under range "+
			"checkpoints), then run again: it read %d keys in %.1f s (%d of them duplicates the stream dropped by Nats-Msg-Id). "+
			"Re-read = %d + %d − %d = **%d** keys; bound: scan concurrency × page size = %d: %s. KEYS held %d keys at the end.\n",
			x.KilledAtSeconds, x.StoredAtKill, x.Checkpointed, x.Second.KeysRead, x.Second.Seconds, x.Second.Duplicates,
			x.StoredAtKill, x.Second.KeysRead, rep.Rows, x.ReRead, x.Bound, map[bool]string{true: "within", false: "OVER"}[x.WithinBound], x.Final)
	}
	if rep.Delta != nil {
		rep.Delta.markdown(&b, rep.Rows)
	}
	return b.String()
}
