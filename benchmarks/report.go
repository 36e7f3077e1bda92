package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// procUsage is one process of a variant.
type procUsage struct {
	Name       string  `json:"name"`
	CPUSeconds float64 `json:"cpu_seconds"`
	MaxRSSMiB  float64 `json:"peak_rss_mib"`
}

// variantResult is what one variant measured. Times run from the start of its first process.
type variantResult struct {
	Name            string            `json:"name"`
	Keys            int               `json:"keys"`
	Files           int64             `json:"files"`  // verified (seed-design: PUT)
	Failed          int64             `json:"failed"` // given up or dead-lettered
	UploadedSeconds float64           `json:"uploaded_seconds"`
	VerifiedSeconds float64           `json:"verified_seconds"` // 0: n/a
	UploadedRate    float64           `json:"uploaded_files_per_s"`
	VerifiedRate    float64           `json:"verified_files_per_s"` // 0: n/a
	CPUSeconds      float64           `json:"cpu_seconds"`          // all our processes
	CPUPer1k        float64           `json:"cpu_seconds_per_1k_files"`
	Processes       []procUsage       `json:"processes"`
	Reads           int64             `json:"cassandra_reads"`
	ReadsPerFile    float64           `json:"cassandra_reads_per_file"`
	BrokerName      string            `json:"broker,omitempty"`
	BrokerCPU       float64           `json:"broker_cpu_seconds"` // -1: n/a (none, or inside our process)
	BrokerCPUPer1k  float64           `json:"broker_cpu_seconds_per_1k_files"`
	MachineBusy     float64           `json:"machine_cpu_busy_percent"` // all processes, all cores
	Store           *natsStore        `json:"nats_store,omitempty"`     // at the end, with a DONE drain (soak)
	Profiles        map[string]string `json:"cpu_profile_top,omitempty"`
	ProfileNotes    []string          `json:"profile_notes,omitempty"`
	Notes           []string          `json:"notes,omitempty"`
}

func (r *variantResult) addProcess(name string, u usage) {
	r.Processes = append(r.Processes, procUsage{Name: name, CPUSeconds: u.CPUSeconds, MaxRSSMiB: float64(u.MaxRSSKiB) / 1024})
	r.CPUSeconds += u.CPUSeconds
}

// finish computes the rates.
func (r *variantResult) finish() *variantResult {
	per := func(x float64) float64 {
		if r.Files == 0 {
			return 0
		}
		return x / float64(r.Files)
	}
	if r.UploadedSeconds > 0 {
		r.UploadedRate = float64(r.Files) / r.UploadedSeconds
	}
	if r.VerifiedSeconds > 0 {
		r.VerifiedRate = float64(r.Files) / r.VerifiedSeconds
	}
	r.CPUPer1k = per(r.CPUSeconds) * 1000
	r.ReadsPerFile = per(float64(r.Reads))
	if r.BrokerCPU >= 0 {
		r.BrokerCPUPer1k = per(r.BrokerCPU) * 1000
	}
	return r
}

func (r *variantResult) summary() string {
	s := fmt.Sprintf("%s: %d files (%d failed): %s files/s uploaded, %s verified, %.2f CPU s/1k files, peak RSS %s, %.2f reads/file",
		r.Name, r.Files, r.Failed, rate(r.UploadedRate), rate(r.VerifiedRate), r.CPUPer1k, r.rss(), r.ReadsPerFile)
	if len(r.Notes) > 0 {
		s += "; " + strings.Join(r.Notes, "; ")
	}
	return s
}

func (r *variantResult) rss() string {
	var parts []string
	for _, p := range r.Processes {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB", p.Name, p.MaxRSSMiB))
	}
	return strings.Join(parts, ", ")
}

func rate(v float64) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", v)
}

// ratio compares two variants: files/s and CPU per file, A over B.
type ratio struct {
	Name     string  `json:"name"`
	Uploaded float64 `json:"uploaded_files_per_s"`
	Verified float64 `json:"verified_files_per_s"` // 0: n/a
	CPU      float64 `json:"cpu_per_file"`
}

// report is the whole benchmark, written as markdown and JSON.
type report struct {
	Date        string          `json:"date"`
	Commit      string          `json:"commit"`
	Cores       int             `json:"cores"`
	GoVersion   string          `json:"go_version"`
	Keys        int             `json:"keys"`
	Concurrency int             `json:"concurrency"`
	Seed        int             `json:"seed"`
	RunID       string          `json:"run_id"`
	Variants    []variantResult `json:"variants"`
	Ratios      []ratio         `json:"ratios"`
	Medians     []median        `json:"medians,omitempty"` // with --repeat
}

// spread is the median and range of one measure over a variant's runs.
type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spreadOf(xs []float64) spread {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs) == 0 {
		return spread{}
	}
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return spread{Median: m, Min: xs[0], Max: xs[len(xs)-1]}
}

func (s spread) text(format string) string {
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.Median, s.Min, s.Max)
}

// median is a variant over its repeated runs.
type median struct {
	Name     string `json:"name"`
	Runs     int    `json:"runs"`
	Uploaded spread `json:"uploaded_files_per_s"`
	Verified spread `json:"verified_files_per_s"`
	CPUPer1k spread `json:"cpu_seconds_per_1k_files"`
}

// medians summarizes each of the variants over its runs, in the order given.
func (rep *report) medians(variants []string) {
	for _, name := range variants {
		var up, ver, cpu []float64
		for _, r := range rep.Variants {
			if r.Name == name {
				up, ver, cpu = append(up, r.UploadedRate), append(ver, r.VerifiedRate), append(cpu, r.CPUPer1k)
			}
		}
		if len(up) > 0 {
			rep.Medians = append(rep.Medians, median{Name: name, Runs: len(up),
				Uploaded: spreadOf(up), Verified: spreadOf(ver), CPUPer1k: spreadOf(cpu)})
		}
	}
}

func (rep *report) variant(name string) *variantResult {
	i := slices.IndexFunc(rep.Variants, func(v variantResult) bool { return v.Name == name })
	if i < 0 {
		return nil
	}
	return &rep.Variants[i]
}

func (rep *report) ratios() {
	div := func(a, b float64) float64 {
		if a == 0 || b == 0 {
			return 0
		}
		return a / b
	}
	for _, p := range [][2]string{{vRun, vDirect}, {vSplit, vDirect}, {vRun, vSeedDesign}, {vSplit, vSeedDesign}} {
		a, b := rep.variant(p[0]), rep.variant(p[1])
		if a == nil || b == nil {
			continue
		}
		rep.Ratios = append(rep.Ratios, ratio{Name: p[0] + " / " + p[1],
			Uploaded: div(a.UploadedRate, b.UploadedRate), Verified: div(a.VerifiedRate, b.VerifiedRate),
			CPU: div(a.CPUPer1k, b.CPUPer1k)})
	}
}

// table is the results and ratios as markdown tables.
func (rep *report) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d keys, concurrency %d, %d cores, commit %s, %s\n\n", rep.Keys, rep.Concurrency, rep.Cores, rep.Commit, rep.GoVersion)
	b.WriteString("| variant | files | failed | files/s to all uploaded | files/s to all verified | CPU s / 1k files | peak RSS | Cassandra reads / file | broker CPU s / 1k files | machine busy |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |\n")
	for _, r := range rep.Variants {
		broker := "—"
		switch {
		case r.BrokerCPU >= 0:
			broker = fmt.Sprintf("%.2f (%s)", r.BrokerCPUPer1k, r.BrokerName)
		case r.Name == vRun || r.Name == vRunSync2m || r.Name == vRunStreams:
			broker = "in the process (embedded)"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %.2f | %s | %.2f | %s | %.0f%% |\n", r.Name, r.Files, r.Failed,
			rate(r.UploadedRate), rate(r.VerifiedRate), r.CPUPer1k, r.rss(), r.ReadsPerFile, broker, r.MachineBusy)
	}
	if len(rep.Medians) > 0 {
		first := rep.Medians[0]
		fmt.Fprintf(&b, "\n| variant | runs | files/s to all verified: median (min–max) | files/s to all uploaded | CPU s / 1k files | verified median / %s's |\n", first.Name)
		b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: |\n")
		for _, m := range rep.Medians {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", m.Name, m.Runs, m.Verified.text("%.0f"), m.Uploaded.text("%.0f"),
				m.CPUPer1k.text("%.2f"), ratioText(m.Verified.Median/max(first.Verified.Median, 1e-9)))
		}
	}
	if len(rep.Ratios) > 0 {
		b.WriteString("\n| ratio | files/s uploaded | files/s verified | CPU per file |\n| --- | ---: | ---: | ---: |\n")
		for _, q := range rep.Ratios {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", q.Name, ratioText(q.Uploaded), ratioText(q.Verified), ratioText(q.CPU))
		}
	}
	return b.String()
}

func ratioText(v float64) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

// write saves the report as dir/name.md and dir/name.json.
func (rep *report) write(dir, name string) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# ferry benchmark %s\n\n", name)
	fmt.Fprintf(&b, "`make bench` on %s (run %s, seed %d). Each variant ran alone, from a cold start of its own state, "+
		"against the local stack; times run from the start of the variant's first process. CPU and peak RSS are our "+
		"processes' (kernel rusage); the servers' CPU is not in them, except the broker column and `ferry run`, whose "+
		"JetStream server is embedded. direct HEADs each object after its PUT; seed-design does not, as the old system did not.\n\n",
		rep.Date, rep.RunID, rep.Seed)
	b.WriteString(rep.table())
	for _, r := range rep.Variants {
		if len(r.Notes) > 0 {
			fmt.Fprintf(&b, "\n%s: %s\n", r.Name, strings.Join(r.Notes, "; "))
		}
	}
	for _, r := range rep.Variants {
		writeProfiles(&b, r, r.Name, name)
	}
	md := filepath.Join(dir, name+".md")
	if err := os.WriteFile(md, []byte(b.String()), 0o644); err != nil {
		return "", "", err
	}
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", "", err
	}
	js := filepath.Join(dir, name+".json")
	return md, js, os.WriteFile(js, append(raw, '\n'), 0o644)
}

// writeProfiles adds the top of each profile of r to a markdown report.
func writeProfiles(b *strings.Builder, r variantResult, title, dir string) {
	if len(r.Profiles) == 0 && len(r.ProfileNotes) == 0 {
		return
	}
	fmt.Fprintf(b, "\n## Profiles of %s (files in %s/)\n", title, dir)
	names := make([]string, 0, len(r.Profiles))
	for n := range r.Profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(b, "\n### %s\n\n```\n%s```\n", n, r.Profiles[n])
	}
	for _, n := range r.ProfileNotes {
		fmt.Fprintf(b, "\n- %s", n)
	}
	b.WriteString("\n")
}
