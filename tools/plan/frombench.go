package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/ferry-migrate/ferry/tools/bench"
)

// `ferry bench source` and `ferry bench dest` measure what the job's Cassandra and bucket serve to
// one client at one concurrency, not what a ferry process does per core, so they cannot replace
// the per-core rates. What they do give: the sampled keys' mean blob size, and each dependency's
// rate and latency, from which the requests in flight the peak needs follow (Little's law).

// Measured is what --from-bench results say next to the plan.
type Measured struct {
	Source *SourceMeasure `json:"source,omitempty"`
	Dest   *DestMeasure   `json:"dest,omitempty"`
}

// SourceMeasure is a `ferry bench source --json` result set against the peak.
type SourceMeasure struct {
	File          string  `json:"file"`
	Target        string  `json:"target"` // the first measured read target: the fetchers read it first
	Concurrency   int     `json:"concurrency"`
	ReadsPerSec   float64 `json:"reads_per_sec"`
	MeanLatencyMS float64 `json:"mean_latency_ms"`
	MeanSize      float64 `json:"mean_size_bytes"` // of the blobs found, all targets; 0: none found
	PeakOverRate  float64 `json:"peak_over_measured"`
	InFlight      float64 `json:"reads_in_flight_at_peak"` // peak reads/s × mean latency
}

// DestMeasure is a `ferry bench dest --json` result, at the size nearest the mean, set against
// the peak's PUT-class and HEAD requests.
type DestMeasure struct {
	File          string  `json:"file"`
	Size          int64   `json:"size"`
	Concurrency   int     `json:"concurrency"`
	PutsPerSec    float64 `json:"puts_per_sec"`
	PutLatencyMS  float64 `json:"put_mean_latency_ms"`
	HeadsPerSec   float64 `json:"heads_per_sec"` // 0: not measured
	HeadLatencyMS float64 `json:"head_mean_latency_ms"`
	PeakPuts      float64 `json:"peak_puts_per_sec"`
	PeakHeads     float64 `json:"peak_heads_per_sec"`
	PutsInFlight  float64 `json:"puts_in_flight_at_peak"`
	HeadsInFlight float64 `json:"heads_in_flight_at_peak"`
}

// benchResult is one --from-bench file: a source or a dest result.
type benchResult struct {
	file   string
	source *bench.SourceReport
	dest   *bench.DestReport
}

// readBench reads a `ferry bench source --json` or `ferry bench dest --json` result.
func readBench(file string) (benchResult, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return benchResult{}, fmt.Errorf("--from-bench: %w", err)
	}
	var kind map[string]json.RawMessage
	if err := json.Unmarshal(b, &kind); err != nil {
		return benchResult{}, fmt.Errorf("--from-bench %s: not JSON (want the output of ferry bench source --json or ferry bench dest --json): %w", file, err)
	}
	r := benchResult{file: file}
	switch {
	case kind["targets"] != nil:
		r.source = &bench.SourceReport{}
		err = json.Unmarshal(b, r.source)
	case kind["sizes"] != nil:
		r.dest = &bench.DestReport{}
		err = json.Unmarshal(b, r.dest)
	default:
		return r, fmt.Errorf("--from-bench %s: neither a ferry bench source nor a ferry bench dest result (no targets, no sizes)", file)
	}
	if err != nil {
		return r, fmt.Errorf("--from-bench %s: %w", file, err)
	}
	return r, nil
}

// sourceMeanSize is the mean size of the blobs a source result found, 0 if it found none.
func sourceMeanSize(r *bench.SourceReport) float64 {
	var found, bytes int64
	for _, t := range r.Targets {
		found += t.Found
		bytes += t.Bytes
	}
	if found == 0 {
		return 0
	}
	return float64(bytes) / float64(found)
}

// measure sets the bench results against the plan.
func measure(p Plan, results []benchResult) (Measured, error) {
	var m Measured
	for _, r := range results {
		switch {
		case r.source != nil:
			if m.Source != nil {
				return m, errors.New("--from-bench: two ferry bench source results; give one")
			}
			s, err := measureSource(p, r)
			if err != nil {
				return m, err
			}
			m.Source = s
		case r.dest != nil:
			if m.Dest != nil {
				return m, errors.New("--from-bench: two ferry bench dest results; give one")
			}
			d, err := measureDest(p, r)
			if err != nil {
				return m, err
			}
			m.Dest = d
		}
	}
	return m, nil
}

func measureSource(p Plan, r benchResult) (*SourceMeasure, error) {
	for _, t := range r.source.Targets {
		if t.Unmeasurable != "" || t.ReadsPerSec <= 0 {
			continue
		}
		lat := float64(t.Latency.Mean.Microseconds()) / 1000
		return &SourceMeasure{File: r.file, Target: t.Target, Concurrency: r.source.Concurrency,
			ReadsPerSec: t.ReadsPerSec, MeanLatencyMS: lat, MeanSize: sourceMeanSize(r.source),
			PeakOverRate: p.Cassandra.PeakReadsPerSec / t.ReadsPerSec,
			InFlight:     p.Cassandra.PeakReadsPerSec * lat / 1000}, nil
	}
	return nil, fmt.Errorf("--from-bench %s: no read target was measured", r.file)
}

func measureDest(p Plan, r benchResult) (*DestMeasure, error) {
	var best *bench.SizeResult
	for i, s := range r.dest.Sizes {
		if s.Put.FilesPerSec <= 0 || s.Size < 1 {
			continue
		}
		// Nearest by ratio: 16 KiB is nearer 30 KiB than 256 KiB is.
		if best == nil || math.Abs(math.Log(float64(s.Size)/p.Rate.MeanSize)) < math.Abs(math.Log(float64(best.Size)/p.Rate.MeanSize)) {
			best = &r.dest.Sizes[i]
		}
	}
	if best == nil {
		return nil, fmt.Errorf("--from-bench %s: no size had a PUT measured", r.file)
	}
	putLat := float64(best.Put.Latency.Mean.Microseconds()) / 1000
	d := &DestMeasure{File: r.file, Size: best.Size, Concurrency: r.dest.Concurrency,
		PutsPerSec: best.Put.FilesPerSec, PutLatencyMS: putLat,
		PeakPuts: p.Rate.PeakFilesSec * p.S3.PutPerKey, PeakHeads: p.Rate.PeakFilesSec * p.S3.HeadPerKey}
	d.PutsInFlight = d.PeakPuts * putLat / 1000
	if best.Head != nil && best.Head.FilesPerSec > 0 {
		d.HeadsPerSec, d.HeadLatencyMS = best.Head.FilesPerSec, float64(best.Head.Latency.Mean.Microseconds())/1000
		d.HeadsInFlight = d.PeakHeads * d.HeadLatencyMS / 1000
	}
	return d, nil
}
