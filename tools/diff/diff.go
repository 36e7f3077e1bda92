package diff

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ferry-migrate/ferry/shared/keylist"
)

// Output file names of `ferry diff A B`.
const (
	OnlyInA = "only-in-A"
	OnlyInB = "only-in-B"
)

// Counts are what one input held.
type Counts struct {
	Lines  int64 `json:"lines"`  // keys read (blank lines not counted)
	Unique int64 `json:"unique"` // distinct keys
}

// Result is what `ferry diff A B` found.
type Result struct {
	A       Counts `json:"a"`
	B       Counts `json:"b"`
	OnlyA   int64  `json:"only_in_a"`
	OnlyB   int64  `json:"only_in_b"`
	Common  int64  `json:"common"`
	Spilled int64  `json:"spilled_bytes"` // written to run files; 0 when both inputs fitted in memory
	// Files are the result files written, by name (only-in-A …): their paths, "-" for stdout.
	Files map[string]string `json:"files"`
}

// Differ reports whether the sets differ.
func (r Result) Differ() bool { return r.OnlyA > 0 || r.OnlyB > 0 }

func (r Result) String() string {
	return fmt.Sprintf("A: %s lines, %s unique; B: %s lines, %s unique; only in A: %s; only in B: %s; common: %s",
		thousands(r.A.Lines), thousands(r.A.Unique), thousands(r.B.Lines), thousands(r.B.Unique),
		thousands(r.OnlyA), thousands(r.OnlyB), thousands(r.Common))
}

// differ runs one ferry diff: where its outputs go and how much memory it may use.
type differ struct {
	out      string // output folder
	onlyA    string // file names in out of the keys only in A and only in B; "-": stdout
	onlyB    string
	stdout   io.Writer // where "-" writes; default os.Stdout
	tmp      string    // parent of the spill folder
	budget   int64     // bytes for the sort's chunks and scratch
	s3       keylist.Getter
	progress *diffProgress // nil: quiet
}

// withSorter runs f with a sorter whose spill folder is removed afterwards, whatever happens.
func (d *differ) withSorter(f func(s *sorter) error) error {
	dir, err := os.MkdirTemp(d.tmp, "ferry-diff-")
	if err != nil {
		return fmt.Errorf("spill folder (--tmp): %w", err)
	}
	defer os.RemoveAll(dir)
	return f(newSorter(dir, d.budget))
}

// sortList sorts one key list.
func (d *differ) sortList(ctx context.Context, s *sorter, label, name string, keepLast bool) (*runs, error) {
	l, err := keylist.Open(ctx, name, 0, d.s3)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	d.progress.list(label, l)
	return s.sortInput(ctx, func(add func([]byte) error) error {
		return readLines(ctx, l, add)
	}, keepLast)
}

// diffLists writes the keys only in a and only in b to the output folder.
func (d *differ) diffLists(ctx context.Context, a, b string) (Result, error) {
	var res Result
	err := d.withSorter(func(s *sorter) error {
		ra, err := d.sortList(ctx, s, "A", a, false)
		if err != nil {
			return err
		}
		defer s.removeRuns(ra)
		rb, err := d.sortList(ctx, s, "B", b, true)
		if err != nil {
			return err
		}
		defer s.removeRuns(rb)
		res.A.Lines, res.B.Lines = ra.lines, rb.lines
		ma, mb, err := d.mergers(s, ra, rb)
		if err != nil {
			return err
		}
		defer ma.close()
		defer mb.close()
		d.progress.phase("comparing")
		outA, err := d.createOutput(cmp.Or(d.onlyA, OnlyInA))
		if err != nil {
			return err
		}
		defer outA.abort()
		outB, err := d.createOutput(cmp.Or(d.onlyB, OnlyInB))
		if err != nil {
			return err
		}
		defer outB.abort()
		okA, okB := ma.next(), mb.next()
		for n := 0; okA || okB; n++ {
			if n&0xffff == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				d.progress.merged(ma.n + mb.n)
			}
			c := 0
			switch {
			case !okA:
				c = 1
			case !okB:
				c = -1
			default:
				c = bytes.Compare(ma.cur, mb.cur)
			}
			switch {
			case c < 0:
				outA.line(ma.cur)
				res.OnlyA++
				okA = ma.next()
			case c > 0:
				outB.line(mb.cur)
				res.OnlyB++
				okB = mb.next()
			default:
				res.Common++
				okA, okB = ma.next(), mb.next()
			}
		}
		if err := errors.Join(ma.err, mb.err); err != nil {
			return err
		}
		res.A.Unique, res.B.Unique = ma.n, mb.n
		res.Spilled = s.spilled.Load()
		res.Files = map[string]string{OnlyInA: outA.path, OnlyInB: outB.path}
		return errors.Join(outA.commit(), outB.commit())
	})
	d.progress.done()
	return res, err
}

// mergers opens the merge of each set of runs, with read buffers sized from what the sort no
// longer uses.
func (d *differ) mergers(s *sorter, sets ...*runs) (m0, m1 *merger, err error) {
	s.shrink()
	files := 0
	for _, rs := range sets {
		files += len(rs.files)
	}
	buf := 1 << 20
	if files > 0 {
		buf = int(min(max(d.budget/int64(4*files), 64<<10), 1<<20))
	}
	ms := make([]*merger, len(sets))
	for i, rs := range sets {
		if ms[i], err = rs.merge(buf); err != nil {
			for _, m := range ms[:i] {
				m.close()
			}
			return nil, nil, err
		}
	}
	return ms[0], ms[1], nil
}

// output is a result file, written under a temporary name and renamed when complete, so that an
// interrupted run never leaves a partial file under the final name.
type output struct {
	f    *os.File
	w    *bufio.Writer
	path string
	n    int64
	done bool
}

// createOutput opens the result file name in the output folder; "-" is stdout, written as it
// comes (an interrupted run leaves what it wrote there).
func (d *differ) createOutput(name string) (*output, error) {
	if name == Stdout {
		w := d.stdout
		if w == nil {
			w = os.Stdout
		}
		return &output{w: bufio.NewWriterSize(w, 1<<20), path: Stdout}, nil
	}
	return createOutput(d.out, name)
}

// Stdout is the result file name that writes to stdout.
const Stdout = "-"

func createOutput(dir, name string) (*output, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path + ".partial")
	if err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	return &output{f: f, w: bufio.NewWriterSize(f, 1<<20), path: path}, nil
}

func (o *output) line(b []byte) {
	o.w.Write(b)
	o.w.WriteByte('\n')
	o.n++
}

func (o *output) write(s string) {
	o.w.WriteString(s)
	o.n++
}

func (o *output) commit() error {
	if o.f == nil { // stdout
		o.done = true
		return o.w.Flush()
	}
	err := errors.Join(o.w.Flush(), o.f.Close())
	if err == nil {
		err = os.Rename(o.f.Name(), o.path)
	}
	if err != nil {
		os.Remove(o.f.Name())
		return fmt.Errorf("output %s: %w", o.path, err)
	}
	o.done = true
	return nil
}

// abort removes the partial file unless commit succeeded.
func (o *output) abort() {
	if !o.done && o.f != nil {
		o.f.Close()
		os.Remove(o.f.Name())
	}
}

// thousands formats n with comma separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return string(b)
}
