package report

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

// meaning is what each reason says, as the dead-letter table of docs/operations.md does.
var meaning = map[string]string{
	bus.ReasonInvalidKey:     "not UTF-8, over 1 KiB, control characters, or fails the key rules",
	bus.ReasonNotFound:       "no read target holds the key",
	bus.ReasonSourceError:    "reads kept failing through the last delivery, or a large blob vanished in transit",
	bus.ReasonTooLarge:       "blob above the fetcher's --max-size",
	bus.ReasonUploadError:    "S3 kept failing, or refuses this object for good",
	bus.ReasonVerifyMissing:  "HEAD found no object",
	bus.ReasonVerifyMismatch: "size or checksum differ",
	bus.ReasonMaxDeliveries:  "the message kept crashing or stalling its worker",
}

// Markdown writes r for the people who own the migration: what arrived, and exactly what did
// not and why.
func Markdown(w io.Writer, r *Report) {
	fmt.Fprintf(w, "# ferry report: job %s\n\n", r.Job)
	fmt.Fprintf(w, "Written %s from the job's NATS streams.\n\n", r.Time.Format("2006-01-02 15:04:05 UTC"))

	fmt.Fprintln(w, "## Outcome")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| | keys |")
	fmt.Fprintln(w, "| --- | ---: |")
	fmt.Fprintf(w, "| published to KEYS | %s |\n", num(r.Published))
	fmt.Fprintf(w, "| verified in S3 (size and checksum) | %s |\n", num(r.Verified))
	fmt.Fprintf(w, "| dead-lettered | %s |\n", num(r.DeadLettered-r.DeletedAtSource))
	if r.DeletedAtSource > 0 {
		fmt.Fprintf(w, "| deleted at the source (dead letters `%s`, not failures) | %s |\n", bus.ReasonDeleted, num(r.DeletedAtSource))
	}
	fmt.Fprintf(w, "| still in the pipeline | %s |\n", num(r.InPipeline))
	fmt.Fprintln(w)
	if r.InPipeline > 0 {
		fmt.Fprintf(w, "Still queued: fetcher %s, uploader %s, verifier %s, advisor %s. The migration is not finished; run the report again when `ferry status` shows no backlog.\n\n",
			num(r.Queued[bus.StageFetcher]), num(r.Queued[bus.StageUploader]), num(r.Queued[bus.StageVerifier]), num(r.Queued[bus.StageAdvisor]))
	}
	fmt.Fprintln(w, "Published counts every message stored in KEYS, replayed dead letters included; keys the producer refused (`producer/invalid_key`) never reached KEYS.")
	fmt.Fprintln(w)
	if m := r.Manifest; m.Entries+m.Lost > 0 {
		fmt.Fprintf(w, "Verified counts every DONE entry: %s in %s manifest segments (`ferry manifest`), %s still in DONE.", num(m.Entries), num(m.Segments), num(m.InDone))
		if m.Lost > 0 {
			fmt.Fprintf(w, " **%s DONE entries were gone before the drain read them** (DONE purged by hand?): they are in no segment.", num(m.Lost))
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w)
	}
	if d := r.Discrepancy(); d != "" {
		fmt.Fprintf(w, "**The counts do not add up.** Published should be verified + dead-lettered after KEYS + in flight; %s.\n\n", d)
	}

	markdownProof(w, r)

	fmt.Fprintln(w, "## Did not arrive")
	fmt.Fprintln(w)
	if r.DeadLettered == r.DeletedAtSource {
		fmt.Fprintln(w, "No dead letters: every key that left the pipeline is verified in S3.")
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "| stage | reason | keys | meaning |")
		fmt.Fprintln(w, "| --- | --- | ---: | --- |")
		var order []string
		for _, sr := range sortedKeys(r.DeadLetters) {
			if _, reason, _ := strings.Cut(sr, "/"); reason != bus.ReasonDeleted {
				order = append(order, sr)
			}
		}
		for _, sr := range order {
			st, reason, _ := strings.Cut(sr, "/")
			fmt.Fprintf(w, "| %s | `%s` | %s | %s |\n", st, reason, num(r.DeadLetters[sr]), meaning[reason])
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Every dead-lettered key is in `%s` (one a line) and, with its stage, reason, error and attempts, in `%s`.", FileKeys, FileEntries)
		if r.LineBreaks > 0 {
			fmt.Fprintf(w, " %d keys hold a line break and are only in `%s`.", r.LineBreaks, FileEntries)
		}
		fmt.Fprintf(w, " Once a cause is fixed, `ferry --job %s dlq replay --reason REASON` sends those keys again.\n\n", r.Job)
		for _, sr := range order {
			st, reason, _ := strings.Cut(sr, "/")
			fmt.Fprintf(w, "### %s / %s: %s keys\n\n", st, reason, num(r.DeadLetters[sr]))
			fmt.Fprintln(w, "| key | error | attempts |")
			fmt.Fprintln(w, "| --- | --- | ---: |")
			for _, e := range r.Samples[sr] {
				fmt.Fprintf(w, "| %s | %s | %s |\n", code(e.Key), cell(e.Error), cell(e.Attempts))
			}
			if more := int64(r.DeadLetters[sr]) - int64(len(r.Samples[sr])); more > 0 {
				fmt.Fprintf(w, "\n… and %s more in `%s`.\n", num(uint64(more)), FileEntries)
			}
			fmt.Fprintln(w)
		}
	}

	markdownDeleted(w, r)
	markdownPasses(w, r)

	fmt.Fprintln(w, "## Time")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| | |")
	fmt.Fprintln(w, "| --- | --- |")
	fmt.Fprintf(w, "| job created (KEYS stream) | %s |\n", r.JobCreated.Format(time.DateTime+" UTC"))
	if r.FirstVerified == nil {
		fmt.Fprintln(w, "| verified | none yet |")
		fmt.Fprintln(w)
		return
	}
	elapsed := time.Duration(r.ElapsedSeconds * float64(time.Second))
	fmt.Fprintf(w, "| first verified | %s |\n", r.FirstVerified.Format(time.DateTime+" UTC"))
	fmt.Fprintf(w, "| last verified | %s |\n", r.LastVerified.Format(time.DateTime+" UTC"))
	fmt.Fprintf(w, "| elapsed, first to last verified | %s |\n", elapsed.Round(time.Second))
	fmt.Fprintf(w, "| since the job was created | %s |\n", r.LastVerified.Sub(r.JobCreated).Round(time.Second))
	if r.ElapsedSeconds > 0 {
		fmt.Fprintf(w, "| mean rate | %.0f keys/s verified |\n", float64(r.Verified)/r.ElapsedSeconds)
	}
	fmt.Fprintln(w)

	step, label := Step(r.PerMinute)
	fmt.Fprintf(w, "## Verified per %s\n\n", label)
	fmt.Fprintf(w, "| %s (UTC) | verified | per second |\n", label)
	fmt.Fprintln(w, "| --- | ---: | ---: |")
	for _, b := range Rollup(r.PerMinute, step) {
		fmt.Fprintf(w, "| %s | %s | %.1f |\n", b.Minute.Format("2006-01-02 15:04"), num(b.Verified), float64(b.Verified)/step.Seconds())
	}
	fmt.Fprintf(w, "\n`%s` holds the count of every minute.\n", FileJSON)
}

// Step picks the table's row span: minutes up to 3 hours, hours up to 7 days, then days.
func Step(b []Bucket) (time.Duration, string) {
	switch span := time.Duration(len(b)) * time.Minute; {
	case span <= 3*time.Hour:
		return time.Minute, "minute"
	case span <= 7*24*time.Hour:
		return time.Hour, "hour"
	default:
		return 24 * time.Hour, "day"
	}
}

// Rollup sums per-minute buckets into buckets of step (UTC-aligned).
func Rollup(b []Bucket, step time.Duration) []Bucket {
	var out []Bucket
	for _, m := range b {
		start := m.Minute.Truncate(step)
		if len(out) == 0 || !out[len(out)-1].Minute.Equal(start) {
			out = append(out, Bucket{Minute: start})
		}
		out[len(out)-1].Verified += m.Verified
	}
	return out
}

// num writes n with thousands separators.
func num(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// code shows a key exactly, in a table cell: a code span, or a quoted Go string when the key
// holds characters a code span cannot show (control characters, invalid UTF-8, a BOM); one
// holding a backtick gets double-backtick fences.
func code(k string) string {
	if k == "" {
		return "(empty)"
	}
	plain := !strings.ContainsRune(k, '\uFFFD')
	for _, r := range k {
		if !unicode.IsPrint(r) || r == '\uFEFF' {
			plain = false
		}
	}
	if !plain || !utf8.ValidString(k) {
		k = strconv.Quote(k)
	}
	if len(k) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(k[cut]) {
			cut--
		}
		k = k[:cut] + fmt.Sprintf("… (%d bytes)", len(k))
	}
	k = strings.ReplaceAll(k, "|", `\|`)
	if strings.ContainsRune(k, '`') {
		return "`` " + k + " ``"
	}
	return "`" + k + "`"
}

// cell keeps a value on one table line.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// markdownPasses lists each scan's passes: a full pass, then the delta passes of the cut-over.
func markdownPasses(w io.Writer, r *Report) {
	if len(r.Scans) == 0 {
		return
	}
	fmt.Fprintln(w, "## Passes")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| table | pass | since | started | ended | keys read | published | complete |")
	fmt.Fprintln(w, "| --- | ---: | --- | --- | --- | ---: | ---: | --- |")
	for _, sc := range r.Scans {
		for _, p := range sc.Passes {
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", sc.Table, p.N, passSince(p), p.Start.UTC().Format(time.DateTime),
				passEnd(p), num(uint64(max(p.Scanned, 0))), num(uint64(max(p.Published, 0))), map[bool]string{true: "yes", false: "no"}[p.Complete])
		}
	}
	fmt.Fprintln(w)
}

// passSince says what a pass published: every key, or those written since its floor.
func passSince(p checkpoint.Pass) string {
	if p.Since == 0 {
		return "full"
	}
	return "since " + time.UnixMicro(p.Since).UTC().Format(time.DateTime)
}

func passEnd(p checkpoint.Pass) string {
	if p.End.IsZero() {
		return "running"
	}
	return p.End.UTC().Format(time.DateTime)
}
