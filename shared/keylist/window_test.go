package keylist

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// zstWindow compresses p with a zstd window of w bytes, as `zstd --long` or `--ultra -22` would.
func zstWindow(t *testing.T, p []byte, w int) []byte {
	t.Helper()
	var b bytes.Buffer
	enc, err := zstd.NewWriter(&b, zstd.WithWindowSize(w), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rawFrame is a zstd frame by hand: its header declares a window of 1<<windowLog bytes, or (when
// contentSize > 0) a single segment of contentSize bytes, whose window is its whole content;
// then one raw block holding p.
func rawFrame(windowLog uint8, contentSize uint64, p []byte) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if contentSize > 0 {
		b = append(b, 0xe0) // 8-byte content size, single segment
		b = binary.LittleEndian.AppendUint64(b, contentSize)
	} else {
		b = append(b, 0x00, (windowLog-10)<<3)
	}
	h := uint32(len(p))<<3 | 1 // last block, raw
	return append(append(b, byte(h), byte(h>>8), byte(h>>16)), p...)
}

// TestZstdWindowCap: a zstd key list whose frames need a window over MaxWindow (32 MiB) fails
// with ErrWindowTooLarge naming the list and the cap, at open or at the frame that asks for it,
// whatever the offset; lists within it read whole, however long. Before, the decoder allowed
// 512 MiB windows (and single-segment frames of any size), so a 66 KB list could take 552 MB.
func TestZstdWindowCap(t *testing.T) {
	dir := t.TempDir()
	small := []byte("a\nb\n")
	long := bytes.Repeat([]byte("t01-a-key-of-some-length.jpg\n"), (40<<20)/29) // 40 MiB, more than the cap
	for _, tc := range []struct {
		name   string
		data   []byte
		offset int64
		want   int // bytes read; -1: ErrWindowTooLarge
	}{
		{"default.zst", zst(t, long), 0, len(long)},
		{"window-8m.zst", zstWindow(t, long, 8<<20), 0, len(long)},
		{"window-32m.zst", rawFrame(25, 0, small), 0, len(small)},
		{"window-64m.zst", zstWindow(t, []byte(strings.Repeat("k", 3<<20)+"\n"), 64<<20), 0, -1},
		{"window-64m-offset.zst", zstWindow(t, []byte(strings.Repeat("k", 3<<20)+"\n"), 64<<20), 100, -1},
		{"window-512m.zst", rawFrame(29, 0, small), 0, -1},
		{"window-2g.zst", rawFrame(31, 0, small), 0, -1},
		{"segment-600m.zst", rawFrame(0, 600<<20, small), 0, -1},
		{"second-frame-512m.zst", append(zst(t, small), rawFrame(29, 0, small)...), 0, -1},
	} {
		path := write(t, dir, tc.name, tc.data)
		l, err := Open(t.Context(), path, tc.offset, nil)
		n := int64(0)
		if err == nil {
			n, err = io.Copy(io.Discard, l)
			l.Close()
		}
		if tc.want >= 0 {
			if err != nil || n != int64(tc.want) {
				t.Errorf("%s: read %d bytes, %v; want %d", tc.name, n, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: read %d bytes, want ErrWindowTooLarge", tc.name, n)
			continue
		}
		if msg := err.Error(); !errors.Is(err, ErrWindowTooLarge) || !strings.Contains(msg, path) || !strings.Contains(msg, "32 MiB") || strings.Contains(msg, "\n") {
			t.Errorf("%s: error %q, want one line wrapping ErrWindowTooLarge naming %s and the 32 MiB cap", tc.name, msg, path)
		}
	}
}
