package status

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

// Rates turns successive snapshots into each stage's processed-per-second over the last
// RateWindow. A work queue keeps no history (acked messages are deleted), so the only way to see
// how fast a stage drains it from NATS alone is to sample twice: Processed (last sequence minus
// messages left) grows by one for every message the stage acked or terminated, redeliveries not
// counted twice — unlike the consumer's ack floor, whose consumer sequence counts deliveries.
type Rates struct {
	samples []*Status
}

// Apply records st and fills its stages' PerSecond from the oldest sample within RateWindow
// (the first snapshot has none).
func (r *Rates) Apply(st *Status) {
	keep := r.samples[:0]
	for _, s := range r.samples {
		if st.Time.Sub(s.Time) <= RateWindow {
			keep = append(keep, s)
		}
	}
	r.samples = append(keep, st)
	first := r.samples[0]
	dt := st.Time.Sub(first.Time).Seconds()
	if dt <= 0 {
		return
	}
	for i := range st.Stages {
		for _, old := range first.Stages {
			if old.Stage == st.Stages[i].Stage && st.Stages[i].Processed >= old.Processed {
				v := float64(st.Stages[i].Processed-old.Processed) / dt
				st.Stages[i].PerSecond = &v
			}
		}
	}
}

// JSON writes st as one JSON document.
func JSON(w io.Writer, st *Status) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

// Print writes st as a screen for people.
func Print(w io.Writer, st *Status) {
	fmt.Fprintf(w, "ferry status — job %s — %s\n\n", st.Job, st.Time.Format("2006-01-02 15:04:05 UTC"))
	// The ORPHANED column shows only when a stage has orphans: normally it would be all zeros.
	var orphaned uint64
	var orphanedBy []string
	for _, s := range st.Stages {
		if s.Orphaned > 0 {
			orphaned += s.Orphaned
			orphanedBy = append(orphanedBy, fmt.Sprintf("%s %d", s.Stage, s.Orphaned))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "STAGE\tSTREAM\tMESSAGES\tBYTES\tPENDING\tACK PENDING\tREDELIVERED\tWAITING\tPROCESSED\tPER SECOND"
	if orphaned > 0 {
		head += "\tORPHANED"
	}
	fmt.Fprintln(tw, head)
	for _, s := range st.Stages {
		rate := "-"
		if s.PerSecond != nil {
			rate = fmt.Sprintf("%.0f", *s.PerSecond)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s", s.Stage, s.Stream, s.Messages, iec(s.Bytes),
			s.Pending, s.AckPending, s.Redelivered, s.Waiting, s.Processed, rate)
		if orphaned > 0 {
			fmt.Fprintf(tw, "\t%d", s.Orphaned)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintln(w)
	switch {
	case st.Unaccounted > 0 && st.Backlog == 0:
		fmt.Fprintf(w, "unaccounted   %d published keys are neither verified, dead-lettered nor in a work queue; `ferry report` and `ferry diff` find them\n", st.Unaccounted)
	case st.Unaccounted < 0 && -st.Unaccounted > st.ackPending():
		// A key whose output is stored and whose ack is not yet in counts twice for a moment.
		fmt.Fprintf(w, "unaccounted   %d verified or dead-lettered entries that no published key accounts for (messages published past KEYS: forged or by hand); see `ferry report`\n", -st.Unaccounted)
	}
	if orphaned > 0 {
		fmt.Fprintf(w, "orphaned      %d in the work queues that no consumer will deliver (%s); if it stays, run `ferry repair --dry-run`, then `ferry repair`\n",
			orphaned, strings.Join(orphanedBy, ", "))
	}
	v := st.Verified
	fmt.Fprintf(w, "verified      %d (%s), %d in the last %s: %.1f/s\n", v.Messages, v.Stream, v.LastMinute, span(v.WindowSeconds), v.PerSecond)
	if v.Drained+v.Lost > 0 {
		fmt.Fprintf(w, "manifest      %d drained into %d segments, %d still in %s", v.Drained, v.Segments, v.InStream, v.Stream)
		if v.Lost > 0 {
			fmt.Fprintf(w, "; %d LOST (gone from DONE before the drain read them)", v.Lost)
		}
		fmt.Fprintln(w)
	}
	d := st.DeadLetters
	fmt.Fprintf(w, "dead letters  %d, %d in the last %s%s\n", d.Total, d.LastMinute, span(d.WindowSeconds), reasons(d.ByReason))
	eta := "-"
	switch {
	case st.ETASeconds != nil:
		eta = (time.Duration(*st.ETASeconds) * time.Second).String()
	case st.Backlog == 0:
		eta = "nothing queued"
	}
	fmt.Fprintf(w, "backlog       %d in the work queues; ETA %s\n", st.Backlog, eta)
	p := st.Producer
	if len(p.Lists)+len(p.Scans) == 0 {
		fmt.Fprintln(w, "producer      no checkpoint")
	}
	for _, l := range p.Lists {
		state := "reading"
		if l.Done {
			state = "done"
		}
		fmt.Fprintf(w, "producer      %s: line %d, offset %s, %s\n", l.Path, l.Line, iec(uint64(max(l.Offset, 0))), state)
	}
	for _, s := range p.Scans {
		fmt.Fprintf(w, "producer      scan %s pass %d: %d of %d ranges done, %.1f%% of the ring, %d keys read\n",
			s.Table, s.Pass, s.RangesDone, s.Ranges, 100*s.Fraction, s.Keys)
		printPasses(w, s.Passes)
	}
}

// printPasses is a scan's pass table, and what the last pass found.
func printPasses(w io.Writer, passes []checkpoint.Pass) {
	if len(passes) == 0 {
		return
	}
	const at = "2006-01-02 15:04:05"
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PASS\tSINCE\tSTART\tEND\tSCANNED\tPUBLISHED\tCOMPLETE")
	for _, p := range passes {
		end, complete := "running", "no"
		if !p.End.IsZero() {
			end = p.End.UTC().Format(at)
		}
		if p.Complete {
			complete = "yes"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%s\n", p.N, p.Kind(), p.Start.UTC().Format(at), end, p.Scanned, p.Published, complete)
	}
	tw.Flush()
	last := passes[len(passes)-1]
	state := "complete"
	switch {
	case last.End.IsZero():
		state = "running or stopped, not complete"
	case !last.Complete:
		state = "ended, not complete"
	}
	fmt.Fprintf(w, "last pass     %d (%s) published %d of %d keys read, %s\n", last.N, last.Kind(), last.Published, last.Scanned, state)
}

// span names a rate window: "minute", or its seconds when the stream is younger.
func span(seconds float64) string {
	if seconds <= 0 || seconds >= RateWindow.Seconds() {
		return "minute"
	}
	return fmt.Sprintf("%.0f s", seconds)
}

// reasons lists the dead letters by stage/reason, most first.
func reasons(by map[string]uint64) string {
	if len(by) == 0 {
		return ""
	}
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if by[keys[i]] != by[keys[j]] {
			return by[keys[i]] > by[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, by[k])
	}
	return ": " + strings.Join(parts, ", ")
}

// iec formats n in IEC units.
func iec(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
