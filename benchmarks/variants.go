package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// runWorker runs the direct (or seed-design, with extra args) worker as a child process and
// measures it from the moment it was started.
func (b *bench) runWorker(ctx context.Context, v, keys string, head bool, extra ...string) (*variantResult, error) {
	cfg, err := b.variantConfig(v)
	if err != nil {
		return nil, err
	}
	out := filepath.Join(b.dir, v+".json")
	args := []string{b.self, v, "--config", cfg, "--keys", keys, "--concurrency", strconv.Itoa(b.o.Concurrency),
		"--out", out, "--head=" + strconv.FormatBool(head)}
	c, err := startChild(ctx, v, childEnv(), os.Stderr, os.Stderr, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var w workerResult
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("%s: %w", out, err)
	}
	r := &variantResult{Name: v, Keys: b.o.Keys, Files: w.Files, Failed: w.Failed, Reads: w.Reads, BrokerCPU: -1}
	if w.Error != "" {
		r.Notes = append(r.Notes, fmt.Sprintf("%d keys failed after retries, first: %s", w.Failed, w.Error))
	}
	if w.Retries > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d retries", w.Retries))
	}
	since := func(t int64) float64 { return time.Unix(0, t).Sub(c.start).Seconds() }
	if w.LastPut > 0 {
		r.UploadedSeconds = since(w.LastPut)
	}
	if head && w.LastHead > 0 {
		r.VerifiedSeconds = since(w.LastHead)
	}
	r.addProcess(v, c.usage())
	return r.finish(), nil
}

// runSeedDesign starts a private redis-server, runs the seed-design worker against it and stops
// the server; the server's CPU is reported as the broker's.
func (b *bench) runSeedDesign(ctx context.Context, keys string) (*variantResult, error) {
	dir := filepath.Join(b.dir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rs, err := startRedis(ctx, b.o.RedisServer, dir)
	if err != nil {
		return nil, err
	}
	// Without a HEAD, as the seed system did: its "verified" is n/a.
	r, err := b.runWorker(ctx, vSeedDesign, keys, false, "--redis", rs.addr)
	rs.stop(10 * time.Second)
	if err != nil {
		return nil, err
	}
	r.BrokerCPU = rs.usage().CPUSeconds
	r.BrokerName = "redis-server"
	os.RemoveAll(dir)
	return r.finish(), nil
}
