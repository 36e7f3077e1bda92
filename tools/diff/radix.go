package diff

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"runtime"
	"slices"
	"sync"
)

// entry is one line of a chunk: its place in the chunk's arena and, for the radix sort, eight of
// its bytes (big-endian, zero-padded) from the current depth on.
type entry struct {
	pre uint64
	off uint32
	n   uint32
}

// smallSort is the bucket size under which an insertion sort beats another radix pass.
const smallSort = 32

// maxRadixDepth is how deep (bytes after the common prefix) the radix sort goes before it hands a
// bucket of lines that are still equal to a comparison sort: many duplicates, or long keys that
// differ only far in.
const maxRadixDepth = 64

// sortEntries sorts ents by their lines in arena (bytewise, as LC_ALL=C), all of which start with
// the same lcp bytes. tmp is scratch of at least len(ents). It is an MSD radix sort on the cached
// eight bytes, refilled eight bytes further when they are used up; the buckets of the first byte
// are sorted in parallel.
func sortEntries(ents, tmp []entry, arena []byte, lcp int) {
	for i := range ents {
		ents[i].pre = load8(arena, ents[i], lcp)
	}
	s := radix{arena: arena, lcp: lcp}
	tmp = tmp[:len(ents)]
	if len(ents) <= smallSort {
		s.insertion(ents)
		return
	}
	// The first byte that splits the chunk here; its buckets then by GOMAXPROCS workers (a chunk
	// of one kind of key has a dozen big buckets there, which splits the work evenly enough).
	shift := 56
	var bounds [257]int
	for ; shift >= 0; shift -= 8 {
		var split bool
		if bounds, split = s.pass(ents, tmp, uint(shift)); split {
			break
		}
	}
	if shift < 0 { // eight equal bytes everywhere: no split to share out
		s.sort(ents, tmp, -8, lcp)
		return
	}
	var wg sync.WaitGroup
	work := make(chan [2]int, 256)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for b := range work {
				s.sort(ents[b[0]:b[1]], tmp[b[0]:b[1]], shift-8, lcp)
			}
		})
	}
	for i := range 256 {
		if bounds[i+1]-bounds[i] > 1 {
			work <- [2]int{bounds[i], bounds[i+1]}
		}
	}
	close(work)
	wg.Wait()
}

type radix struct {
	arena []byte
	lcp   int
}

// load8 is the eight bytes of e's line from depth on, big-endian, zero-padded.
func load8(arena []byte, e entry, depth int) uint64 {
	line := arena[e.off : e.off+e.n]
	if depth+8 <= len(line) {
		return binary.BigEndian.Uint64(line[depth:])
	}
	var v uint64
	for i := range 8 {
		v <<= 8
		if depth+i < len(line) {
			v |= uint64(line[depth+i])
		}
	}
	return v
}

// pass distributes a by the byte of pre at shift (through tmp, then back) and returns the bucket
// bounds. split is false, and nothing moved, when every entry has the same byte there.
func (s *radix) pass(a, tmp []entry, shift uint) (bounds [257]int, split bool) {
	var count [256]int
	for i := range a {
		count[byte(a[i].pre>>shift)]++
	}
	sum := 0
	for i, c := range count {
		if c == len(a) {
			return bounds, false
		}
		bounds[i] = sum
		sum += c
	}
	bounds[256] = sum
	next := count // reused as the write positions
	copy(next[:], bounds[:256])
	for i := range a {
		b := byte(a[i].pre >> shift)
		tmp[next[b]] = a[i]
		next[b]++
	}
	copy(a, tmp)
	return bounds, true
}

// sort sorts a, whose entries agree on the bytes of pre above shift+8, with pre loaded at depth.
// shift < 0 means pre is used up.
func (s *radix) sort(a, tmp []entry, shift int, depth int) {
	for {
		if len(a) <= smallSort {
			s.insertion(a)
			return
		}
		if shift < 0 {
			// Eight bytes used up and the bucket is still large: look further in, unless the lines
			// end here or the radix passes have gone deep enough.
			depth += 8
			longer := false
			for i := range a {
				if int(a[i].n) > depth {
					longer = true
					break
				}
			}
			if !longer || depth-s.lcp >= maxRadixDepth {
				s.compareSort(a)
				return
			}
			for i := range a {
				a[i].pre = load8(s.arena, a[i], depth)
			}
			shift = 56
		}
		bounds, split := s.pass(a, tmp, uint(shift))
		if !split {
			shift -= 8 // one bucket: same loop, next byte
			continue
		}
		for i := range 256 {
			if bounds[i+1]-bounds[i] > 1 {
				s.sort(a[bounds[i]:bounds[i+1]], tmp[bounds[i]:bounds[i+1]], shift-8, depth)
			}
		}
		return
	}
}

// less orders two entries: by the cached bytes, then by the whole lines after the common prefix
// (the cache is zero-padded, so "a" and "a\x00" tie there).
func (s *radix) less(x, y entry) bool {
	if x.pre != y.pre {
		return x.pre < y.pre
	}
	return bytes.Compare(s.arena[x.off+uint32(s.lcp):x.off+x.n], s.arena[y.off+uint32(s.lcp):y.off+y.n]) < 0
}

func (s *radix) insertion(a []entry) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && s.less(a[j], a[j-1]); j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// compareSort sorts a bucket the radix passes could not split: usually copies of one line.
func (s *radix) compareSort(a []entry) {
	slices.SortFunc(a, func(x, y entry) int {
		if x.pre != y.pre {
			return cmp.Compare(x.pre, y.pre)
		}
		return bytes.Compare(s.arena[x.off+uint32(s.lcp):x.off+x.n], s.arena[y.off+uint32(s.lcp):y.off+y.n])
	})
}
