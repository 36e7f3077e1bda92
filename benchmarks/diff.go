package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// diffOptions are `ferry-bench diff`'s flags (make bench-diff).
type diffOptions struct {
	Lines   int
	Mem     string
	Work    string
	Results string
	Ferry   string
	Keep    bool
}

func diffCommand() *cli.Command {
	var o diffOptions
	return &cli.Command{
		Name:  "diff",
		Usage: "ferry diff A B against LC_ALL=C sort -u + comm on two generated key lists (make bench-diff)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "lines", Value: 20_000_000, EnvVars: []string{"BENCH_DIFF_LINES"}, Destination: &o.Lines, Usage: "lines of each generated list"},
			&cli.StringFlag{Name: "mem", Value: "512MiB", EnvVars: []string{"BENCH_DIFF_MEM"}, Destination: &o.Mem, Usage: "ferry diff --mem"},
			&cli.StringFlag{Name: "work", Value: ".local/bench-diff", EnvVars: []string{"BENCH_DIFF_WORK"}, Destination: &o.Work, Usage: "scratch folder for the lists, outputs and spill files"},
			&cli.StringFlag{Name: "results", Value: "benchmarks/results", EnvVars: []string{"BENCH_RESULTS"}, Destination: &o.Results, Usage: "where the report goes"},
			&cli.StringFlag{Name: "ferry", EnvVars: []string{"BENCH_FERRY"}, Destination: &o.Ferry, Usage: "ferry binary (default: beside ferry-bench)"},
			&cli.BoolFlag{Name: "keep", EnvVars: []string{"BENCH_DIFF_KEEP"}, Destination: &o.Keep, Usage: "keep the generated lists and outputs"},
		},
		Action: func(c *cli.Context) error {
			if o.Lines < 100 {
				return fmt.Errorf("--lines %d: at least 100", o.Lines)
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
			return runDiffBench(c.Context, o)
		},
	}
}

// diffRun is one side of the comparison.
type diffRun struct {
	Name      string  `json:"name"`
	Command   string  `json:"command"`
	Seconds   float64 `json:"wall_seconds"`
	CPU       float64 `json:"cpu_seconds"`
	MaxRSSMiB float64 `json:"peak_rss_mib"` // the largest process of the run
	OnlyA     int     `json:"only_in_a"`
	OnlyB     int     `json:"only_in_b"`
}

type diffReport struct {
	Date      string    `json:"date"`
	Commit    string    `json:"commit"`
	Cores     int       `json:"cores"`
	GoVersion string    `json:"go_version"`
	Lines     int       `json:"lines_per_list"`
	BytesA    int64     `json:"bytes_a"`
	BytesB    int64     `json:"bytes_b"`
	Mem       string    `json:"mem"`
	Runs      []diffRun `json:"runs"`
	Identical bool      `json:"identical_outputs"`
	WallRatio float64   `json:"wall_ratio_ferry_over_sort_comm"`
	RSSCapMiB float64   `json:"rss_cap_mib"` // --mem + 64 MiB
	UnderCap  bool      `json:"ferry_under_rss_cap"`
}

func runDiffBench(ctx context.Context, o diffOptions) error {
	work, err := filepath.Abs(o.Work)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if !o.Keep {
		defer os.RemoveAll(work)
	}
	a, b := filepath.Join(work, "A"), filepath.Join(work, "B")
	logf("generating two lists of %d lines in %s", o.Lines, work)
	if err := generateDiffLists(a, b, o.Lines); err != nil {
		return err
	}
	rep := diffReport{Date: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), Cores: runtime.NumCPU(),
		GoVersion: runtime.Version(), Lines: o.Lines, Mem: o.Mem}
	for _, p := range []struct {
		path string
		n    *int64
	}{{a, &rep.BytesA}, {b, &rep.BytesB}} {
		st, err := os.Stat(p.path)
		if err != nil {
			return err
		}
		*p.n = st.Size()
	}

	gnu := filepath.Join(work, "gnu")
	fer := filepath.Join(work, "ferry")
	for _, d := range []string{gnu, fer} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	script := fmt.Sprintf("set -e; export LC_ALL=C; cd %[1]s; sort -u -T %[1]s %[2]s > As; sort -u -T %[1]s %[3]s > Bs; "+
		"comm -23 As Bs > only-in-A; comm -13 As Bs > only-in-B", gnu, a, b)
	runs := []struct {
		name, dir string
		args      []string
	}{
		{"sort -u + comm", gnu, []string{"bash", "-c", script}},
		{"ferry diff", fer, []string{o.Ferry, "diff", "--mem", o.Mem, "--out", fer, "--tmp", fer, a, b}},
	}
	for _, r := range runs {
		logf("== %s", r.name)
		var stderr bytes.Buffer
		c, err := startChild(ctx, r.name, os.Environ(), io.Discard, &stderr, r.args...)
		if err != nil {
			return err
		}
		err = c.wait(ctx)
		elapsed := time.Since(c.start)
		// ferry diff exits 1 when the lists differ, as these do (diff(1)'s convention).
		var exit *exec.ExitError
		if err != nil && !(r.name == "ferry diff" && errors.As(err, &exit) && exit.ExitCode() == 1) {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		u := c.usage()
		run := diffRun{Name: r.name, Command: strings.Join(r.args, " "), Seconds: elapsed.Seconds(), CPU: u.CPUSeconds,
			MaxRSSMiB: float64(u.MaxRSSKiB) / 1024}
		run.OnlyA, _ = countLines(filepath.Join(r.dir, "only-in-A"))
		run.OnlyB, _ = countLines(filepath.Join(r.dir, "only-in-B"))
		logf("%s: %.1f s wall, %.1f s CPU, peak RSS %.0f MiB, only in A %d, only in B %d", r.name, run.Seconds, run.CPU, run.MaxRSSMiB, run.OnlyA, run.OnlyB)
		rep.Runs = append(rep.Runs, run)
	}
	rep.Identical = sameFile(filepath.Join(gnu, "only-in-A"), filepath.Join(fer, "only-in-A")) &&
		sameFile(filepath.Join(gnu, "only-in-B"), filepath.Join(fer, "only-in-B"))
	rep.WallRatio = rep.Runs[1].Seconds / rep.Runs[0].Seconds
	mem, err := parseMiB(o.Mem)
	if err != nil {
		return err
	}
	rep.RSSCapMiB = mem + 64
	rep.UnderCap = rep.Runs[1].MaxRSSMiB <= rep.RSSCapMiB

	name := time.Now().Format("2006-01-02") + "-" + rep.Commit + "-diff"
	text := rep.markdown(name)
	fmt.Println()
	fmt.Print(text)
	if err := os.MkdirAll(o.Results, 0o755); err != nil {
		return err
	}
	md := filepath.Join(o.Results, name+".md")
	if err := os.WriteFile(md, []byte(text), 0o644); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(rep, "", "  ")
	js := filepath.Join(o.Results, name+".json")
	if err := os.WriteFile(js, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	logf("report: %s, %s", md, js)
	if !rep.Identical {
		return errors.New("ferry diff and sort+comm disagree")
	}
	return nil
}

func (rep *diffReport) markdown(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ferry diff benchmark %s\n\n", name)
	fmt.Fprintf(&b, "`make bench-diff` on %s, commit %s, %d cores, %s. Two generated lists of %d lines (%d and %d bytes: "+
		"keys `t01` + 24 hex + `.jpg`, shuffled, ~1%% only in A, ~1%% only in B, ~1%% of A twice). Each run is a child "+
		"process (wall time from start to exit; peak RSS is the kernel's rusage maxrss, for sort+comm the largest of its "+
		"processes). Both read the inputs from the page cache (just written) and write to the same disk.\n\n",
		rep.Date, rep.Commit, rep.Cores, rep.GoVersion, rep.Lines, rep.BytesA, rep.BytesB)
	b.WriteString("| run | wall | CPU | peak RSS | only in A | only in B |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rep.Runs {
		fmt.Fprintf(&b, "| %s | %.1f s | %.1f s | %.0f MiB | %d | %d |\n", r.Name, r.Seconds, r.CPU, r.MaxRSSMiB, r.OnlyA, r.OnlyB)
	}
	fmt.Fprintf(&b, "\nferry / sort+comm wall time: **%.2f** (target ≤ 1.00). ferry peak RSS %.0f MiB with --mem %s: cap %.0f MiB, %s. "+
		"Outputs identical: %v.\n", rep.WallRatio, rep.Runs[1].MaxRSSMiB, rep.Mem, rep.RSSCapMiB, map[bool]string{true: "under", false: "OVER"}[rep.UnderCap], rep.Identical)
	return b.String()
}

// generateDiffLists writes A and B: n keys each in a shuffled order, with key i only in A when
// i%100 == 0, only in B when i%100 == 1, twice in A when i%100 == 2, in both otherwise.
func generateDiffLists(a, b string, n int) error {
	fa, err := os.Create(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Create(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	wa, wb := bufio.NewWriterSize(fa, 1<<20), bufio.NewWriterSize(fb, 1<<20)
	perm := make([]uint32, n)
	for i := range perm {
		perm[i] = uint32(i)
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(n, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	var raw [12]byte
	line := make([]byte, 0, 64)
	for _, p := range perm {
		kr := rand.New(rand.NewPCG(uint64(p), 0x5eed))
		for j := range raw {
			raw[j] = byte(kr.Uint32())
		}
		line = append(line[:0], "t01"...)
		line = hex.AppendEncode(line, raw[:])
		line = append(line, ".jpg\n"...)
		switch p % 100 {
		case 0:
			wa.Write(line)
		case 1:
			wb.Write(line)
		case 2:
			wa.Write(line)
			wa.Write(line)
			wb.Write(line)
		default:
			wa.Write(line)
			wb.Write(line)
		}
	}
	return errors.Join(wa.Flush(), wb.Flush())
}

func countLines(path string) (int, error) {
	b, err := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'}), err
}

func sameFile(x, y string) bool {
	a, err1 := os.ReadFile(x)
	b, err2 := os.ReadFile(y)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// parseMiB reads "512MiB" or "1GiB" as MiB.
func parseMiB(s string) (float64, error) {
	var n float64
	var unit string
	if _, err := fmt.Sscanf(s, "%f%s", &n, &unit); err != nil {
		return 0, fmt.Errorf("--mem %q: want e.g. 512MiB", s)
	}
	switch strings.ToLower(unit) {
	case "mib":
		return n, nil
	case "gib":
		return n * 1024, nil
	}
	return 0, fmt.Errorf("--mem %q: use MiB or GiB", s)
}
