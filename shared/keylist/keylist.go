// Package keylist opens key lists, one key a line: local files, stdin ("-") or S3 objects
// (s3://bucket/key), plain or compressed with gzip or zstd (recognised by their magic bytes), and
// expands glob patterns and s3:// prefixes into the lists they name. A list can be opened at an
// offset of its decompressed bytes, where a producer's checkpoint says to resume, and says which
// version of the file or object it reads (Identity), so a checkpoint can tell a changed list.
package keylist

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Stdin is the name of standard input.
const Stdin = "-"

// Lister lists the objects under a prefix in key order (*blobstore.Client).
type Lister interface {
	List(ctx context.Context, bucket, prefix string, fn func(key string, size int64) error) error
}

// Getter reads an object from an offset on and says its whole size (*blobstore.Client).
type Getter interface {
	GetRange(ctx context.Context, bucket, key string, offset int64) (io.ReadCloser, int64, error)
}

// VersionGetter is a Getter that also says which version of an object it reads, by its ETag
// (*blobstore.Client). GetVersion with ifMatch set reads only that version. Without it, an S3
// list's Identity has no ETag.
type VersionGetter interface {
	GetVersion(ctx context.Context, bucket, key string, offset int64, ifMatch string) (io.ReadCloser, int64, string, error)
	Stat(ctx context.Context, bucket, key string) (size int64, etag string, err error)
}

// Identity tells versions of a list apart without reading it: a local file's size and
// modification time, an S3 object's size and ETag. The size is of the file or object as stored
// (compressed, if it is). Equal identities mean the same bytes, as far as the file system or the
// S3 server can say; different ones may still hold the same lines (a file rewritten or touched).
type Identity struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime,omitzero"`
	ETag    string    `json:"etag,omitempty"`
}

// Known reports whether id can vouch for a list's bytes: it has a modification time or an ETag.
func (id Identity) Known() bool { return !id.ModTime.IsZero() || id.ETag != "" }

// Same reports whether id and o are known identities of the same version of a list.
func (id Identity) Same(o Identity) bool {
	return id.Known() && id.Size == o.Size && id.ModTime.Equal(o.ModTime) && id.ETag == o.ETag
}

// ErrShort is the error of opening a list at an offset past the end of its (decompressed) bytes.
var ErrShort = errors.New("past the end")

// Stat says the identity of name (a local path or s3://bucket/key) without opening it. An S3
// object read with a Getter that is not a VersionGetter has no ETag: an unknown identity.
func Stat(ctx context.Context, name string, s3 Getter) (Identity, error) {
	if bucket, key, ok := ParseS3(name); ok {
		vg, ok := s3.(VersionGetter)
		if !ok {
			return Identity{Size: -1}, nil
		}
		size, etag, err := vg.Stat(ctx, bucket, key)
		if err != nil {
			return Identity{}, fmt.Errorf("key list: %w", err)
		}
		return Identity{Size: size, ETag: etag}, nil
	}
	fi, err := os.Stat(name)
	if err != nil {
		return Identity{}, fmt.Errorf("key list: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Identity{Size: -1}, nil
	}
	return Identity{Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// ParseS3 splits "s3://bucket/key" into bucket and key; ok is false for any other name.
func ParseS3(name string) (bucket, key string, ok bool) {
	rest, found := strings.CutPrefix(name, "s3://")
	if !found {
		return "", "", false
	}
	bucket, key, _ = strings.Cut(rest, "/")
	return bucket, key, true
}

// Expand turns names into the lists they name, duplicates removed, in order: "-" stays; a local
// glob pattern (filepath.Match syntax) becomes its matches, sorted, and must match something; a
// plain path must exist; s3://bucket/key stays, and s3://bucket/prefix* (a trailing '*' only)
// becomes every object under the prefix, in key order. s3 may be nil when no name lists a prefix.
func Expand(ctx context.Context, names []string, s3 Lister) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, name := range names {
		switch bucket, key, isS3 := ParseS3(name); {
		case name == Stdin:
			add(name)
		case isS3:
			if bucket == "" || key == "" {
				return nil, fmt.Errorf("key list %q: want s3://bucket/key or s3://bucket/prefix*", name)
			}
			prefix, pattern := strings.CutSuffix(key, "*")
			if !pattern {
				add(name)
				continue
			}
			if s3 == nil {
				return nil, fmt.Errorf("key list %q: no S3 client to list the prefix", name)
			}
			n := 0
			err := s3.List(ctx, bucket, prefix, func(k string, _ int64) error {
				if strings.HasSuffix(k, "/") { // a "folder" marker, not a list
					return nil
				}
				add("s3://" + bucket + "/" + k)
				n++
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("key list %q: %w", name, err)
			}
			if n == 0 {
				return nil, fmt.Errorf("key list %q: no object under s3://%s/%s", name, bucket, prefix)
			}
		default:
			if _, err := os.Stat(name); err == nil || !strings.ContainsAny(name, "*?[") {
				if err != nil {
					return nil, fmt.Errorf("key list: %w", err)
				}
				add(name)
				continue
			}
			matches, err := filepath.Glob(name)
			if err != nil {
				return nil, fmt.Errorf("key list pattern %q: %w", name, err)
			}
			if len(matches) == 0 {
				return nil, fmt.Errorf("key list pattern %q matches no file", name)
			}
			for _, m := range matches { // Glob sorts them
				add(m)
			}
		}
	}
	return out, nil
}

// List is an open key list: its decompressed bytes from the offset it was opened at.
type List struct {
	name       string
	size       int64
	id         Identity
	compressed bool
	counter    *countingReader
	r          io.Reader
	closers    []func() error
}

// Compression magic numbers.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Open opens name ("-", a local path or s3://bucket/key) positioned offset bytes into its
// decompressed content. A plain file seeks and a plain S3 object is read with a ranged GET; a
// compressed one is decompressed from its start and offset bytes are discarded. s3 may be nil for
// local names. An offset past the end is ErrShort.
func Open(ctx context.Context, name string, offset int64, s3 Getter) (*List, error) {
	return OpenVerify(ctx, name, offset, nil, s3)
}

// OpenVerify is Open that, when prefix is not nil, reads the (decompressed) bytes before offset
// into prefix instead of seeking past them, so the caller can check they are the bytes it read
// before.
func OpenVerify(ctx context.Context, name string, offset int64, prefix io.Writer, s3 Getter) (*List, error) {
	if offset < 0 {
		return nil, fmt.Errorf("key list %s: negative offset %d", name, offset)
	}
	l := &List{name: name, size: -1, id: Identity{Size: -1}}
	var err error
	if bucket, key, ok := ParseS3(name); ok {
		err = l.openS3(ctx, bucket, key, offset, prefix, s3)
	} else {
		err = l.openLocal(name, offset, prefix)
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *List) openLocal(name string, offset int64, prefix io.Writer) error {
	var f *os.File
	if name == Stdin {
		f = os.Stdin
	} else {
		abs, err := filepath.Abs(name)
		if err != nil {
			return fmt.Errorf("key list %s: %w", name, err)
		}
		l.name = abs
		if f, err = os.Open(abs); err != nil {
			return fmt.Errorf("key list: %w", err)
		}
		l.closers = append(l.closers, f.Close)
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("key list: %w", err)
		}
		if st.IsDir() {
			return fmt.Errorf("key list %s: is a directory", abs)
		}
		if st.Mode().IsRegular() {
			l.size = st.Size()
			l.id = Identity{Size: st.Size(), ModTime: st.ModTime()}
		}
	}
	l.counter = newCounter(f, 0)
	br := bufio.NewReaderSize(l.counter, 256<<10)
	if l.size >= 0 && offset > 0 && prefix == nil {
		// A regular file: if it is plain, seek instead of reading up to the offset.
		head, err := br.Peek(len(zstdMagic))
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("key list %s: %w", l.name, err)
		}
		if kind(head) == "" {
			if offset > l.size {
				return fmt.Errorf("key list %s: offset %d is %w (%d bytes)", l.name, offset, ErrShort, l.size)
			}
			if _, err := f.Seek(offset, io.SeekStart); err != nil {
				return fmt.Errorf("key list %s: %w", l.name, err)
			}
			l.counter.n.Store(offset)
			l.r = bufio.NewReaderSize(l.counter, 256<<10)
			return nil
		}
	}
	return l.decode(br, offset, prefix)
}

func (l *List) openS3(ctx context.Context, bucket, key string, offset int64, prefix io.Writer, s3 Getter) error {
	if bucket == "" || key == "" {
		return fmt.Errorf("key list %q: want s3://bucket/key", l.name)
	}
	if s3 == nil {
		return fmt.Errorf("key list %s: no S3 client", l.name)
	}
	// With a VersionGetter, the identity is the version read, and a second, ranged GET reads the
	// same one.
	get := func(offset int64, ifMatch string) (io.ReadCloser, int64, string, error) {
		if vg, ok := s3.(VersionGetter); ok {
			return vg.GetVersion(ctx, bucket, key, offset, ifMatch)
		}
		body, size, err := s3.GetRange(ctx, bucket, key, offset)
		return body, size, "", err
	}
	body, size, etag, err := get(0, "")
	if err != nil {
		return fmt.Errorf("key list: %w", err)
	}
	l.size, l.id = size, Identity{Size: size, ETag: etag}
	l.closers = append(l.closers, body.Close)
	l.counter = newCounter(body, 0)
	br := bufio.NewReaderSize(l.counter, 256<<10)
	if offset > 0 && prefix == nil {
		head, err := br.Peek(len(zstdMagic))
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("key list %s: %w", l.name, err)
		}
		if kind(head) == "" {
			if offset > size {
				return fmt.Errorf("key list %s: offset %d is %w (%d bytes)", l.name, offset, ErrShort, size)
			}
			// Plain: start again from the offset rather than download what was already sent.
			body.Close()
			l.closers = l.closers[:0]
			body, _, _, err := get(offset, etag)
			if err != nil {
				return fmt.Errorf("key list: %w", err)
			}
			l.closers = append(l.closers, body.Close)
			l.counter = newCounter(body, offset)
			l.r = bufio.NewReaderSize(l.counter, 256<<10)
			return nil
		}
	}
	return l.decode(br, offset, prefix)
}

// kind names the compression whose magic number starts head, or "" for none.
func kind(head []byte) string {
	switch {
	case bytes.HasPrefix(head, zstdMagic):
		return "zstd"
	case bytes.HasPrefix(head, gzipMagic):
		return "gzip"
	}
	return ""
}

// decode wraps br in the decompressor its first bytes call for, then reads offset bytes into
// prefix, or discards them when prefix is nil.
func (l *List) decode(br *bufio.Reader, offset int64, prefix io.Writer) error {
	head, err := br.Peek(len(zstdMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("key list %s: %w", l.name, err)
	}
	switch kind(head) {
	case "gzip":
		zr, err := gzip.NewReader(br) // multistream by default: concatenated members read as one
		if err != nil {
			return fmt.Errorf("key list %s: gzip: %w", l.name, err)
		}
		l.closers = append(l.closers, zr.Close)
		l.r, l.compressed = zr, true
	case "zstd":
		if err := checkWindow(br); err != nil {
			return fmt.Errorf("key list %s: %w", l.name, err)
		}
		// The window bounds the decoder's memory (about one window, with lowmem). MaxMemory caps
		// it too, as it is what bounds a single-segment frame, whose window is its whole content.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(MaxWindow), zstd.WithDecoderMaxMemory(MaxWindow))
		if err != nil {
			return fmt.Errorf("key list %s: zstd: %w", l.name, err)
		}
		l.closers = append(l.closers, func() error { zr.Close(); return nil })
		l.r, l.compressed = zr, true
	default:
		l.r = br
	}
	if offset > 0 {
		if prefix == nil {
			prefix = io.Discard
		}
		n, err := io.CopyN(prefix, l.r, offset)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("key list %s: offset %d is %w (%d bytes)", l.name, offset, ErrShort, n)
			}
			return l.readError(err)
		}
	}
	return nil
}

// MaxWindow is the largest zstd window a key list may ask for: 32 MiB, which is what decoding
// costs in memory (the decoder keeps one window of history). It is 4 times the window of every
// standard zstd level up to -19 (8 MiB) and that of --ultra -20 (32 MiB); -21, -22 and --long
// (64 and 128 MiB) are refused, so that a producer holds its 256 MiB pod limit against any list
// (the decoder's own default, 512 MiB, let a 66 KB list take 552 MB).
const MaxWindow = 32 << 20

// ErrWindowTooLarge: a zstd frame of a key list needs a window over MaxWindow.
var ErrWindowTooLarge = errors.New("zstd window over ferry's 32 MiB cap")

// recompress says how to make a list that ErrWindowTooLarge refuses readable.
const recompress = "recompress it at a standard level, e.g. zstd -dc LIST | zstd -19 -o NEW, or with --long=25 at most"

// checkWindow refuses, before the decoder allocates anything, a zstd stream whose first frame
// needs a window over MaxWindow; the decoder's own limits refuse a later frame (Read).
func checkWindow(br *bufio.Reader) error {
	head, _ := br.Peek(zstd.HeaderMaxSize) // a short list: Decode says what is missing
	var h zstd.Header
	if h.Decode(head) != nil || h.Skippable {
		return nil // the decoder says what is wrong
	}
	w := h.WindowSize
	if h.SingleSegment {
		w = h.FrameContentSize
	}
	if w > MaxWindow {
		return fmt.Errorf("%w: its first frame needs %d MiB: %s", ErrWindowTooLarge, (w+(1<<20)-1)>>20, recompress)
	}
	return nil
}

// Read reads decompressed bytes.
func (l *List) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = l.readError(err)
	}
	return n, err
}

// readError wraps an error of the decompressor or the file, naming the list.
func (l *List) readError(err error) error {
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return fmt.Errorf("key list %s: %w: a frame after the first needs more (%v): %s", l.name, ErrWindowTooLarge, err, recompress)
	}
	return fmt.Errorf("key list %s: %w", l.name, err)
}

// Close releases the decompressor and the file or connection.
func (l *List) Close() error {
	var errs []error
	for i := len(l.closers) - 1; i >= 0; i-- {
		errs = append(errs, l.closers[i]())
	}
	l.closers = nil
	return errors.Join(errs...)
}

// Name is the list's absolute path, its s3:// URL or "-".
func (l *List) Name() string { return l.name }

// Size is the size in bytes of the underlying file or object (compressed, if it is), -1 if unknown.
func (l *List) Size() int64 { return l.size }

// Identity is the identity of the version of the file or object being read; Size -1 for stdin
// and other files that are not regular.
func (l *List) Identity() Identity { return l.id }

// Consumed is how far into the underlying file or object reading has got (compressed bytes, if it
// is compressed; read-ahead included): against Size, the progress of the list.
func (l *List) Consumed() int64 {
	if l.counter == nil {
		return 0
	}
	return l.counter.n.Load()
}

// Compressed reports whether the list is gzip or zstd.
func (l *List) Compressed() bool { return l.compressed }

// countingReader counts the bytes read through it; the count may be read from another goroutine
// (a progress line).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func newCounter(r io.Reader, start int64) *countingReader {
	c := &countingReader{r: r}
	c.n.Store(start)
	return c
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// bom is the UTF-8 byte order mark some editors and exporters start a text file with.
var bom = []byte("\xef\xbb\xbf")

// Key is the key on a line of a list: the line without its line ending and without the ASCII
// spaces, tabs and CRs around it; when first (the list's first line), also without a leading
// UTF-8 byte order mark. Every other byte is part of the key, Unicode spaces (NBSP, U+2003,
// U+3000, NEL) included: they make a key distinct, and the key rules decide whether it is valid.
// Every reader of key lists trims with this, so they agree on what the keys are.
func Key(line []byte, first bool) []byte {
	if first {
		line = bytes.TrimPrefix(line, bom)
	}
	return bytes.Trim(line, " \t\r\n")
}
