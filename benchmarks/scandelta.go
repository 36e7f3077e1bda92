package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
)

// scanDelta is the cost of a delta pass (`ferry producer --scan --since 1`) after a fraction of
// the rows were rewritten, against the full pass before it, over several runs.
type scanDelta struct {
	Fraction  float64    `json:"rewritten_fraction"`
	Rewritten int        `json:"rewritten_rows"`
	Runs      []deltaRun `json:"runs"`
	FullCmd   string     `json:"full_command"`
	DeltaCmd  string     `json:"delta_command"`
}

// deltaRun is one job: a full pass, the rewrite, a delta pass since the full one.
type deltaRun struct {
	Full  scanRun `json:"full"`
	Delta scanRun `json:"delta"`
	// The Cassandra side alone, ferry's ranges and concurrency with nothing published: the key
	// scan of a full pass and the key + writetime scan of a delta pass.
	Keys           scanRun `json:"keys_no_nats"`
	KeysWritetime  scanRun `json:"keys_writetime_no_nats"`
	RewriteSeconds float64 `json:"rewrite_seconds"`
	Published      int64   `json:"delta_published"`
}

// runDelta measures o.DeltaRuns full passes and the delta pass after each, every run under a
// fresh job. Run r rewrites the rows i with i mod step = r (step = 1 / fraction) with the
// same bytes and a new writetime (the client's clock, as ferry's: the same machine), so the delta
// pass since pass 1 with no margin finds exactly those.
func (sb *scanBench) runDelta(ctx context.Context) (*scanDelta, error) {
	step := int(math.Round(1 / sb.o.DeltaFraction))
	res := &scanDelta{Fraction: 1 / float64(step)}
	for r := range sb.o.DeltaRuns {
		name := fmt.Sprintf("delta-%d", r+1)
		job := sb.id + "-" + name
		logf("== %s (job %s): full pass, rewrite 1/%d of the rows, delta pass since pass 1", name, job, step)
		var run deltaRun
		err := sb.withJob(ctx, job, func() error {
			spec := scanRunSpec{concurrency: ferryScanConcurrency}
			// No fetcher drains KEYS here: the full pass's keys stay in it, and the delta pass
			// must not wait below the default high-water mark (1,000,000) for them.
			full := append(sb.producerArgs(job, "", spec), "--high-water", strconv.Itoa(4*sb.o.Rows))
			f, err := sb.measureProducer(ctx, name+"-full", "full pass", full)
			if err != nil {
				return err
			}
			run.Full = *f
			if f.KeysInKEYS != uint64(sb.o.Rows) {
				return fmt.Errorf("full pass: KEYS holds %d keys, not %d", f.KeysInKEYS, sb.o.Rows)
			}
			start := time.Now()
			n, err := rewriteScanRows(ctx, sb, step, r%step)
			if err != nil {
				return err
			}
			run.RewriteSeconds = time.Since(start).Seconds()
			res.Rewritten = n
			logf("  rewrote %d rows in %.1fs", n, run.RewriteSeconds)
			waitQuiet(ctx, time.Minute)
			delta := append(slices.Clone(full), "--since", "1", "--since-margin", "0s")
			d, err := sb.measureProducer(ctx, name+"-delta", "delta pass", delta)
			if err != nil {
				return err
			}
			run.Delta = *d
			run.Published = int64(d.KeysInKEYS) - int64(f.KeysInKEYS)
			res.FullCmd, res.DeltaCmd = strings.Join(full[1:], " "), strings.Join(delta[1:], " ")
			if run.Published != int64(n) {
				return fmt.Errorf("the delta pass published %d keys, %d rows were rewritten", run.Published, n)
			}
			c, p := strconv.Itoa(ferryScanConcurrency), strconv.Itoa(ferryScanPageSize)
			k, err := sb.runWorker(ctx, name+"-keys", "key scan, no NATS", "SELECT token(key), key … (ferry's ranges)",
				"scan-ranges", "--concurrency", c, "--page-size", p)
			if err != nil {
				return err
			}
			w, err := sb.runWorker(ctx, name+"-writetime", "key + writetime scan, no NATS", "SELECT token(key), key, writetime(data) … (ferry's ranges)",
				"scan-ranges", "--concurrency", c, "--page-size", p, "--writetime")
			if err != nil {
				return err
			}
			run.Keys, run.KeysWritetime = *k, *w
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		res.Runs = append(res.Runs, run)
	}
	return res, nil
}

// measureProducer runs one `ferry producer` to its end and measures it; the rates are over every
// row of the table (both passes read them all).
func (sb *scanBench) measureProducer(ctx context.Context, file, name string, args []string) (*scanRun, error) {
	m := sb.startMeter()
	c, err := startLogged(ctx, sb.dir, file, childEnv(), args...)
	if err != nil {
		return nil, err
	}
	peak := peakRSS(c)
	defer c.stop(30 * time.Second)
	log := filepath.Join(sb.dir, file+".log")
	if err := c.wait(ctx); err != nil {
		return nil, fmt.Errorf("%w (log %s)", err, log)
	}
	r := &scanRun{Name: name, Command: strings.Join(args[1:], " "), Seconds: time.Since(c.start).Seconds()}
	m.finish(r)
	r.finish(sb.o.Rows, c.usage(), peak())
	if r.KeysRead, _, r.Duplicates, err = producerTotals(log); err != nil {
		return nil, err
	}
	job := args[slices.Index(args, "--job")+1]
	if r.KeysInKEYS, err = streamMsgs(ctx, sb.js, bus.For(job).Keys); err != nil {
		return nil, err
	}
	logf("%s: read %d, %d in KEYS, %.1fs, %.0f keys/s, %.1f CPU s, Cassandra %.1f CPU s, nats %.1f CPU s",
		file, r.KeysRead, r.KeysInKEYS, r.Seconds, r.Rate, r.CPU, r.CassCPU, r.NATSCPU)
	if r.KeysRead != int64(sb.o.Rows) {
		return nil, fmt.Errorf("%s read %d keys, not %d (log %s)", name, r.KeysRead, sb.o.Rows, log)
	}
	return r, nil
}

// rewriteScanRows writes rows i with i mod step = offset again, same bytes, new writetime.
func rewriteScanRows(ctx context.Context, sb *scanBench, step, offset int) (int, error) {
	c, err := cass.ClusterConfig(sb.target, sb.o.FillConcurrency)
	if err != nil {
		return 0, err
	}
	c.HostFilter = nil // both DCs through any node, as the fill
	c.Consistency = gocql.LocalOne
	c.Timeout = 20 * time.Second
	s, err := cass.Open(ctx, sb.target, c)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	var done atomic.Int64
	if err := writeScanRows(ctx, s, sb.target.Table, sb.o.FillConcurrency, sb.o.Rows, offset, step, "rewrite", &done); err != nil {
		return 0, err
	}
	return int(done.Load()), nil
}

// markdown is the report's section on the delta pass.
func (d *scanDelta) markdown(b *strings.Builder, rows int) {
	var fw, fr, dw, dr, ratio []float64
	for _, r := range d.Runs {
		fw, fr = append(fw, r.Full.Seconds), append(fr, r.Full.Rate)
		dw, dr = append(dw, r.Delta.Seconds), append(dr, r.Delta.Rate)
		ratio = append(ratio, r.Delta.Seconds/r.Full.Seconds)
	}
	fmt.Fprintf(b, "\n## Delta pass\n\nEach of %d runs, under a fresh job: a full pass (`ferry producer --scan`, defaults), then %d rows "+
		"(%.0f%%) written again with the same bytes and a newer writetime, then a delta pass since pass 1 with no margin "+
		"(`--since 1 --since-margin 0s`): it reads every key with `writetime(data)` and publishes those at or after pass 1's "+
		"start. keys/s is the %d rows enumerated over the wall time. Median (least–most):\n\n", len(d.Runs), d.Rewritten, 100*d.Fraction, rows)
	b.WriteString("| pass | wall | keys/s | CPU | Cassandra CPU | nats CPU | published |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(name string, wall, rate spread, runs []scanRun, published string) {
		var cpu, cass, nats []float64
		for _, r := range runs {
			cpu, cass, nats = append(cpu, r.CPU), append(cass, r.CassCPU), append(nats, r.NATSCPU)
		}
		fmt.Fprintf(b, "| %s | %.1f s (%.1f–%.1f) | %.0f (%.0f–%.0f) | %.1f s | %.1f s | %.1f s | %s |\n", name,
			wall.Median, wall.Min, wall.Max, rate.Median, rate.Min, rate.Max,
			spreadOf(cpu).Median, spreadOf(cass).Median, spreadOf(nats).Median, published)
	}
	var full, delta, keys, wts []scanRun
	for _, r := range d.Runs {
		full, delta, keys, wts = append(full, r.Full), append(delta, r.Delta), append(keys, r.Keys), append(wts, r.KeysWritetime)
	}
	row("full pass (ferry)", spreadOf(fw), spreadOf(fr), full, fmt.Sprint(rows))
	row(fmt.Sprintf("delta pass (ferry), %.0f%% rewritten", 100*d.Fraction), spreadOf(dw), spreadOf(dr), delta, fmt.Sprint(d.Rewritten))
	side := func(name string, runs []scanRun) {
		var w, r []float64
		for _, x := range runs {
			w, r = append(w, x.Seconds), append(r, x.Rate)
		}
		row(name, spreadOf(w), spreadOf(r), runs, "-")
	}
	side("key scan, no NATS", keys)
	side("key + writetime scan, no NATS", wts)
	r := spreadOf(ratio)
	var wr []float64
	for _, x := range d.Runs {
		wr = append(wr, x.KeysWritetime.Seconds/x.Keys.Seconds)
	}
	w := spreadOf(wr)
	fmt.Fprintf(b, "\nDelta pass wall time / full pass wall time: median **%.2f** (%.2f–%.2f). Reading writetime with the keys, "+
		"Cassandra side alone (ferry's %d ranges at once, pages of %d, nothing published): **%.2f** (%.2f–%.2f) × the key-only scan's wall time.\n\n`ferry %s`\n\n`ferry %s`\n",
		r.Median, r.Min, r.Max, ferryScanConcurrency, ferryScanPageSize, w.Median, w.Min, w.Max, d.FullCmd, d.DeltaCmd)
}
