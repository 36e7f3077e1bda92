package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// writeJSON writes a report as indented JSON.
func writeJSON(w io.Writer, report any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report)
}

// WriteText writes the source report as an aligned table.
func (r SourceReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "source: %d keys sampled of %d in %s, concurrency %d\n", r.Sampled, r.KeyLines, r.Keys, r.Concurrency)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\treads\treads/s\tMB/s\tfound\tnot found\terrors\tp50\tp99\tmax\t")
	for _, t := range r.Targets {
		if t.Unmeasurable != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t\n", t.Target)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t\n", t.Target, t.Reads, rate(t.ReadsPerSec),
			mb(t.MBPerSec), t.Found, t.NotFound, t.Errors, ms(t.Latency.P50), ms(t.Latency.P99), ms(t.Latency.Max))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range r.Targets {
		switch {
		case t.Unmeasurable != "":
			fmt.Fprintf(w, "%s: not measured: %s\n", t.Target, t.Unmeasurable)
		case t.FirstError != "":
			fmt.Fprintf(w, "%s: first error: %s\n", t.Target, t.FirstError)
		}
	}
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: partial results")
	}
	return nil
}

// WriteText writes the destination report as an aligned table.
func (r DestReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "dest: s3://%s/%s, concurrency %d\n", r.Bucket, r.Prefix, r.Concurrency)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\top\tok\terrors\tfiles/s\tMB/s\tp50\tp99\tmax\t")
	row := func(label, op string, o OpResult, bytes bool) {
		m := "-"
		if bytes {
			m = mb(o.MBPerSec)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", label, op, o.OK, o.Errors, rate(o.FilesPerSec), m,
			ms(o.Latency.P50), ms(o.Latency.P99), ms(o.Latency.Max))
	}
	for _, s := range r.Sizes {
		row(s.Label, "PUT", s.Put, true)
		if s.Head != nil {
			row(s.Label, "HEAD", *s.Head, false)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Sizes {
		if s.Put.FirstError != "" {
			fmt.Fprintf(w, "%s PUT: first error: %s\n", s.Label, s.Put.FirstError)
		}
		if s.Head != nil && s.Head.FirstError != "" {
			fmt.Fprintf(w, "%s HEAD: first error: %s\n", s.Label, s.Head.FirstError)
		}
	}
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: partial results")
	}
	fmt.Fprintf(w, "deleted %d objects under s3://%s/%s", r.Deleted, r.Bucket, r.Prefix)
	if r.DeleteErrors > 0 {
		fmt.Fprintf(w, "; %d deletes FAILED: remove them by hand", r.DeleteErrors)
	}
	_, err := fmt.Fprintln(w)
	return err
}

func rate(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }
func mb(f float64) string   { return strconv.FormatFloat(f, 'f', 1, 64) }

// ms writes a latency in milliseconds, with more decimals below 10 ms.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	if f < 10 {
		return strconv.FormatFloat(f, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(f, 'f', 0, 64) + "ms"
}
