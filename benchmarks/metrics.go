package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// sample is one series of a Prometheus text exposition.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads addr's /metrics.
func scrape(ctx context.Context, addr string) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", addr, resp.Status)
	}
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s, ok := parseSample(sc.Text()); ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// parseSample reads `name{k="v",…} value`; ferry's label values hold no quotes or commas.
func parseSample(line string) (sample, bool) {
	if line == "" || line[0] == '#' {
		return sample{}, false
	}
	s := sample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return sample{}, false
		}
		s.name, rest = line[:i], line[j+1:]
		for _, kv := range strings.Split(line[i+1:j], ",") {
			k, v, ok := strings.Cut(kv, "=")
			if ok {
				s.labels[strings.TrimSpace(k)] = strings.Trim(v, `"`)
			}
		}
	} else {
		var ok bool
		if s.name, rest, ok = strings.Cut(line, " "); !ok {
			return sample{}, false
		}
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return sample{}, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return sample{}, false
	}
	s.value = v
	return s, true
}

// sumOf adds the series of name whose labels include match.
func sumOf(samples []sample, name string, match map[string]string) float64 {
	var total float64
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// counters are the ferry metrics the harness follows.
type counters struct {
	fetched, uploaded, verified, reads, dead float64
}

func readCounters(samples []sample) counters {
	msgs := "ferry_messages_total"
	return counters{
		fetched:  sumOf(samples, msgs, map[string]string{"stage": "fetcher", "outcome": "ok"}),
		uploaded: sumOf(samples, msgs, map[string]string{"stage": "uploader", "outcome": "ok"}),
		verified: sumOf(samples, msgs, map[string]string{"stage": "verifier", "outcome": "ok"}),
		dead:     sumOf(samples, msgs, map[string]string{"outcome": "dead"}),
		reads:    sumOf(samples, "ferry_fetcher_reads_total", nil),
	}
}

// fetchProfile saves http://addr/debug/pprof/<path> to file.
func fetchProfile(ctx context.Context, addr, path, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://" + addr + "/debug/pprof/" + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s (is net/http/pprof mounted on --metrics-addr?)", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		os.Remove(file)
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return f.Close()
}

// pprofTop is `go tool pprof -top` of a profile, limited to n functions.
func pprofTop(ctx context.Context, file string, n int, extra ...string) (string, error) {
	args := append([]string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(n)}, extra...)
	out, err := exec.CommandContext(ctx, "go", append(args, file)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof -top %s: %w: %s", file, err, out)
	}
	return string(out), nil
}
