package diff

import (
	"bufio"
	"context"
	"errors"
	"io"

	"github.com/ferry-migrate/ferry/shared/keylist"
)

// readLines calls add with each key of r, as the producer reads them (keylist.Key), blank lines
// skipped. The slice given to add is reused afterwards.
func readLines(ctx context.Context, r io.Reader, add func(line []byte) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var long []byte
	first := true
	for n := 0; ; n++ {
		if n&0xffff == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		key := keylist.Key(line, first)
		first = false
		if len(key) > 0 {
			if aerr := add(key); aerr != nil {
				return aerr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
