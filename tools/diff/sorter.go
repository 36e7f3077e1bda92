package diff

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// The external sort. Lines go into a chunk: one arena of bytes and one entry (offset, length,
// cached bytes) per line, so a line costs no allocation. A full chunk is sorted (radix, in
// parallel) and spilled to a run file, duplicates dropped, while the next chunk fills; the runs are
// then merged. Two chunks exist at most, plus the sort's scratch, all sized from the memory
// budget: that is what bounds the memory, whatever the input size.

// chunk is lines waiting to be sorted.
type chunk struct {
	arena []byte
	ents  []entry
	lcp   int // length of the prefix every line shares
}

// add appends line; false when it does not fit.
func (c *chunk) add(line []byte) bool {
	if len(c.ents) == cap(c.ents) || len(c.arena)+len(line) > cap(c.arena) {
		return false
	}
	off := len(c.arena)
	c.arena = append(c.arena, line...)
	if len(c.ents) == 0 {
		c.lcp = len(line)
	} else if c.lcp > 0 {
		first := c.arena[c.ents[0].off:]
		n := min(c.lcp, len(line))
		i := 0
		for i < n && line[i] == first[i] {
			i++
		}
		c.lcp = i
	}
	c.ents = append(c.ents, entry{off: uint32(off), n: uint32(len(line))})
	return true
}

func (c *chunk) line(i int) []byte {
	e := c.ents[i]
	return c.arena[e.off : e.off+e.n]
}

func (c *chunk) reset() {
	c.arena, c.ents, c.lcp = c.arena[:0], c.ents[:0], 0
}

// sorter owns the chunks, the scratch and the spill folder.
type sorter struct {
	dir     string // spill folder (created by the caller, removed by it)
	budget  int64  // bytes for both chunks and the scratch
	avgLine int    // expected line length, to split a chunk between arena and entries

	mu        sync.Mutex
	allocated int
	free      chan *chunk
	scratch   []entry
	seq       atomic.Int64 // run file names
	spilled   atomic.Int64 // bytes written to run files
}

func newSorter(dir string, budget int64) *sorter {
	return &sorter{dir: dir, budget: budget, avgLine: 40, free: make(chan *chunk, 2)}
}

// sizes splits the budget: two chunks of L lines (arena L×avg, entries L×16) and a scratch of L
// entries.
func (s *sorter) sizes() (arena, lines int) {
	per := int64(2*s.avgLine + 3*16)
	l := s.budget / per
	a := l * int64(s.avgLine)
	// Offsets are uint32: keep an arena under 4 GiB.
	if a > math.MaxUint32 {
		a = math.MaxUint32
	}
	return int(a), int(max(l, 1))
}

// get returns an empty chunk, allocating the second one only when the first is busy.
func (s *sorter) get(ctx context.Context) (*chunk, error) {
	select {
	case c := <-s.free:
		return c, nil
	default:
	}
	s.mu.Lock()
	if s.allocated < 2 {
		s.allocated++
		a, l := s.sizes()
		if s.scratch == nil {
			s.scratch = make([]entry, l)
		}
		s.mu.Unlock()
		return &chunk{arena: make([]byte, 0, a), ents: make([]entry, 0, l)}, nil
	}
	s.mu.Unlock()
	select {
	case c := <-s.free:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *sorter) put(c *chunk) {
	c.reset()
	s.free <- c
}

// sortChunk sorts c's entries. One chunk is sorted at a time (the scratch is shared).
func (s *sorter) sortChunk(c *chunk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sortEntries(c.ents, s.scratch, c.arena, c.lcp)
}

// runs is one input, sorted: run files and, for the input's last chunk, possibly the chunk itself.
type runs struct {
	files []string
	mem   *chunk
	lines int64 // lines added
}

// errSpill stops the feed after the spill goroutine failed; its error is returned instead.
var errSpill = errors.New("spill failed")

// feedFunc calls add with every line of an input; the line may be reused after add returns.
type feedFunc func(add func(line []byte) error) error

// sortInput sorts the lines feed gives. The last chunk stays in memory when it is the only one
// (the input fitted) or when keepLast says the merge comes next; release gives it back.
func (s *sorter) sortInput(ctx context.Context, feed feedFunc, keepLast bool) (*runs, error) {
	rs := &runs{}
	full := make(chan *chunk)
	done := make(chan error, 1)
	var failed atomic.Bool
	go func() {
		var err error
		for c := range full {
			if err == nil {
				s.sortChunk(c)
				var path string
				if path, err = s.spill(c); err == nil {
					rs.files = append(rs.files, path) // read only after done
				} else {
					failed.Store(true)
				}
			}
			s.put(c)
		}
		done <- err
	}()
	var cur *chunk
	add := func(line []byte) error {
		if cur != nil && cur.add(line) {
			return nil
		}
		if failed.Load() {
			return errSpill
		}
		if cur != nil {
			full <- cur
			cur = nil
		}
		c, err := s.get(ctx)
		if err != nil {
			return err
		}
		cur = c
		if !c.add(line) {
			return fmt.Errorf("a line of %d bytes is longer than the sort buffer (%d bytes); raise --mem", len(line), cap(c.arena))
		}
		return nil
	}
	ferr := feed(func(line []byte) error {
		rs.lines++
		return add(line)
	})
	close(full)
	werr := <-done
	if ferr != nil || werr != nil {
		if cur != nil {
			s.put(cur)
		}
		s.removeRuns(rs)
		if errors.Is(ferr, errSpill) {
			return nil, werr // the spill's own error says what happened
		}
		return nil, errors.Join(ferr, werr)
	}
	if cur != nil {
		s.sortChunk(cur)
		if len(rs.files) == 0 || keepLast {
			rs.mem = cur
		} else {
			path, err := s.spill(cur)
			s.put(cur)
			if err != nil {
				s.removeRuns(rs)
				return nil, err
			}
			rs.files = append(rs.files, path)
		}
	}
	return rs, nil
}

// spill writes c's sorted lines, without duplicates, to a new run file.
func (s *sorter) spill(c *chunk) (string, error) {
	path := filepath.Join(s.dir, fmt.Sprintf("run-%06d", s.seq.Add(1)))
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("spill: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var prev []byte
	var n int64
	for i := range c.ents {
		line := c.line(i)
		if i > 0 && bytes.Equal(line, prev) {
			continue
		}
		prev = line
		w.Write(line)
		w.WriteByte('\n')
		n += int64(len(line)) + 1
	}
	err = errors.Join(w.Flush(), f.Close())
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("spill %s: %w", path, err)
	}
	s.spilled.Add(n)
	return path, nil
}

func (s *sorter) removeRuns(rs *runs) {
	for _, f := range rs.files {
		os.Remove(f)
	}
	rs.files = nil
	s.release(rs)
}

// release gives an in-memory run's chunk back.
func (s *sorter) release(rs *runs) {
	if rs.mem != nil {
		s.put(rs.mem)
		rs.mem = nil
	}
}

// source is one run being merged: a run file or the in-memory chunk.
type source struct {
	line []byte
	br   *bufio.Reader
	f    *os.File
	long []byte // a line longer than the read buffer, assembled here
	mem  *chunk
	i    int
}

// next moves to the source's next line; false at its end.
func (src *source) next() (bool, error) {
	if src.mem != nil {
		if src.i >= len(src.mem.ents) {
			return false, nil
		}
		src.line = src.mem.line(src.i)
		src.i++
		return true, nil
	}
	line, err := src.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		src.long = append(src.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = src.br.ReadSlice('\n')
			src.long = append(src.long, line...)
		}
		line = src.long
	}
	if err != nil {
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return false, nil
		}
		if !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("read run %s: %w", src.f.Name(), err)
		}
		return false, fmt.Errorf("read run %s: last line has no newline", src.f.Name())
	}
	src.line = line[:len(line)-1]
	return true, nil
}

// merger yields the lines of several sorted runs in order, each distinct line once.
type merger struct {
	srcs []*source
	heap []*source
	cur  []byte // the line last returned (a copy: the sources reuse their buffers)
	n    int64  // distinct lines returned
	err  error
}

// merge opens rs for reading; each run file gets a read buffer of bufSize bytes.
func (rs *runs) merge(bufSize int) (*merger, error) {
	m := &merger{}
	for _, path := range rs.files {
		f, err := os.Open(path)
		if err != nil {
			m.close()
			return nil, fmt.Errorf("open run: %w", err)
		}
		m.srcs = append(m.srcs, &source{f: f, br: bufio.NewReaderSize(f, bufSize)})
	}
	if rs.mem != nil {
		m.srcs = append(m.srcs, &source{mem: rs.mem})
	}
	for _, src := range m.srcs {
		ok, err := src.next()
		if err != nil {
			m.close()
			return nil, err
		}
		if ok {
			m.heap = append(m.heap, src)
		}
	}
	for i := len(m.heap)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
	return m, nil
}

// next moves to the next distinct line, in m.cur; false at the end or on error (m.err).
func (m *merger) next() bool {
	for len(m.heap) > 0 {
		top := m.heap[0]
		dup := m.n > 0 && bytes.Equal(top.line, m.cur)
		if !dup {
			m.cur = append(m.cur[:0], top.line...)
		}
		ok, err := top.next()
		if err != nil {
			m.err = err
			return false
		}
		if !ok {
			last := len(m.heap) - 1
			m.heap[0] = m.heap[last]
			m.heap = m.heap[:last]
		}
		if len(m.heap) > 0 {
			m.down(0)
		}
		if !dup {
			m.n++
			return true
		}
	}
	return false
}

// down restores the heap below i (a binary min-heap on the current lines; ties go either way,
// duplicates are dropped by next).
func (m *merger) down(i int) {
	h := m.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		j := l
		if r := l + 1; r < len(h) && bytes.Compare(h[r].line, h[l].line) < 0 {
			j = r
		}
		if bytes.Compare(h[j].line, h[i].line) >= 0 {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

func (m *merger) close() {
	for _, src := range m.srcs {
		if src.f != nil {
			src.f.Close()
		}
	}
}

// shrink drops the free chunks and the scratch once sorting is over, so that the merge's read
// buffers reuse their memory.
func (s *sorter) shrink() {
	for {
		select {
		case <-s.free:
		default:
			s.mu.Lock()
			s.scratch = nil
			s.allocated = 2 // no more chunks
			s.mu.Unlock()
			return
		}
	}
}
