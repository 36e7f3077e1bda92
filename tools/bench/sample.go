package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/ferry-migrate/ferry/shared/keylist"
)

// maxLine bounds a key line; longer lines are skipped (a key is at most 1 KiB anyway).
const maxLine = 64 << 10

// keySample is a uniform random sample of a key list.
type keySample struct {
	Keys    []string
	Lines   int64 // keys in the file (non-blank lines)
	Skipped int64 // lines longer than maxLine
}

// sampleKeys reads a key list (a file, or "-" for stdin) once and keeps a uniform random sample of
// at most n keys.
func sampleKeys(path string, n int, rng *rand.Rand) (keySample, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return keySample{}, fmt.Errorf("--keys: %w", err)
		}
		defer f.Close()
		r = f
	}
	s, err := reservoir(r, n, rng)
	if err != nil {
		return s, fmt.Errorf("--keys %s: %w", path, err)
	}
	return s, nil
}

// reservoir keeps a uniform random sample of at most n of r's keys (Vitter's algorithm R): every
// key ends in the sample with the same probability n/lines, the input is read once, and memory is
// n keys however long it is. Lines are read as the producer reads them (keylist.Key), blank lines
// skipped. The same rng state gives the same sample.
func reservoir(r io.Reader, n int, rng *rand.Rand) (keySample, error) {
	var s keySample
	if n < 1 {
		return s, fmt.Errorf("sample size %d: must be at least 1", n)
	}
	br := bufio.NewReaderSize(r, maxLine)
	long := false // inside a line that did not fit the buffer
	first := true
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if !long {
				s.Skipped++
			}
			long = true
			continue
		case err != nil && !errors.Is(err, io.EOF):
			return s, err
		}
		if long {
			long = false
		} else if key := keylist.Key(line, first); len(key) > 0 {
			if s.Lines < int64(n) {
				s.Keys = append(s.Keys, string(key))
			} else if j := rng.Int64N(s.Lines + 1); j < int64(n) {
				s.Keys[j] = string(key)
			}
			s.Lines++
		}
		first = false
		if err != nil { // io.EOF, after the last, unterminated line
			return s, nil
		}
	}
}
