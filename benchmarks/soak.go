package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// flatLimit is the largest largest-over-smallest ratio of a per-file cost or a peak RSS the soak
// still calls flat: the runs share a 2-core machine, so a few tens of percent is noise.
const flatLimit = 1.25

func soakCommand() *cli.Command {
	var o options
	var sizes string
	var d drainSpec
	var blob int
	return &cli.Command{
		Name:  "soak",
		Usage: "ferry run and the split services at growing key counts of small blobs, with a DONE drain: cost per file, RSS and the NATS store as the work grows (make bench-soak)",
		Flags: append(o.flags(),
			&cli.StringFlag{Name: "sizes", Value: "100000,2000000", EnvVars: []string{"BENCH_SOAK_KEYS"}, Destination: &sizes, Usage: "key counts, comma-separated"},
			&cli.IntFlag{Name: "blob-size", Value: 1024, EnvVars: []string{"BENCH_SOAK_BLOB"}, Destination: &blob, Usage: "bytes of every seeded blob (small, so the disk holds millions)"},
			&cli.DurationFlag{Name: "manifest-every", Value: 10 * time.Second, Destination: &d.every, Usage: "the drain's --every"},
			&cli.DurationFlag{Name: "manifest-min-age", Value: 30 * time.Second, Destination: &d.minAge, Usage: "the drain's --min-age"},
		),
		Action: func(c *cli.Context) error {
			if err := o.validate(); err != nil {
				return err
			}
			ns, err := parseKeyCounts(sizes)
			if err != nil {
				return err
			}
			if blob < 1 {
				return fmt.Errorf("--blob-size %d: must be positive", blob)
			}
			b, err := newBench(o)
			if err != nil {
				return err
			}
			b.blobSize, b.drain = blob, &d
			return b.soak(c.Context, ns)
		},
	}
}

// drainSpec is the DONE drain the soak runs in every ferry variant.
type drainSpec struct{ every, minAge time.Duration }

// args are the drain's flags: `ferry manifest --every …` (cmd "manifest", no prefix) or ferry
// run's `--manifest-every …` (no cmd, prefix "manifest-").
func (d *drainSpec) args(cmd, prefix string) []string {
	var a []string
	if cmd != "" {
		a = append(a, cmd)
	}
	return append(a, "--"+prefix+"every", d.every.String(), "--"+prefix+"min-age", d.minAge.String())
}

// natsStore is what the broker holds when a variant has finished.
type natsStore struct {
	Streams      []streamSize `json:"streams,omitempty"`        // split: the job's streams
	StreamBytes  uint64       `json:"stream_bytes,omitempty"`   // split: their sum
	DoneMsgs     uint64       `json:"done_msgs,omitempty"`      // split: DONE entries not drained yet
	DoneLastSeq  uint64       `json:"done_last_seq,omitempty"`  // split: every DONE entry ever stored
	BrokerRSSMiB float64      `json:"broker_rss_mib,omitempty"` // split: nats-server's RSS at the end
	DataDirBytes int64        `json:"data_dir_bytes,omitempty"` // ferry run: its --data folder on disk
}

type streamSize struct {
	Name  string `json:"name"`
	Msgs  uint64 `json:"msgs"`
	Bytes uint64 `json:"bytes"`
}

// bytes is the store's size: the streams' bytes, or the data folder's.
func (s *natsStore) bytes() float64 {
	if s == nil {
		return 0
	}
	return float64(s.StreamBytes) + float64(s.DataDirBytes)
}

// jobStore reads the size of the job's streams (those that exist) and nats-server's RSS (pid 0:
// unknown).
func jobStore(ctx context.Context, js jetstream.JetStream, n bus.Names, brokerPID int) (*natsStore, error) {
	streams := []struct{ label, name string }{
		{"KEYS", n.Keys}, {"BLOBS", n.Blobs}, {"UPLOADED", n.Uploaded}, {"DONE", n.Done}, {"DLQ", n.DLQ},
		{"ADVISORIES", n.Advisories}, {"KV", "KV_" + n.KV}, {"ATTEMPTS", "KV_" + n.Attempts}, {"LARGE", "OBJ_" + n.Objects},
	}
	st := &natsStore{}
	for _, s := range streams {
		state, err := streamState(ctx, js, s.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		st.Streams = append(st.Streams, streamSize{Name: s.label, Msgs: state.Msgs, Bytes: state.Bytes})
		st.StreamBytes += state.Bytes
		if s.name == n.Done {
			st.DoneMsgs, st.DoneLastSeq = state.Msgs, state.LastSeq
		}
	}
	if brokerPID > 0 {
		if kib, err := procStatusKiB(brokerPID, "VmRSS"); err == nil {
			st.BrokerRSSMiB = float64(kib) / 1024
		}
	}
	return st, nil
}

// dataStore is the size of ferry run's --data folder.
func dataStore(dir string) (*natsStore, error) {
	st := &natsStore{}
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		st.DataDirBytes += info.Size()
		return nil
	})
	return st, err
}

// soakGrowth is one variant's largest run over its smallest.
type soakGrowth struct {
	Variant     string             `json:"variant"`
	Keys        [2]int             `json:"keys"` // smallest, largest
	Rate        float64            `json:"verified_files_per_s"`
	CPUPerFile  float64            `json:"cpu_per_file"`
	BrokerCPU   float64            `json:"broker_cpu_per_file,omitempty"`
	PeakRSS     map[string]float64 `json:"peak_rss"` // by process
	StoreBytes  float64            `json:"nats_store_bytes"`
	Flat        bool               `json:"flat"` // CPU per file and every peak RSS at most flatLimit
	NotFlatWhat []string           `json:"not_flat,omitempty"`
}

type soakReport struct {
	Date        string          `json:"date"`
	Commit      string          `json:"commit"`
	Cores       int             `json:"cores"`
	Concurrency int             `json:"concurrency"`
	BlobSize    int             `json:"blob_size"`
	Drain       string          `json:"drain"`
	Runs        []variantResult `json:"runs"`
	Growth      []soakGrowth    `json:"largest_over_smallest"`
}

// soak runs both ferry variants at each key count, smallest first.
func (b *bench) soak(ctx context.Context, sizes []int) error {
	drain := strings.Join(b.drain.args("", "manifest-"), " ")
	logf("ferry bench-soak %s: ferry-split and ferry-run at %v keys of %d bytes, drain %s; %d cores, commit %s; logs in %s",
		b.id, sizes, b.blobSize, drain, runtime.NumCPU(), b.commit, b.dir)
	rep := soakReport{Date: time.Now().UTC().Format(time.RFC3339), Commit: b.commit, Cores: runtime.NumCPU(),
		Concurrency: b.o.Concurrency, BlobSize: b.blobSize, Drain: drain}
	name := time.Now().Format("2006-01-02") + "-" + b.commit + "-soak"
	if err := b.seedAndClean(ctx, slices.Max(sizes)); err != nil {
		return err
	}
	for _, n := range sizes {
		keys, err := b.keyFile(n)
		if err != nil {
			return err
		}
		for _, v := range soakVariants(b.o) {
			r, err := b.measure(ctx, v, keys, n, filepath.Join(b.o.Results, name, strconv.Itoa(n)))
			if err != nil {
				return err
			}
			rep.Runs = append(rep.Runs, *r)
		}
	}
	rep.growth()
	return writeResults(b.o.Results, name, rep.markdown(name), rep)
}

// soakVariants are the soak's variants (ferry-split, ferry-run) that --variants names; both when
// it names neither (the default names every variant).
func soakVariants(o options) []string {
	var vs []string
	for _, v := range []string{vSplit, vRun} {
		if slices.Contains(o.variants(), v) {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return []string{vSplit, vRun}
	}
	return vs
}

// growth compares each variant's largest run with its smallest.
func (rep *soakReport) growth() {
	for _, v := range []string{vSplit, vRun} {
		var runs []variantResult
		for _, r := range rep.Runs {
			if r.Name == v {
				runs = append(runs, r)
			}
		}
		if len(runs) < 2 {
			continue
		}
		lo, hi := runs[0], runs[len(runs)-1]
		over := func(a, b float64) float64 {
			if b == 0 {
				return 0
			}
			return a / b
		}
		g := soakGrowth{Variant: v, Keys: [2]int{lo.Keys, hi.Keys}, Rate: over(hi.VerifiedRate, lo.VerifiedRate),
			CPUPerFile: over(hi.CPUPer1k, lo.CPUPer1k), BrokerCPU: over(hi.BrokerCPUPer1k, lo.BrokerCPUPer1k),
			PeakRSS: map[string]float64{}, StoreBytes: over(hi.Store.bytes(), lo.Store.bytes())}
		for _, p := range hi.Processes {
			for _, q := range lo.Processes {
				if q.Name == p.Name {
					g.PeakRSS[p.Name] = over(p.MaxRSSMiB, q.MaxRSSMiB)
				}
			}
		}
		if g.CPUPerFile > flatLimit {
			g.NotFlatWhat = append(g.NotFlatWhat, "CPU per file")
		}
		for _, p := range hi.Processes {
			if g.PeakRSS[p.Name] > flatLimit {
				g.NotFlatWhat = append(g.NotFlatWhat, p.Name+" peak RSS")
			}
		}
		g.Flat = len(g.NotFlatWhat) == 0
		rep.Growth = append(rep.Growth, g)
	}
}

func (rep *soakReport) markdown(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ferry soak %s\n\n%s, commit %s, %d cores, concurrency %d, blobs of %d bytes, DONE drained with %s\n\n",
		name, rep.Date, rep.Commit, rep.Cores, rep.Concurrency, rep.BlobSize, rep.Drain)
	b.WriteString("`make bench-soak`: each variant from a fresh job. CPU is ferry's processes' (kernel rusage); the broker's is " +
		"nats-server's for ferry-split and inside ferry-run's process. Peak RSS is each process's VmHWM. The NATS store is the " +
		"job's streams' bytes at the end (ferry-split) or ferry run's --data folder on disk; DONE keeps the entries younger " +
		"than the drain's min-age.\n\n")
	b.WriteString("| variant | keys | files | failed | files/s verified | CPU s / 1k files | broker CPU s / 1k files | peak RSS | NATS store at the end | DONE msgs / last seq | machine busy |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |\n")
	for _, r := range rep.Runs {
		broker, store, done := "in ferry run", "n/a", "n/a"
		if r.BrokerCPU >= 0 {
			broker = fmt.Sprintf("%.2f", r.BrokerCPUPer1k)
		}
		if s := r.Store; s != nil && s.DataDirBytes > 0 {
			store = fmt.Sprintf("%.1f MiB data folder", s.bytes()/(1<<20))
		} else if s != nil {
			store = fmt.Sprintf("%.1f MiB in streams, nats-server RSS %.0f MiB", s.bytes()/(1<<20), s.BrokerRSSMiB)
			done = fmt.Sprintf("%d / %d", s.DoneMsgs, s.DoneLastSeq)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %.2f | %s | %s | %s | %s | %.0f%% |\n", r.Name, r.Keys, r.Files, r.Failed,
			rate(r.VerifiedRate), r.CPUPer1k, broker, r.rss(), store, done, r.MachineBusy)
	}
	b.WriteString("\nferry-split's streams at the end (messages, KiB):\n\n| keys |")
	var labels []string
	for _, r := range rep.Runs {
		if r.Store != nil && len(r.Store.Streams) > len(labels) {
			labels = labels[:0]
			for _, s := range r.Store.Streams {
				labels = append(labels, s.Name)
			}
		}
	}
	b.WriteString(" " + strings.Join(labels, " | ") + " |\n| ---: |" + strings.Repeat(" ---: |", len(labels)) + "\n")
	for _, r := range rep.Runs {
		if r.Store == nil || len(r.Store.Streams) == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %d |", r.Keys)
		for _, l := range labels {
			cell := "-"
			for _, s := range r.Store.Streams {
				if s.Name == l {
					cell = fmt.Sprintf("%d, %.0f", s.Msgs, float64(s.Bytes)/1024)
				}
			}
			b.WriteString(" " + cell + " |")
		}
		b.WriteString("\n")
	}
	if len(rep.Growth) > 0 {
		fmt.Fprintf(&b, "\nLargest over smallest key count (flat: CPU per file and every peak RSS at most %.2f):\n\n", flatLimit)
		b.WriteString("| variant | keys | files/s verified | CPU per file | broker CPU per file | peak RSS | NATS store | verdict |\n")
		b.WriteString("| --- | --- | ---: | ---: | ---: | --- | ---: | --- |\n")
		for _, g := range rep.Growth {
			var rss []string
			for _, p := range slices.Sorted(maps.Keys(g.PeakRSS)) {
				rss = append(rss, fmt.Sprintf("%s %.2f", p, g.PeakRSS[p]))
			}
			broker, verdict := "n/a", "flat"
			if g.BrokerCPU > 0 {
				broker = fmt.Sprintf("%.2f", g.BrokerCPU)
			}
			if !g.Flat {
				verdict = "GROWS: " + strings.Join(g.NotFlatWhat, ", ")
			}
			fmt.Fprintf(&b, "| %s | %d → %d | %.2f | %.2f | %s | %s | %.2f | %s |\n", g.Variant, g.Keys[0], g.Keys[1],
				g.Rate, g.CPUPerFile, broker, strings.Join(rss, ", "), g.StoreBytes, verdict)
		}
	}
	for _, r := range rep.Runs {
		if len(r.Notes) > 0 {
			fmt.Fprintf(&b, "\n%s, %d keys: %s\n", r.Name, r.Keys, strings.Join(r.Notes, "; "))
		}
	}
	for _, r := range rep.Runs {
		writeProfiles(&b, r, fmt.Sprintf("%s, %d keys", r.Name, r.Keys), filepath.Join(name, strconv.Itoa(r.Keys)))
	}
	return b.String()
}
