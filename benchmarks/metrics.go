package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/ferry-migrate/ferry/shared/promtext"
)

// scrape reads addr's /metrics.
func scrape(ctx context.Context, addr string) (promtext.Samples, error) {
	return promtext.Scrape(ctx, addr)
}

// counters are the ferry metrics the harness follows.
type counters struct {
	fetched, uploaded, verified, reads, dead float64
}

func readCounters(samples promtext.Samples) counters {
	msgs := "ferry_messages_total"
	return counters{
		fetched:  samples.Sum(msgs, promtext.Labels("stage", "fetcher", "outcome", "ok")),
		uploaded: samples.Sum(msgs, promtext.Labels("stage", "uploader", "outcome", "ok")),
		verified: samples.Sum(msgs, promtext.Labels("stage", "verifier", "outcome", "ok")),
		dead:     samples.Sum(msgs, promtext.Labels("outcome", "dead")),
		reads:    samples.Sum("ferry_fetcher_reads_total", nil),
	}
}

// pprofAddrs maps a ferry process's --metrics-addr to its --pprof-addr.
var pprofAddrs sync.Map

// fetchProfile saves http://<addr's pprof address>/debug/pprof/<path> to file.
func fetchProfile(ctx context.Context, addr, path, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if pp, ok := pprofAddrs.Load(addr); ok {
		addr = pp.(string)
	}
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
		return fmt.Errorf("GET %s: %s (is --pprof-addr set?)", url, resp.Status)
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
