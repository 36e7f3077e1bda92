package diff

import (
	"context"
	"fmt"
	"os"
)

// The external sort and merge, for `ferry prune`, which sorts its key scan and its listing the
// same way: records of one line each, compared bytewise, duplicates dropped.

// Sorter sorts inputs in bounded memory, spilling to a folder of its own.
type Sorter struct {
	s   *sorter
	dir string
}

// NewSorter makes a sorter whose chunks and scratch take about budget bytes (Budget(mem)), with
// its spill folder under tmp; Close removes it. avgLine is the expected record length.
func NewSorter(tmp string, budget int64, avgLine int) (*Sorter, error) {
	dir, err := os.MkdirTemp(tmp, "ferry-sort-")
	if err != nil {
		return nil, fmt.Errorf("spill folder: %w", err)
	}
	s := newSorter(dir, budget)
	if avgLine > 0 {
		s.avgLine = avgLine
	}
	return &Sorter{s: s, dir: dir}, nil
}

// Budget is what the sort may use of a memory cap (--mem).
func Budget(mem int64) int64 { return budget(mem) }

// ParseSize reads a byte count such as 512MiB or 2GiB.
func ParseSize(s string) (int64, error) { return parseSize(s) }

// Runs is one sorted input.
type Runs struct{ r *runs }

// Lines is how many records were added to the input, duplicates included.
func (r *Runs) Lines() int64 { return r.r.lines }

// Sort sorts the records feed adds (a record must not hold a newline; it may be reused after add
// returns). keepLast keeps the last chunk in memory for a merge that comes next.
func (s *Sorter) Sort(ctx context.Context, feed func(add func(rec []byte) error) error, keepLast bool) (*Runs, error) {
	rs, err := s.s.sortInput(ctx, feed, keepLast)
	if err != nil {
		return nil, err
	}
	return &Runs{r: rs}, nil
}

// Merger yields a sorted input's distinct records in order.
type Merger struct{ m *merger }

// Next moves to the next distinct record; false at the end or on an error (Err).
func (m *Merger) Next() bool { return m.m.next() }

// Record is the current record; valid until Next.
func (m *Merger) Record() []byte { return m.m.cur }

// Err is the error that ended Next early.
func (m *Merger) Err() error { return m.m.err }

// Merge opens two sorted inputs for reading side by side (once both are sorted: the sort's memory
// goes to the read buffers).
func (s *Sorter) Merge(a, b *Runs) (*Merger, *Merger, error) {
	d := &differ{budget: s.s.budget}
	ma, mb, err := d.mergers(s.s, a.r, b.r)
	if err != nil {
		return nil, nil, err
	}
	return &Merger{ma}, &Merger{mb}, nil
}

// Close closes the mergers and removes every spill file.
func (s *Sorter) Close(ms ...*Merger) {
	for _, m := range ms {
		if m != nil {
			m.m.close()
		}
	}
	os.RemoveAll(s.dir)
}

// ListRanges are key ranges (after, upTo] that together cover every key under prefix exactly
// once, for listers working side by side.
func ListRanges(ctx context.Context, ls Lister, bucket, prefix string) ([][2]string, error) {
	return listRanges(ctx, ls, bucket, prefix)
}

// Output is a result file that appears whole or not at all: lines go to NAME.partial, and Commit
// renames it; Abort removes it unless committed.
type Output struct{ o *output }

// CreateOutput starts the result file name in dir.
func CreateOutput(dir, name string) (*Output, error) {
	o, err := createOutput(dir, name)
	if err != nil {
		return nil, err
	}
	return &Output{o: o}, nil
}

// Line writes s and a line break.
func (o *Output) Line(s string) { o.o.write(s + "\n") }

// Commit flushes the file and gives it its name.
func (o *Output) Commit() error { return o.o.commit() }

// Abort removes the partial file unless Commit succeeded.
func (o *Output) Abort() { o.o.abort() }
