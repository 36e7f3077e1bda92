package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// producerRSSLimit is the peak RSS the producer must stay under on a 10,000,000-line key file.
const producerRSSLimit = 64 << 10 // KiB

func scaleCommand() *cli.Command {
	var o options
	var sizes string
	var lines int
	return &cli.Command{
		Name:  "scale",
		Usage: "ferry run at growing key counts, and the producer alone on a huge key file (make bench-scale)",
		Flags: append(o.flags(),
			&cli.StringFlag{Name: "sizes", Value: "10000,200000", EnvVars: []string{"BENCH_SCALE_KEYS"}, Destination: &sizes, Usage: "key counts for ferry run, comma-separated"},
			&cli.IntFlag{Name: "producer-lines", Value: 10_000_000, EnvVars: []string{"BENCH_PRODUCER_LINES"}, Destination: &lines, Usage: "lines of the generated key file the producer publishes (0: skip)"},
		),
		Action: func(c *cli.Context) error {
			if err := o.validate(); err != nil {
				return err
			}
			ns, err := parseKeyCounts(sizes)
			if err != nil {
				return err
			}
			b, err := newBench(o)
			if err != nil {
				return err
			}
			return b.scale(c.Context, ns, lines)
		},
	}
}

// seedAndClean seeds the first n keys (if not yet) and empties the benchmark's part of the bucket.
func (b *bench) seedAndClean(ctx context.Context, n int) error {
	if _, err := b.ensureSeeded(ctx, n); err != nil {
		return err
	}
	return b.cleanObjects(ctx, benchPrefix+"/")
}

// measure runs variant v (ferry-split, or a ferry run) on the first n keys, with how busy the
// machine was meanwhile, and deletes its objects afterwards.
func (b *bench) measure(ctx context.Context, v, keys string, n int, profDir string) (*variantResult, error) {
	logf("== %s, %d keys", v, n)
	busy := startBusy()
	var r *variantResult
	var err error
	if v == vSplit {
		r, err = b.runSplit(ctx, keys, n, profDir)
	} else {
		r, err = b.runFerry(ctx, v, keys, n, profDir)
	}
	if err != nil {
		return nil, fmt.Errorf("%s at %d keys: %w", v, n, err)
	}
	r.MachineBusy = busy.percent()
	logf("%s", r.summary())
	return r, b.cleanObjects(ctx, b.prefix(v)+"/")
}

// parseKeyCounts reads --sizes: "10000,200000".
func parseKeyCounts(s string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--sizes: %q is not a key count", f)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// producerResult is the producer alone on a generated key file.
type producerResult struct {
	Lines       int      `json:"lines"`
	Published   uint64   `json:"published"`
	Seconds     float64  `json:"seconds"`
	KeysPerSec  float64  `json:"keys_per_s"`
	CPUSeconds  float64  `json:"cpu_seconds"`
	MaxRSSMiB   float64  `json:"peak_rss_mib"`
	UnderLimit  bool     `json:"under_64_mib"`
	ProfileTop  string   `json:"cpu_profile_top,omitempty"`
	ProfileNote []string `json:"profile_notes,omitempty"`
}

type scaleReport struct {
	Date        string          `json:"date"`
	Commit      string          `json:"commit"`
	Cores       int             `json:"cores"`
	Concurrency int             `json:"concurrency"`
	Runs        []variantResult `json:"ferry_run"`
	Growth      float64         `json:"verified_rate_largest_over_smallest"`
	Producer    *producerResult `json:"producer,omitempty"`
}

func (b *bench) scale(ctx context.Context, sizes []int, lines int) error {
	logf("ferry bench-scale %s: ferry run at %v keys, producer on %d lines; %d cores, commit %s; logs in %s",
		b.id, sizes, lines, runtime.NumCPU(), b.commit, b.dir)
	rep := scaleReport{Date: time.Now().UTC().Format(time.RFC3339), Commit: b.commit, Cores: runtime.NumCPU(), Concurrency: b.o.Concurrency}
	name := time.Now().Format("2006-01-02") + "-" + b.commit + "-scale"
	if len(sizes) > 0 {
		if err := b.seedAndClean(ctx, slices.Max(sizes)); err != nil {
			return err
		}
	}
	for _, n := range sizes {
		keys, err := b.keyFile(n)
		if err != nil {
			return err
		}
		r, err := b.measure(ctx, vRun, keys, n, filepath.Join(b.o.Results, name))
		if err != nil {
			return err
		}
		rep.Runs = append(rep.Runs, *r)
	}
	if k := len(rep.Runs); k > 1 && rep.Runs[0].VerifiedRate > 0 {
		rep.Growth = rep.Runs[k-1].VerifiedRate / rep.Runs[0].VerifiedRate
	}
	if lines > 0 {
		logf("== producer alone, %d lines", lines)
		p, err := b.runProducer(ctx, lines, filepath.Join(b.o.Results, name))
		if err != nil {
			return fmt.Errorf("producer: %w", err)
		}
		rep.Producer = p
	}
	return writeResults(b.o.Results, name, rep.markdown(name), rep)
}

// writeResults prints the markdown report and writes it, and rep as JSON, to dir/name.md|json.
func writeResults(dir, name, text string, rep any) error {
	fmt.Println()
	fmt.Print(text)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := filepath.Join(dir, name+".md")
	if err := os.WriteFile(md, []byte(text), 0o644); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	js := filepath.Join(dir, name+".json")
	if err := os.WriteFile(js, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	logf("report: %s, %s", md, js)
	return nil
}

func (rep *scaleReport) markdown(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ferry scale benchmark %s\n\n%s, commit %s, %d cores, concurrency %d\n\n", name, rep.Date, rep.Commit, rep.Cores, rep.Concurrency)
	if len(rep.Runs) > 0 {
		b.WriteString("| ferry run, keys | files | failed | files/s to all uploaded | files/s to all verified | CPU s / 1k files | peak RSS | Cassandra reads / file | machine busy |\n")
		b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
		for _, r := range rep.Runs {
			fmt.Fprintf(&b, "| %d | %d | %d | %s | %s | %.2f | %s | %.2f | %.0f%% |\n", r.Keys, r.Files, r.Failed,
				rate(r.UploadedRate), rate(r.VerifiedRate), r.CPUPer1k, r.rss(), r.ReadsPerFile, r.MachineBusy)
		}
		if rep.Growth > 0 {
			verdict := "holds"
			if rep.Growth < 0.9 {
				verdict = "FALLS"
			}
			fmt.Fprintf(&b, "\nfiles/s verified, largest over smallest key set: %.2f (%s)\n", rep.Growth, verdict)
		}
		for _, r := range rep.Runs {
			writeProfiles(&b, r, fmt.Sprintf("ferry run, %d keys", r.Keys), name)
		}
	}
	if p := rep.Producer; p != nil {
		verdict := "under"
		if !p.UnderLimit {
			verdict = "OVER"
		}
		fmt.Fprintf(&b, "\nproducer alone: %d lines, %d published in %.1fs (%.0f keys/s), %.1f CPU s, peak RSS %.1f MiB: %s the 64 MiB limit\n",
			p.Lines, p.Published, p.Seconds, p.KeysPerSec, p.CPUSeconds, p.MaxRSSMiB, verdict)
		if p.ProfileTop != "" {
			fmt.Fprintf(&b, "\n```\n%s```\n", p.ProfileTop)
		}
		for _, n := range p.ProfileNote {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// runProducer publishes a generated key file of lines keys (none of them seeded: nothing consumes
// them) with `ferry producer` alone, measures it, and deletes the job.
func (b *bench) runProducer(ctx context.Context, lines int, profDir string) (*producerResult, error) {
	keys, err := b.generatedKeys(lines)
	if err != nil {
		return nil, err
	}
	job := b.id + "-producer"
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if err := ferryOnce(dctx, append(b.ferryArgs(job, b.o.Config, "", true), "setup", "--delete", "--yes")...); err != nil {
			logf("warning: %v", err)
		}
	}()
	nc, js, err := bus.Connect(ctx, b.o.NATS, "bench")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append(b.ferryArgs(job, b.o.Config, addr, true), "producer", "--keys", keys, "--high-water", "20000000")
	c, err := startLogged(ctx, b.dir, "producer", childEnv(), args...)
	if err != nil {
		return nil, err
	}
	defer c.stop(45 * time.Second)
	prof := newProfiler(ctx, profDir, b.o.ProfileSeconds)
	procs := map[string]*child{"producer": c}
	addrs := map[string]string{"producer": addr}
	names := bus.For(job)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastProgress := time.Now()
	for !c.exited() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		if !prof.started && time.Since(c.start) > 3*time.Second {
			prof.cpu(addrs, procs)
		}
		if time.Since(lastProgress) >= 10*time.Second {
			lastProgress = time.Now()
			if n, err := streamMsgs(ctx, js, names.Keys); err == nil {
				logf("  producer: %d of %d keys in %s", n, lines, names.Keys)
			}
		}
	}
	elapsed := time.Since(c.start)
	prof.wait()
	if err := c.wait(ctx); err != nil {
		return nil, fmt.Errorf("%w (log %s)", err, filepath.Join(b.dir, "producer.log"))
	}
	u := c.usage()
	p := &producerResult{Lines: lines, Seconds: elapsed.Seconds(), KeysPerSec: float64(lines) / elapsed.Seconds(),
		CPUSeconds: u.CPUSeconds, MaxRSSMiB: float64(u.MaxRSSKiB) / 1024, UnderLimit: u.MaxRSSKiB < producerRSSLimit}
	p.Published, _ = streamMsgs(ctx, js, names.Keys)
	tops, notes := prof.tops(ctx)
	p.ProfileTop, p.ProfileNote = tops["producer"], notes
	return p, nil
}

// generatedKeys writes (once) a key file of lines keys in the seed's format.
func (b *bench) generatedKeys(lines int) (string, error) {
	path := filepath.Join(b.o.Work, fmt.Sprintf("keys-generated-%d.txt", lines))
	keyLen := len(seed.Key(b.o.Seed, 0)) + 1
	if st, err := os.Stat(path); err == nil && st.Size() == int64(lines*keyLen) {
		return path, nil
	}
	logf("writing %d generated keys to %s", lines, path)
	// Absent keys of the seed: none of them is in Cassandra, and nothing reads them.
	return path, writeLines(path, func(emit func(string)) {
		for i := range lines {
			emit(seed.AbsentKey(b.o.Seed, i))
		}
	})
}
