package producer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

// since is a parsed --since: nothing (a full pass), a pass number, the last complete pass, or
// a time.
type since struct {
	pass int       // > 0: pass N's start
	last bool      // the last complete pass's start
	at   time.Time // non-zero: this time
}

func (s since) full() bool { return s.pass == 0 && !s.last && s.at.IsZero() }

// parseSince reads --since: a pass number, "last", or an RFC 3339 time; empty is a full pass.
func parseSince(v string) (since, error) {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return since{}, nil
	case strings.EqualFold(v, "last"):
		return since{last: true}, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 {
			return since{}, fmt.Errorf("--since %s: a pass number starts at 1", v)
		}
		return since{pass: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return since{}, fmt.Errorf("--since %q: neither a pass number, last, nor an RFC 3339 time (2026-01-02T15:04:05Z)", v)
	}
	if t.Before(time.Unix(1, 0)) {
		return since{}, fmt.Errorf("--since %s: before 1970", v)
	}
	return since{at: t}, nil
}

// passChoice is what a scan run does: start pass N (or resume it), or nothing when the last pass
// is complete and no new one was asked for.
type passChoice struct {
	Pass    checkpoint.Pass // the record: as stored for a resumed pass, to be stored for a new one
	Resume  bool
	Nothing bool
}

// choosePass decides from the table's pass records (any order) and the flags which pass this
// run scans. passes holds every stored record; a new pass gets the next number. A new pass's
// record has Start = now; its writetime floor is --since's point less margin.
func choosePass(passes []checkpoint.Pass, s since, margin time.Duration, restart bool, table, consistency, dc string, now time.Time) (passChoice, error) {
	byN := map[int]checkpoint.Pass{}
	var last *checkpoint.Pass
	for i := range passes {
		p := &passes[i]
		byN[p.N] = *p
		if last == nil || p.N > last.N {
			last = p
		}
	}
	want := checkpoint.Pass{Table: table, Consistency: consistency, DC: dc, Start: now.UTC()}
	if !s.full() {
		var from time.Time
		switch {
		case s.pass > 0:
			p, ok := byN[s.pass]
			switch {
			case !ok:
				return passChoice{}, fmt.Errorf("--since %d: the scan of %s has no pass %d%s", s.pass, table, s.pass, passRange(last))
			case !p.Complete:
				return passChoice{}, fmt.Errorf("--since %d: pass %d of %s is not complete, so keys written before it started may be missing; give a complete pass or a time", s.pass, s.pass, table)
			}
			if why := uncovered(byN, p); why != "" {
				return passChoice{}, fmt.Errorf("--since %d: %s, so no pass published the keys written before pass %d's floor in what it left unread; %s", s.pass, why, p.N, coverFix(last))
			}
			from, want.SinceFrom = p.Start, "pass "+strconv.Itoa(p.N)
		case s.last:
			var lc *checkpoint.Pass
			for i := range passes {
				if p := &passes[i]; p.Complete && (lc == nil || p.N > lc.N) {
					lc = p
				}
			}
			if lc == nil {
				return passChoice{}, fmt.Errorf("--since last: the scan of %s has no complete pass yet", table)
			}
			if why := uncovered(byN, *lc); why != "" {
				return passChoice{}, fmt.Errorf("--since last: the last complete pass of %s is pass %d, but %s, so no pass published the keys written before pass %d's floor in what it left unread; %s", table, lc.N, why, lc.N, coverFix(last))
			}
			from, want.SinceFrom = lc.Start, "pass "+strconv.Itoa(lc.N)
		default:
			from, want.SinceFrom = s.at, s.at.UTC().Format(time.RFC3339Nano)
		}
		want.Since = max(from.Add(-margin).UnixMicro(), 1)
		want.Margin = margin.String()
	}
	if last != nil && !last.Complete && !restart {
		if last.Since != want.Since {
			return passChoice{}, fmt.Errorf("pass %d of %s (%s) is not complete: run again with %s to finish it, or add --restart to leave it incomplete and start a new pass",
				last.N, table, last.Kind(), resumeFlags(*last))
		}
		if !strings.EqualFold(last.Consistency, consistency) || last.DC != dc {
			return passChoice{}, fmt.Errorf("pass %d of %s was started at consistency %s in DC %q: finish it with --scan-consistency %s --scan-dc %q, or add --restart to start a new pass",
				last.N, table, last.Consistency, last.DC, last.Consistency, last.DC)
		}
		return passChoice{Pass: *last, Resume: true}, nil
	}
	if last != nil && last.Complete && s.full() && !restart {
		return passChoice{Pass: *last, Nothing: true}, nil
	}
	want.N = 1
	if last != nil {
		want.N = last.N + 1
	}
	return passChoice{Pass: want}, nil
}

// uncovered says why pass p does not cover its table: "" when every key written before p started
// was published by p or by the passes its floor rests on. A pass covers when it is complete and
// is a full pass or a delta pass whose floor rests on a pass that covers: pass M's start for
// --since M; for a time, a covering pass (numbered before p) that started at or after the floor.
// A complete delta pass over an unfinished full pass reads only what was written since its floor,
// so the keys the full pass never reached, written before, are in no pass.
func uncovered(byN map[int]checkpoint.Pass, p checkpoint.Pass) string {
	for depth := 0; ; depth++ {
		switch {
		case !p.Complete:
			return fmt.Sprintf("pass %d (%s) is not complete", p.N, p.Kind())
		case p.Since == 0:
			return ""
		case depth > len(byN): // a loop of records: never written by ferry
			return fmt.Sprintf("pass %d's floor rests on a loop of passes", p.N)
		}
		if v, ok := strings.CutPrefix(p.SinceFrom, "pass "); ok {
			m, err := strconv.Atoi(v)
			base, found := byN[m]
			if err != nil || !found || m >= p.N {
				return fmt.Sprintf("pass %d rests on pass %s, which the scan has no record of", p.N, v)
			}
			p = base
			continue
		}
		// A floor from a time: the operator's word for it is only as good as a covering pass
		// that began at or after it.
		var whys, open []string
		for n := p.N - 1; n >= 1; n-- {
			q, ok := byN[n]
			if ok && !q.Complete {
				open = append(open, fmt.Sprintf("pass %d (%s) is not complete", q.N, q.Kind()))
			}
			if !ok || q.Start.UnixMicro() < p.Since {
				continue
			}
			why := uncovered(byN, q)
			if why == "" {
				return ""
			}
			whys = append(whys, why)
		}
		if len(whys) == 0 {
			why := fmt.Sprintf("pass %d's floor (%s) is later than the start of every earlier pass", p.N, p.Kind())
			if len(open) > 0 {
				why += " (and " + strings.Join(open, ", ") + ")"
			}
			return why
		}
		return fmt.Sprintf("pass %d's floor (%s) rests on no covering pass: %s", p.N, p.Kind(), strings.Join(whys, "; "))
	}
}

// coverFix is what to run when the chosen base does not cover: finish the last pass when it is
// an unfinished full pass, else start a new full pass.
func coverFix(last *checkpoint.Pass) string {
	if last != nil && !last.Complete && last.Since == 0 {
		return fmt.Sprintf("finish full pass %d (run again with no --since), then start from it with --since %d; or add --restart without --since for a new full pass", last.N, last.N)
	}
	return "run a new full pass (--restart without --since), then start delta passes from it; or give --since a pass that rests on a complete full pass"
}

// resumeFlags are the flags that resume pass p.
func resumeFlags(p checkpoint.Pass) string {
	if p.Since == 0 {
		return "no --since"
	}
	v := strings.TrimPrefix(p.SinceFrom, "pass ")
	s := "--since " + v
	if p.Margin != "" {
		s += " --since-margin " + p.Margin
	}
	return s
}

func passRange(last *checkpoint.Pass) string {
	if last == nil {
		return " (no pass yet: run a full pass first, or give a time)"
	}
	return fmt.Sprintf(" (passes 1 to %d)", last.N)
}

// checkMargin is --since-margin's check.
func checkMargin(m time.Duration) error {
	if m < 0 {
		return errors.New("--since-margin: must not be negative")
	}
	return nil
}
