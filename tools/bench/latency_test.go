package bench

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// within reports whether got is within 1% of want (the histogram's precision).
func within(got, want time.Duration) bool {
	diff := got - want
	if diff < 0 {
		diff = -diff
	}
	return float64(diff) <= 0.01*float64(want)+1
}

func TestLatencySummary(t *testing.T) {
	ms := time.Millisecond
	repeat := func(n int, d time.Duration) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = d
		}
		return s
	}
	ramp := func(n int, step time.Duration) []time.Duration { // step, 2·step, … n·step
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i+1) * step
		}
		return s
	}
	tests := []struct {
		name          string
		samples       []time.Duration
		p50, p99, max time.Duration
		mean          time.Duration
	}{
		{name: "empty"},
		{name: "one sample", samples: []time.Duration{3 * ms}, p50: 3 * ms, p99: 3 * ms, max: 3 * ms, mean: 3 * ms},
		{name: "constant", samples: repeat(1000, 7*ms), p50: 7 * ms, p99: 7 * ms, max: 7 * ms, mean: 7 * ms},
		{name: "1..100 ms", samples: ramp(100, ms), p50: 50 * ms, p99: 99 * ms, max: 100 * ms, mean: 50500 * time.Microsecond},
		{name: "1..10000 µs", samples: ramp(10000, time.Microsecond), p50: 5000 * time.Microsecond, p99: 9900 * time.Microsecond, max: 10 * ms, mean: 5000500 * time.Nanosecond},
		{name: "one slow in 100", samples: append(repeat(99, ms), time.Second), p50: ms, p99: ms, max: time.Second, mean: 10990 * time.Microsecond},
		{name: "two slow in 100", samples: append(repeat(98, ms), time.Second, time.Second), p50: ms, p99: time.Second, max: time.Second, mean: 20980 * time.Microsecond},
		{name: "below the first bucket: 1 µs precision", samples: []time.Duration{100, 200, 300}, p50: 300, p99: 300, max: 300, mean: 200},
		{name: "above the last bucket", samples: []time.Duration{time.Second, 1000 * time.Second}, p50: time.Second, p99: 1000 * time.Second, max: 1000 * time.Second, mean: 500500 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Recorded shuffled and split over two histograms, then merged, as the workers do.
			s := append([]time.Duration(nil), tt.samples...)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
			var a, b histogram
			for i, d := range s {
				if i%2 == 0 {
					a.record(d)
				} else {
					b.record(d)
				}
			}
			a.merge(&b)
			got := a.summary()
			if got.Count != uint64(len(s)) {
				t.Errorf("count = %d, want %d", got.Count, len(s))
			}
			if got.Max != tt.max || got.Mean != tt.mean {
				t.Errorf("max, mean = %v, %v; want exactly %v, %v", got.Max, got.Mean, tt.max, tt.mean)
			}
			if !within(got.P50, tt.p50) || !within(got.P99, tt.p99) {
				t.Errorf("p50, p99 = %v, %v; want %v, %v within 1%%", got.P50, got.P99, tt.p50, tt.p99)
			}
		})
	}
}

func TestHistogramPrecision(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		d := time.Duration(rng.Int64N(int64(100 * time.Second)))
		var h histogram
		h.record(d)
		h.record(100 * time.Second) // so that the clamp to max does not hide the bucket's bound
		h.record(0)
		if got := h.quantile(0.5); !within(got, d) {
			t.Fatalf("median of {0, %v, 100s} = %v, want within 1%%", d, got)
		}
	}
}

func TestHistogramMemoryIsFixed(t *testing.T) {
	var h histogram
	for i := range 1_000_000 {
		h.record(time.Duration(i) * time.Microsecond)
	}
	if h.n != 1_000_000 || len(h.counts) != histBucket {
		t.Fatalf("n = %d, buckets = %d", h.n, len(h.counts))
	}
}

func TestLatencyJSONInMilliseconds(t *testing.T) {
	in := Latency{Count: 2, P50: 1500 * time.Microsecond, P99: 20 * time.Millisecond, Max: time.Second, Mean: 250 * time.Microsecond}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"count":2,"p50_ms":1.5,"p99_ms":20,"max_ms":1000,"mean_ms":0.25}`
	if string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
	var back Latency
	if err := json.Unmarshal(b, &back); err != nil || back != in {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, in)
	}
}
