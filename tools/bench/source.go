package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
)

// SourceConfig is `ferry bench source`'s flags.
type SourceConfig struct {
	Keys   string // key list, one key a line; "-" is stdin
	Sample int    // keys kept from it
	Target string // one target by name; empty: every target in turn
	Load   load
	JSON   bool
	Seed   uint64 // sampling and key choice; 0: random (tests fix it)
}

// SourceReport is what `ferry bench source` measured.
type SourceReport struct {
	Keys        string         `json:"keys"`
	KeyLines    int64          `json:"key_lines"`
	Sampled     int            `json:"sampled"`
	Concurrency int            `json:"concurrency"`
	Targets     []TargetResult `json:"targets"`
	Interrupted bool           `json:"interrupted,omitempty"`
}

// TargetResult is one read target's measurement. Reads counts every answered read (found, not
// found, error); Latency covers the same reads.
type TargetResult struct {
	Target       string  `json:"target"`
	Reads        int64   `json:"reads"`
	Found        int64   `json:"found"`
	NotFound     int64   `json:"not_found"`
	Errors       int64   `json:"errors"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	ReadsPerSec  float64 `json:"reads_per_sec"`
	MBPerSec     float64 `json:"mb_per_sec"`
	Latency      Latency `json:"latency"`
	FirstError   string  `json:"first_error,omitempty"`
	Unmeasurable string  `json:"unmeasurable,omitempty"` // the target could not be opened
}

// RunSource samples the key list and reads random keys of the sample from each target in turn.
// When ctx ends it returns what it measured so far, marked Interrupted, and no error.
func RunSource(ctx context.Context, job *config.Job, cfg SourceConfig, log *slog.Logger) (SourceReport, error) {
	rep := SourceReport{Keys: cfg.Keys, Concurrency: cfg.Load.Concurrency}
	targets, err := pickTargets(job.Source.Targets, cfg.Target)
	if err != nil {
		return rep, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	start := time.Now()
	sample, err := sampleKeys(cfg.Keys, cfg.Sample, rand.New(rand.NewPCG(seed, 0)))
	if err != nil {
		return rep, err
	}
	rep.KeyLines, rep.Sampled = sample.Lines, len(sample.Keys)
	if len(sample.Keys) == 0 {
		return rep, fmt.Errorf("--keys %s: no keys in it", cfg.Keys)
	}
	log.Info("bench source: keys sampled", "keys", len(sample.Keys), "of", sample.Lines,
		"skipped_long_lines", sample.Skipped, "elapsed", time.Since(start).Round(time.Millisecond))

	for _, t := range targets {
		if ctx.Err() != nil {
			rep.Interrupted = true
			break
		}
		res := benchTarget(ctx, t, sample.Keys, cfg.Load, seed, log)
		rep.Targets = append(rep.Targets, res)
	}
	rep.Interrupted = rep.Interrupted || ctx.Err() != nil
	return rep, nil
}

func pickTargets(all []config.Target, name string) ([]config.Target, error) {
	if name == "" {
		return all, nil
	}
	var names []string
	for _, t := range all {
		if t.Name == name {
			return []config.Target{t}, nil
		}
		names = append(names, t.Name)
	}
	return nil, config.Invalid(fmt.Errorf("--target %q: the job file's targets are %q", name, names))
}

// benchTarget reads random keys of the sample from one target for the configured load.
func benchTarget(ctx context.Context, t config.Target, keys []string, l load, seed uint64, log *slog.Logger) TargetResult {
	res := TargetResult{Target: t.Name}
	r, err := cass.NewReader(ctx, t, l.Concurrency)
	if err != nil {
		log.Error("bench source: target not measured", "target", t.Name, "err", err)
		res.Unmeasurable = err.Error()
		return res
	}
	defer r.Close()
	log.Info("bench source: reading", "target", t.Name, "concurrency", l.Concurrency,
		"duration", l.Duration, "count", l.Count)

	_, elapsed, total := l.run(ctx, l.Count, func(tl *tally, seq int64) {
		// The n-th read's key follows from the seed and n alone, whatever the scheduling (the
		// modulo's bias is below 1e-15 for any sample size).
		key := keys[rand.NewPCG(seed, uint64(seq)+1).Uint64()%uint64(len(keys))]
		begin := time.Now()
		b, err := r.Read(ctx, key)
		d := time.Since(begin)
		if ctx.Err() != nil {
			return // cut short by Ctrl-C: neither an answer nor a failure of the target
		}
		tl.hist.record(d)
		switch {
		case err == nil:
			tl.ok++
			tl.bytes += int64(len(b))
		case errors.Is(err, cass.ErrNotFound):
			tl.notFound++
		default:
			tl.fail(err)
		}
	})
	res.Found, res.NotFound, res.Errors, res.Bytes = total.ok, total.notFound, total.errors, total.bytes
	res.Reads = res.Found + res.NotFound + res.Errors
	res.Seconds = elapsed.Seconds()
	res.ReadsPerSec = perSec(res.Reads, elapsed)
	res.MBPerSec = perSec(res.Bytes, elapsed) / 1e6
	res.Latency = total.hist.summary()
	if total.firstErr != nil {
		res.FirstError = total.firstErr.Error()
		log.Warn("bench source: read errors", "target", t.Name, "errors", res.Errors, "first", total.firstErr)
	}
	return res
}

func perSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
