package prune

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/tools/diff"
)

// What keeps prune from deleting a live key's object or anyone else's data: a quarantine prefix
// outside the rules' key space, an owner record naming a key the rules put at exactly this
// object, the bucket's own clock for the LastModified guard, a re-read of the owner key on every
// read target right before acting, and a DELETE conditional on the ETag that re-read judged.

// FileForeign lists the objects only in S3 that are not ferry's to delete: S3 key TAB why.
const FileForeign = "not-ferrys.txt"

// CheckQuarantine refuses a quarantine prefix under which the key rules could put an object: a
// moved object would then land on (and, where the server ignores If-None-Match on a copy,
// replace) a live key's object. prefix is the rules' literal prefix, which every S3 key they
// make begins with; a quarantine prefix that neither begins with it nor is a beginning of it
// differs from it at some byte, so no rule-made key begins with the quarantine prefix.
func CheckQuarantine(prefix, quarantine string) error {
	if quarantine == "" {
		return nil
	}
	if prefix == "" {
		return fmt.Errorf("--quarantine %q: the key template has no fixed prefix, so the key rules may put a live key's object under any prefix; delete without --quarantine, or give the template a fixed prefix", quarantine)
	}
	if strings.HasPrefix(quarantine, prefix) || strings.HasPrefix(prefix, quarantine) {
		return fmt.Errorf("--quarantine %q overlaps the key rules' prefix %q: a moved object could land on a live key's object; choose a prefix outside it (for example ferry-quarantine/)", quarantine, prefix)
	}
	return nil
}

// ownerOf is the source key the object's owner record names when the rules map it to exactly
// key: the object is ferry's, written for that key. Otherwise "" and why not: no owner record
// (another tool's, the application's own writes after the cut-over) or a key the rules put
// elsewhere (another job's object).
func ownerOf(rules *keyrules.Rules, info blobstore.Info, key string) (string, string) {
	owner := info.Owner()
	if owner == "" {
		return "", "no owner record (not written by ferry)"
	}
	s3key, err := rules.Map(owner)
	if err != nil {
		return "", fmt.Sprintf("owner %q: the key rules refuse it: %s", owner, oneLine(err.Error()))
	}
	if s3key != key {
		return "", fmt.Sprintf("owner %q: the key rules put it at %s", owner, s3key)
	}
	return owner, ""
}

// orphans HEADs the objects only in S3 (older than the guard by the listing) with o.Workers
// workers and sorts them: a candidate (ferry's, for a key the scan did not find), not ferry's
// (FileForeign), written since the guard (recent), gone, or unchecked (the HEAD failed).
type orphans struct {
	ch chan string
	wg sync.WaitGroup
}

// startOrphans starts the workers; mu guards res and the outputs, as in merge.
func startOrphans(ctx context.Context, b Bucket, rules *keyrules.Rules, o Options, guard time.Time, res *Result,
	mu *sync.Mutex, cands, foreign, recent *diff.Output, example func(class, key string)) *orphans {
	w := &orphans{ch: make(chan string, 1024)}
	for range max(o.Workers, 1) {
		w.wg.Go(func() {
			for key := range w.ch {
				info, err := b.Inspect(ctx, key)
				var why string
				if err == nil {
					_, why = ownerOf(rules, info, key)
				}
				mu.Lock()
				switch {
				case errors.Is(err, blobstore.ErrNotFound): // deleted since the listing
				case err != nil:
					res.Unchecked++
					if res.Unchecked <= 10 {
						o.log("prune: HEAD of an object only in S3 failed", "object", key, "err", err)
					}
				case !info.LastModified.Before(guard):
					res.Recent++
					recent.Line(key)
					example("recent", key)
				case why != "":
					res.Foreign++
					foreign.Line(key + "\t" + why)
				default:
					res.OnlyInS3++
					cands.Line(key)
					example("only_in_s3", key)
				}
				mu.Unlock()
			}
		})
	}
	return w
}

// send queues key; it returns false when ctx is done.
func (w *orphans) send(ctx context.Context, key string) bool {
	select {
	case w.ch <- key:
		return true
	case <-ctx.Done():
		return false
	}
}

// finish waits for the workers. The candidates are in FileCandidates in the order their HEADs
// answered, not sorted: held in memory to sort, a bucket with a billion deleted keys would not fit.
func (w *orphans) finish() {
	close(w.ch)
	w.wg.Wait()
}
