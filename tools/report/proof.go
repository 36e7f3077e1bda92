package report

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/tools/prune"
)

// FilePruned lists every object `ferry prune` deleted or moved: S3 key TAB source key (- when
// unknown) TAB action TAB time.
const FilePruned = "pruned.txt"

// ProofStatus values.
const (
	ProofProven = "PROVEN"
	ProofFailed = "NOT PROVEN"
	ProofNone   = "NONE" // ferry prune never ran
)

// readProof reads the last proof and the PRUNED records into r, and writes pruned.txt. A user
// that may not read PRUNED (an older operator identity) gets the rest of the report, with the
// error said in it.
func (r *Report) readProof(ctx context.Context, js jetstream.JetStream, n bus.Names, dir string) error {
	r.ProofStatus = ProofNone
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		return fmt.Errorf("report: kv %s: %w", n.KV, err)
	}
	if r.Proof, err = prune.LoadProof(ctx, kv); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if r.Proof != nil {
		r.ProofStatus, r.ProofWhy = ProofFailed, r.Proof.Why()
		if r.Proof.Error != "" {
			r.ProofWhy = strings.TrimPrefix(r.ProofWhy+"; "+r.Proof.Error, "; ")
		}
		if r.Unresolved > 0 {
			r.ProofWhy = strings.TrimPrefix(r.ProofWhy+"; "+r.unresolvedWhy(), "; ")
		}
		if r.Proof.Proven() && r.Unresolved == 0 {
			r.ProofStatus = ProofProven
		}
	}
	r.PrunedByAction = map[string]uint64{}
	return writeFile(filepath.Join(dir, FilePruned), func(w *bufio.Writer) error {
		var werr error
		err := prune.ReadPruned(ctx, js, n, func(p prune.Record) error {
			r.Pruned++
			action, _, _ := strings.Cut(p.Action, ":")
			r.PrunedByAction[action]++
			key := p.Key
			if key == "" {
				key = "-"
			}
			_, werr = fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", oneLine(p.Object), oneLine(key), oneLine(p.Action), p.Time.UTC().Format(time.RFC3339))
			return werr
		})
		if werr != nil {
			return werr
		}
		if err != nil {
			r.PrunedError = err.Error() // the report goes on without the records
		}
		return nil
	})
}

// unresolved counts the failure dead letters' keys that no later DONE entry resolved, and keeps
// examples, sorted.
func (r *Report) unresolved() {
	r.Unresolved = uint64(len(r.failures))
	keys := make([]string, 0, len(r.failures))
	for k := range r.failures {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	r.UnresolvedExamples = keys[:min(len(keys), KeysPerReason)]
	r.failures = nil
}

// unresolvedWhy says why unresolved dead letters keep the cut-over from being proven.
func (r *Report) unresolvedWhy() string {
	var ex []string
	for _, k := range r.UnresolvedExamples[:min(len(r.UnresolvedExamples), 3)] {
		ex = append(ex, fmt.Sprintf("%q", k))
	}
	more := ""
	if r.Unresolved > uint64(len(ex)) {
		more = ", …"
	}
	why := fmt.Sprintf("%d keys dead-lettered as failures have no later DONE entry (S3 may not hold their source bytes; replay them with `ferry dlq replay`): %s%s",
		r.Unresolved, strings.Join(ex, ", "), more)
	if r.Manifest.Unread != "" {
		why += "; " + r.Manifest.Unread
	}
	return why
}

// oneLine keeps a field on its line of a tab-separated file.
func oneLine(s string) string {
	return strings.Map(func(c rune) rune {
		if c == '\n' || c == '\r' || c == '\t' {
			return ' '
		}
		return c
	}, s)
}

// deletedAtSource counts the dead letters of reason deleted: keys a scan read whose row was gone
// when the fetcher came, deleted or expired at the source. Not failures.
func (r *Report) deletedAtSource() {
	r.DeletedAtSource = 0
	for sr, c := range r.DeadLetters {
		if _, reason, _ := strings.Cut(sr, "/"); reason == bus.ReasonDeleted {
			r.DeletedAtSource += c
		}
	}
}

// markdownProof writes the "Cut-over proof" section.
func markdownProof(w io.Writer, r *Report) {
	fmt.Fprintln(w, "## Cut-over proof")
	fmt.Fprintln(w)
	p := r.Proof
	if p == nil {
		fmt.Fprintf(w, "No proof yet: `ferry --job %s prune` writes one (a dry run by default).\n\n", r.Job)
	} else {
		if r.ProofStatus == ProofProven {
			fmt.Fprintf(w, "**PROVEN** on %s: a complete scan of the source at %s (required: %s) found the source key set and the bucket listing equal, every key written since the first scan pass started (less the stale check's margin) carries its newest writetime in S3, and every key dead-lettered as a failure was verified since.\n\n",
				p.Time.Format(time.DateTime+" UTC"), p.Consistency, p.Required)
		} else {
			fmt.Fprintf(w, "**NOT PROVEN** on %s: %s.\n\n", p.Time.Format(time.DateTime+" UTC"), cell(r.ProofWhy))
		}
		fmt.Fprintln(w, "| | |")
		fmt.Fprintln(w, "| --- | ---: |")
		fmt.Fprintf(w, "| scan | %s to %s, %s (required %s), %s |\n", p.ScanStart.Format(time.DateTime), p.ScanEnd.Format(time.DateTime),
			p.Consistency, p.Required, map[bool]string{true: "complete", false: "incomplete"}[p.Complete])
		if len(p.Tables) > 0 {
			fmt.Fprintf(w, "| tables | %s |\n", cell(strings.Join(p.Tables, ", ")))
		}
		fmt.Fprintf(w, "| source keys | %s |\n", num(uint64(p.SourceKeys)))
		fmt.Fprintf(w, "| objects | %s |\n", num(uint64(p.Objects)))
		fmt.Fprintf(w, "| source keys missing in S3 | %s |\n", num(uint64(p.Missing)))
		fmt.Fprintf(w, "| objects only in S3 | %s (%s deleted, %s quarantined by that run) |\n", num(uint64(p.OnlyInS3)), num(uint64(p.Deleted)), num(uint64(p.Quarantined)))
		fmt.Fprintf(w, "| stale objects (older than their source row) | %s of %s checked |\n", num(uint64(p.Stale)), num(uint64(p.Checked)))
		if p.Unchecked > 0 || p.Recent > 0 {
			fmt.Fprintf(w, "| not checked, written during the scan | %s, %s |\n", num(uint64(p.Unchecked)), num(uint64(p.Recent)))
		}
		fmt.Fprintln(w)
		only := "Only in S3"
		if p.OnlyInS3 > 0 && p.Remaining() == 0 {
			only = "Only in S3, and pruned by that run"
		}
		for _, c := range []struct{ class, title string }{{"missing", "Missing in S3"}, {"only_in_s3", only}, {"stale", "Stale"}, {"recent", "Written during the scan"}} {
			ex := p.Examples[c.class]
			if len(ex) == 0 {
				continue
			}
			fmt.Fprintf(w, "%s (up to %d; `ferry prune --out` wrote them all):\n\n", c.title, prune.Examples)
			for _, k := range ex {
				fmt.Fprintf(w, "- %s\n", code(k))
			}
			fmt.Fprintln(w)
		}
		if r.Unresolved > 0 {
			fmt.Fprintf(w, "Dead-lettered as failures, with no DONE entry stored since (%s keys; up to %d here, `%s` lists every dead letter):\n\n", num(r.Unresolved), KeysPerReason, FileEntries)
			for _, k := range r.UnresolvedExamples {
				fmt.Fprintf(w, "- %s\n", code(k))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "Pruned: %s objects", num(r.Pruned))
	if r.Pruned > 0 {
		fmt.Fprintf(w, " (deleted %s, quarantined %s, failed %s), each in `%s` (object, source key, action, time)",
			num(r.PrunedByAction["deleted"]), num(r.PrunedByAction["quarantined"]), num(r.PrunedByAction["failed"]), FilePruned)
	}
	fmt.Fprintln(w, ".")
	if r.PrunedError != "" {
		fmt.Fprintf(w, "\nThe PRUNED records could not be read: %s.\n", cell(r.PrunedError))
	}
	fmt.Fprintln(w)
}

// markdownDeleted writes the "Deleted at the source" section.
func markdownDeleted(w io.Writer, r *Report) {
	if r.DeletedAtSource == 0 {
		return
	}
	fmt.Fprintln(w, "## Deleted at the source")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%s keys were read by a scan pass and gone when the fetcher came (deleted or expired at the source since): not failures, nothing to replay. They are in `%s` with reason `%s`.\n\n",
		num(r.DeletedAtSource), FileEntries, bus.ReasonDeleted)
	fmt.Fprintln(w, "| key | stage | error |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, sr := range sortedKeys(r.DeadLetters) {
		if _, reason, _ := strings.Cut(sr, "/"); reason != bus.ReasonDeleted {
			continue
		}
		for _, e := range r.Samples[sr] {
			fmt.Fprintf(w, "| %s | %s | %s |\n", code(e.Key), e.Stage, cell(e.Error))
		}
	}
	fmt.Fprintln(w)
}
