package producer

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

func TestParseSince(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want since
		err  string
	}{
		{"", since{}, ""},
		{"3", since{pass: 3}, ""},
		{" 12 ", since{pass: 12}, ""},
		{"last", since{last: true}, ""},
		{"LAST", since{last: true}, ""},
		{"2026-03-04T05:06:07Z", since{at: at}, ""},
		{"2026-03-04T07:06:07+02:00", since{at: at}, ""},
		{"2026-03-04T05:06:07.5Z", since{at: at.Add(500 * time.Millisecond)}, ""},
		{"0", since{}, "starts at 1"},
		{"-2", since{}, "starts at 1"},
		{"yesterday", since{}, "neither a pass number"},
		{"2026-03-04", since{}, "RFC 3339"},
		{"1969-01-01T00:00:00Z", since{}, "before 1970"},
	} {
		got, err := parseSince(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseSince(%q) = %v, want an error with %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("parseSince(%q): %v", tc.in, err)
		case got.pass != tc.want.pass || got.last != tc.want.last || !got.at.Equal(tc.want.at):
			t.Errorf("parseSince(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestChoosePass(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(48 * time.Hour)
	us := func(t time.Time) int64 { return t.UnixMicro() }
	full1 := checkpoint.Pass{N: 1, Table: "ks.t", Consistency: "LOCAL_ONE", Start: t0, End: t0.Add(time.Hour), Complete: true}
	full1Open := full1
	full1Open.End, full1Open.Complete = time.Time{}, false
	delta2 := checkpoint.Pass{N: 2, Table: "ks.t", Consistency: "LOCAL_ONE", Start: t0.Add(24 * time.Hour),
		Since: us(t0.Add(-10 * time.Minute)), SinceFrom: "pass 1", Margin: "10m0s", End: t0.Add(25 * time.Hour), Complete: true}
	delta2Open := delta2
	delta2Open.End, delta2Open.Complete = time.Time{}, false
	at := t0.Add(30 * time.Hour)
	const m = 10 * time.Minute
	// Delta passes from a time: over pass 1's start (it rests on pass 1), and after it (it rests
	// on nothing: keys written between pass 1's start and its floor are in no pass).
	timed2 := checkpoint.Pass{N: 2, Table: "ks.t", Consistency: "LOCAL_ONE", Start: t0.Add(24 * time.Hour),
		Since: us(t0.Add(-time.Hour)), SinceFrom: t0.Add(-50 * time.Minute).Format(time.RFC3339Nano), Margin: "10m0s", End: t0.Add(25 * time.Hour), Complete: true}
	late2 := timed2
	late2.Since, late2.SinceFrom = us(t0.Add(5*time.Hour)), t0.Add(5*time.Hour+m).Format(time.RFC3339Nano)
	delta3 := checkpoint.Pass{N: 3, Table: "ks.t", Consistency: "LOCAL_ONE", Start: t0.Add(40 * time.Hour),
		Since: us(timed2.Start.Add(-m)), SinceFrom: "pass 2", Margin: "10m0s", End: t0.Add(41 * time.Hour), Complete: true}
	full3Open := checkpoint.Pass{N: 3, Table: "ks.t", Consistency: "LOCAL_ONE", Start: t0.Add(40 * time.Hour)}

	for _, tc := range []struct {
		name    string
		passes  []checkpoint.Pass
		since   since
		margin  time.Duration
		restart bool
		cons    string
		// the choice
		n       int
		resume  bool
		nothing bool
		floor   int64
		from    string
		err     string
	}{
		{name: "first pass", n: 1},
		{name: "first pass from a time", since: since{at: at}, margin: m, n: 1, floor: us(at.Add(-m)), from: "2026-01-02T06:00:00Z"},
		{name: "first pass since a pass", since: since{pass: 1}, err: "no pass 1 (no pass yet"},
		{name: "first pass since last", since: since{last: true}, err: "no complete pass yet"},
		{name: "full pass done", passes: []checkpoint.Pass{full1}, n: 1, nothing: true},
		{name: "full pass done, restart", passes: []checkpoint.Pass{full1}, restart: true, n: 2},
		{name: "full pass open resumes", passes: []checkpoint.Pass{full1Open}, n: 1, resume: true},
		{name: "full pass open, restart", passes: []checkpoint.Pass{full1Open}, restart: true, n: 2},
		{name: "full pass open, since", passes: []checkpoint.Pass{full1Open}, since: since{at: at}, margin: m,
			err: "pass 1 of ks.t (full) is not complete: run again with no --since to finish it, or add --restart"},
		{name: "full pass open, since itself", passes: []checkpoint.Pass{full1Open}, since: since{pass: 1}, err: "pass 1 of ks.t is not complete"},
		{name: "full pass open, other consistency", passes: []checkpoint.Pass{full1Open}, cons: "QUORUM", err: "--scan-consistency LOCAL_ONE"},
		{name: "delta since 1", passes: []checkpoint.Pass{full1}, since: since{pass: 1}, margin: m, n: 2, floor: us(t0.Add(-m)), from: "pass 1"},
		{name: "delta since last, no margin", passes: []checkpoint.Pass{delta2, full1}, since: since{last: true}, n: 3, floor: us(delta2.Start), from: "pass 2"},
		{name: "delta since a time", passes: []checkpoint.Pass{full1, delta2}, since: since{at: at}, margin: m, n: 3, floor: us(at.Add(-m)), from: "2026-01-02T06:00:00Z"},
		{name: "delta since a missing pass", passes: []checkpoint.Pass{full1, delta2}, since: since{pass: 5}, err: "no pass 5 (passes 1 to 2)"},
		{name: "delta open resumes with the same since", passes: []checkpoint.Pass{full1, delta2Open}, since: since{pass: 1}, margin: m, n: 2, resume: true, floor: delta2.Since, from: "pass 1"},
		{name: "delta open resumes with last", passes: []checkpoint.Pass{full1, delta2Open}, since: since{last: true}, margin: m, n: 2, resume: true, floor: delta2.Since, from: "pass 1"},
		{name: "delta open, other margin", passes: []checkpoint.Pass{full1, delta2Open}, since: since{pass: 1}, margin: time.Minute,
			err: "pass 2 of ks.t (delta since pass 1 less 10m0s) is not complete: run again with --since 1 --since-margin 10m0s to finish it"},
		{name: "delta open, no since", passes: []checkpoint.Pass{full1, delta2Open}, err: "with --since 1 --since-margin 10m0s"},
		{name: "delta open, restart full", passes: []checkpoint.Pass{full1, delta2Open}, restart: true, n: 3},
		{name: "delta open, restart delta since 1", passes: []checkpoint.Pass{full1, delta2Open}, restart: true, since: since{pass: 1}, margin: m, n: 3, floor: us(t0.Add(-m)), from: "pass 1"},
		{name: "delta since an open pass", passes: []checkpoint.Pass{full1, delta2Open}, restart: true, since: since{pass: 2}, err: "pass 2 of ks.t is not complete"},
		{name: "since last over a time delta on pass 1", passes: []checkpoint.Pass{full1, timed2}, since: since{last: true}, n: 3, floor: us(timed2.Start), from: "pass 2"},
		{name: "since last over a chain on pass 1", passes: []checkpoint.Pass{full1, timed2, delta3}, since: since{last: true}, n: 4, floor: us(delta3.Start), from: "pass 3"},
		{name: "since last over an unfinished full pass", passes: []checkpoint.Pass{full1Open, timed2}, since: since{last: true},
			err: "the last complete pass of ks.t is pass 2, but pass 2's floor (delta since 2025-12-31T23:10:00Z less 10m0s) rests on no covering pass: pass 1 (full) is not complete"},
		{name: "since last over an unfinished full pass, fix", passes: []checkpoint.Pass{full1Open, timed2}, since: since{last: true},
			err: "run a new full pass (--restart without --since)"},
		{name: "since 2 over an unfinished full pass", passes: []checkpoint.Pass{full1Open, timed2}, since: since{pass: 2}, err: "pass 1 (full) is not complete"},
		{name: "since 2 over a time after an unfinished full pass", passes: []checkpoint.Pass{full1Open, late2}, since: since{pass: 2},
			err: "later than the start of every earlier pass (and pass 1 (full) is not complete), so no pass published"},
		{name: "since 3 over a chain on an unfinished full pass", passes: []checkpoint.Pass{full1Open, timed2, delta3}, since: since{pass: 3}, err: "pass 1 (full) is not complete"},
		{name: "since last, a full pass to finish", passes: []checkpoint.Pass{full1Open, timed2, full3Open}, since: since{last: true},
			err: "finish full pass 3 (run again with no --since), then start from it with --since 3"},
		{name: "since last over a time after pass 1 started", passes: []checkpoint.Pass{full1, late2}, since: since{last: true}, err: "pass 2's floor (delta since 2026-01-01T05:10:00Z less 10m0s) is later than the start of every earlier pass, so"},
		{name: "a time over an unfinished full pass is the operator's", passes: []checkpoint.Pass{full1Open, timed2}, since: since{at: at}, margin: m, n: 3, floor: us(at.Add(-m)), from: "2026-01-02T06:00:00Z"},
		{name: "delta done, nothing asked", passes: []checkpoint.Pass{full1, delta2}, n: 2, nothing: true, floor: delta2.Since, from: "pass 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cons := tc.cons
			if cons == "" {
				cons = "LOCAL_ONE"
			}
			c, err := choosePass(tc.passes, tc.since, tc.margin, tc.restart, "ks.t", cons, "", now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := c.Pass
			if p.N != tc.n || c.Resume != tc.resume || c.Nothing != tc.nothing || p.Since != tc.floor || p.SinceFrom != tc.from {
				t.Errorf("choice = pass %d resume %v nothing %v since %d from %q; want pass %d resume %v nothing %v since %d from %q",
					p.N, c.Resume, c.Nothing, p.Since, p.SinceFrom, tc.n, tc.resume, tc.nothing, tc.floor, tc.from)
			}
			if !c.Resume && !c.Nothing && (!p.Start.Equal(now) || p.Table != "ks.t" || p.Consistency != cons || p.Complete || !p.End.IsZero()) {
				t.Errorf("new pass record = %+v", p)
			}
		})
	}
}

// TestKeyID: pass 1 and key lists keep the key's id (a scan started before passes resumes with
// the same ids); a later pass has its own, so the duplicate windows keep none of its messages out.
func TestKeyID(t *testing.T) {
	id0, id1, id2, id3 := keyID("j", "k", 0), keyID("j", "k", 1), keyID("j", "k", 2), keyID("j", "k", 3)
	if id0 != id1 || len(id1) != 32 {
		t.Errorf("pass 1 id %q, list id %q: want the same 32 hex", id1, id0)
	}
	if id2 != id1+".p2" || id3 != id1+".p3" {
		t.Errorf("ids %q %q, want %q.p2 and .p3", id2, id3, id1)
	}
}
