package bench

import (
	"encoding/json"
	"math"
	"time"
)

// The histogram's buckets are log-spaced, each 1% wider than the one before, from histMin up to
// about 100 s; a duration outside falls in the first or last bucket. Any percentile it reports is
// within 1% of the true value (or 1 µs below 1 µs; the last bucket reports the maximum), clamped to
// the observed min and max, which are kept exactly; its memory is fixed (~15 KiB) whether it holds
// ten samples or ten billion.
const (
	histMin    = time.Microsecond
	histGrowth = 1.01
	histBucket = 1853 // ceil(ln(100 s / 1 µs) / ln 1.01) + 1
)

var logGrowth = math.Log(histGrowth)

// histogram records latencies. The zero value is ready to use; it is not safe for concurrent use:
// each worker keeps its own and they are merged at the end.
type histogram struct {
	counts   [histBucket]uint64
	n        uint64
	sum      time.Duration
	min, max time.Duration
}

func bucketOf(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(histMin)) / logGrowth))
	return min(i, histBucket-1)
}

// upper is the largest duration bucket i holds.
func upper(i int) time.Duration {
	return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
}

func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucketOf(d)]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile is the nearest-rank q-quantile (0 < q ≤ 1): the smallest recorded duration such that
// at least q of the samples are at or below it, to the bucket's precision.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			if i == histBucket-1 { // open-ended: anything from ~100 s up
				return h.max
			}
			return min(max(upper(i), h.min), h.max)
		}
	}
	return h.max
}

// summary is the part of a histogram a report shows.
func (h *histogram) summary() Latency {
	l := Latency{Count: h.n, P50: h.quantile(0.50), P99: h.quantile(0.99), Max: h.max}
	if h.n > 0 {
		l.Mean = h.sum / time.Duration(h.n)
	}
	return l
}

// Latency summarises the latencies of one measurement.
type Latency struct {
	Count               uint64
	P50, P99, Max, Mean time.Duration
}

// latencyJSON is Latency in JSON: durations in milliseconds, to the microsecond.
type latencyJSON struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// MarshalJSON writes the durations in milliseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	return json.Marshal(latencyJSON{l.Count, ms(l.P50), ms(l.P99), ms(l.Max), ms(l.Mean)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (l *Latency) UnmarshalJSON(b []byte) error {
	var j latencyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d := func(ms float64) time.Duration { return time.Duration(math.Round(ms*1e3)) * time.Microsecond }
	*l = Latency{Count: j.Count, P50: d(j.P50), P99: d(j.P99), Max: d(j.Max), Mean: d(j.Mean)}
	return nil
}
