package keylist

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// content is a key list long enough that offsets land past the decompressors' first blocks.
func content() []byte {
	var b bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&b, "t01%024x.jpg\n", i*7919)
	}
	return b.Bytes()
}

func gz(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, p := range parts { // each part is its own member: a multi-member file
		w := gzip.NewWriter(&b)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func zst(t *testing.T, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := zstd.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	plain := content()
	half := len(plain) / 2
	files := []struct {
		name       string
		body       []byte
		compressed bool
	}{
		{"plain.txt", plain, false},
		{"keys.gz", gz(t, plain), true},
		{"keys.zst", zst(t, plain), true},
		{"multi.gz", gz(t, plain[:half], plain[half:]), true},
		{"gzip-without-extension", gz(t, plain), true}, // found by its magic bytes
		{"plain-named.gz", plain, false},
		{"empty.txt", nil, false},
	}
	for _, f := range files {
		path := write(t, dir, f.name, f.body)
		want := plain
		if f.body == nil {
			want = nil
		}
		for _, off := range []int64{0, 1, 37, int64(half), int64(len(want))} {
			if off > int64(len(want)) {
				continue
			}
			t.Run(fmt.Sprintf("%s@%d", f.name, off), func(t *testing.T) {
				l, err := Open(context.Background(), path, off, nil)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer l.Close()
				got, err := io.ReadAll(l)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if !bytes.Equal(got, want[off:]) {
					t.Fatalf("read %d bytes, want the %d from offset %d", len(got), len(want)-int(off), off)
				}
				if l.Compressed() != f.compressed || l.Size() != int64(len(f.body)) || l.Name() != path {
					t.Errorf("Compressed %v Size %d Name %s, want %v %d %s", l.Compressed(), l.Size(), l.Name(), f.compressed, len(f.body), path)
				}
				if l.Consumed() != int64(len(f.body)) {
					t.Errorf("Consumed %d after reading all, want %d", l.Consumed(), len(f.body))
				}
			})
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	plain := write(t, dir, "plain.txt", []byte("a\nb\n"))
	packed := write(t, dir, "keys.gz", gz(t, []byte("a\nb\n")))
	broken := write(t, dir, "broken.zst", zst(t, content())[:100])
	for _, c := range []struct {
		name   string
		offset int64
		want   string
	}{
		{filepath.Join(dir, "missing.txt"), 0, "no such file"},
		{dir, 0, "is a directory"},
		{plain, 5, "past the end"},
		{packed, 5, "past the end"},
		{plain, -1, "negative offset"},
		{"s3://bucket/key", 0, "no S3 client"},
		{"s3://bucket", 0, "want s3://bucket/key"},
	} {
		t.Run(c.want, func(t *testing.T) {
			l, err := Open(context.Background(), c.name, c.offset, nil)
			if err == nil {
				l.Close()
				t.Fatalf("Open(%s, %d) succeeded", c.name, c.offset)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open(%s, %d) = %v, want %q", c.name, c.offset, err, c.want)
			}
		})
	}
	l, err := Open(context.Background(), broken, 0, nil)
	if err != nil {
		t.Fatalf("Open of a cut zstd file: %v (the damage shows when reading)", err)
	}
	defer l.Close()
	if _, err := io.ReadAll(l); err == nil || !strings.Contains(err.Error(), broken) {
		t.Errorf("reading a cut zstd file = %v, want an error naming it", err)
	}
}

// fakeS3 serves objects from memory, as *blobstore.Client would.
type fakeS3 map[string][]byte // "bucket/key" → body

func (f fakeS3) GetRange(_ context.Context, bucket, key string, offset int64) (io.ReadCloser, int64, error) {
	b, ok := f[bucket+"/"+key]
	if !ok || offset > int64(len(b)) {
		return nil, 0, fmt.Errorf("get s3://%s/%s: object not found", bucket, key)
	}
	return io.NopCloser(bytes.NewReader(b[offset:])), int64(len(b)), nil
}

func (f fakeS3) List(_ context.Context, bucket, prefix string, fn func(string, int64) error) error {
	var keys []string
	for k := range f {
		if b, key, _ := strings.Cut(k, "/"); b == bucket && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(k, int64(len(f[bucket+"/"+k]))); err != nil {
			return err
		}
	}
	return nil
}

func TestOpenS3(t *testing.T) {
	plain := content()
	s3 := fakeS3{"b/plain.txt": plain, "b/keys.zst": zst(t, plain), "b/multi.gz": gz(t, plain[:10], plain[10:])}
	for name, body := range s3 {
		for _, off := range []int64{0, 3, int64(len(plain))} {
			t.Run(fmt.Sprintf("%s@%d", name, off), func(t *testing.T) {
				l, err := Open(context.Background(), "s3://"+name, off, s3)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer l.Close()
				got, err := io.ReadAll(l)
				if err != nil || !bytes.Equal(got, plain[off:]) {
					t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(plain)-int(off))
				}
				if l.Size() != int64(len(body)) || l.Name() != "s3://"+name || l.Consumed() != int64(len(body)) {
					t.Errorf("Size %d Name %s Consumed %d, want %d s3://%s %d", l.Size(), l.Name(), l.Consumed(), len(body), name, len(body))
				}
			})
		}
	}
}

func TestExpand(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.txt", "a.txt", "c.gz", "x1.txt", "x2.txt", "[odd].txt"} {
		write(t, dir, n, []byte("k\n"))
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	s3 := fakeS3{"b/lists/2.txt": nil, "b/lists/1.txt": nil, "b/lists/": nil, "b/other": nil}
	for _, c := range []struct {
		name    string
		in      []string
		want    []string
		wantErr string
	}{
		{"plain and stdin", []string{p("b.txt"), "-", p("a.txt")}, []string{p("b.txt"), "-", p("a.txt")}, ""},
		{"star sorted", []string{p("*.txt")}, []string{p("[odd].txt"), p("a.txt"), p("b.txt"), p("x1.txt"), p("x2.txt")}, ""},
		{"question and class", []string{p("x?.txt"), p("[ab].txt")}, []string{p("x1.txt"), p("x2.txt"), p("a.txt"), p("b.txt")}, ""},
		{"existing name with brackets", []string{p("[odd].txt")}, []string{p("[odd].txt")}, ""},
		{"duplicates removed, order kept", []string{p("b.txt"), p("*.txt"), p("b.txt")}, []string{p("b.txt"), p("[odd].txt"), p("a.txt"), p("x1.txt"), p("x2.txt")}, ""},
		{"s3 key stays", []string{"s3://b/lists/1.txt"}, []string{"s3://b/lists/1.txt"}, ""},
		{"s3 prefix listed", []string{"s3://b/lists/*", "s3://b/lists/1.txt"}, []string{"s3://b/lists/1.txt", "s3://b/lists/2.txt"}, ""},
		{"glob matches nothing", []string{p("*.zst")}, nil, "matches no file"},
		{"missing file", []string{p("nope.txt")}, nil, "no such file"},
		{"bad pattern", []string{p("[.txt")}, nil, "syntax error"},
		{"s3 prefix with nothing", []string{"s3://b/none*"}, nil, "no object under s3://b/none"},
		{"s3 without key", []string{"s3://b"}, nil, "want s3://bucket/key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Expand(context.Background(), c.in, s3)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Expand(%v) = %v, %v; want error %q", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Fatalf("Expand(%v) = %v, %v; want %v", c.in, got, err, c.want)
			}
		})
	}
	if _, err := Expand(context.Background(), []string{"s3://b/lists/*"}, nil); err == nil {
		t.Error("Expand of an s3 prefix without a client succeeded")
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		name  string
		line  string
		first bool // the list's first line
		want  string
	}{
		{"line ending", "k\n", false, "k"},
		{"CRLF", "k\r\n", false, "k"},
		{"ASCII space and tab around", " \t k \t\r\n", false, "k"},
		{"inner spaces kept", "a b\tc\n", false, "a b\tc"},
		{"blank", " \t\r\n", false, ""},
		{"NBSP kept", "photo.jpg\u00a0\n", false, "photo.jpg\u00a0"},
		{"em space kept", "other.jpg\u2003", false, "other.jpg\u2003"},
		{"ideographic space kept", "\u3000x\n", false, "\u3000x"},
		{"NEL kept", "y\u0085\n", false, "y\u0085"},
		{"vertical tab and form feed kept", "\vk\f\n", false, "\vk\f"},
		{"BOM on the first line dropped", "\ufeff k\n", true, "k"},
		{"BOM elsewhere kept", "\ufeffk\n", false, "\ufeffk"},
		{"BOM after a space kept", " \ufeffk\n", true, "\ufeffk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key([]byte(tt.line), tt.first); string(got) != tt.want {
				t.Errorf("Key(%q, %v) = %q, want %q", tt.line, tt.first, got, tt.want)
			}
		})
	}
}

// versionedS3 is a fakeS3 that also says each object's ETag (its MD5), as *blobstore.Client does.
type versionedS3 struct{ fakeS3 }

func etagOf(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func (v versionedS3) GetVersion(ctx context.Context, bucket, key string, offset int64, ifMatch string) (io.ReadCloser, int64, string, error) {
	b := v.fakeS3[bucket+"/"+key]
	if ifMatch != "" && ifMatch != etagOf(b) {
		return nil, 0, "", fmt.Errorf("get s3://%s/%s: replaced", bucket, key)
	}
	r, size, err := v.GetRange(ctx, bucket, key, offset)
	return r, size, etagOf(b), err
}

func (v versionedS3) Stat(_ context.Context, bucket, key string) (int64, string, error) {
	b, ok := v.fakeS3[bucket+"/"+key]
	if !ok {
		return 0, "", fmt.Errorf("head s3://%s/%s: object not found", bucket, key)
	}
	return int64(len(b)), etagOf(b), nil
}

// TestOpenVerify: the bytes before the offset are handed over, decompressed, whatever the list's
// kind and place; the identity is the one of the version read; an offset past the end is ErrShort.
func TestOpenVerify(t *testing.T) {
	plain := content()
	dir := t.TempDir()
	bodies := map[string][]byte{"plain.txt": plain, "keys.gz": gz(t, plain[:10], plain[10:]), "keys.zst": zst(t, plain)}
	s3 := versionedS3{fakeS3{}}
	var names []string
	for n, b := range bodies {
		write(t, dir, n, b)
		s3.fakeS3["b/"+n] = b
		names = append(names, filepath.Join(dir, n), "s3://b/"+n)
	}
	ctx := context.Background()
	for _, name := range names {
		for _, off := range []int64{0, 7, int64(len(plain))} {
			t.Run(fmt.Sprintf("%s@%d", name, off), func(t *testing.T) {
				var prefix bytes.Buffer
				l, err := OpenVerify(ctx, name, off, &prefix, s3)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				rest, err := io.ReadAll(l)
				if err != nil || !bytes.Equal(prefix.Bytes(), plain[:off]) || !bytes.Equal(rest, plain[off:]) {
					t.Fatalf("prefix %d bytes, rest %d bytes (%v); want %d and %d", prefix.Len(), len(rest), err, off, len(plain)-int(off))
				}
				body := bodies[filepath.Base(name)]
				id, err := Stat(ctx, name, s3)
				if err != nil || !id.Same(l.Identity()) || id.Size != int64(len(body)) {
					t.Errorf("Stat = %+v, %v; list's identity %+v; want the same, of %d bytes", id, err, l.Identity(), len(body))
				}
				if _, _, isS3 := ParseS3(name); isS3 && id.ETag != etagOf(body) {
					t.Errorf("ETag %q, want %q", id.ETag, etagOf(body))
				}
			})
		}
		for _, verify := range []bool{false, true} {
			var prefix io.Writer
			if verify {
				prefix = io.Discard
			}
			if _, err := OpenVerify(ctx, name, int64(len(plain))+1, prefix, s3); !errors.Is(err, ErrShort) {
				t.Errorf("%s past the end (verify %v): %v, want ErrShort", name, verify, err)
			}
		}
	}
	if id, err := Stat(ctx, "s3://b/plain.txt", s3.fakeS3); err != nil || id.Known() {
		t.Errorf("Stat without versions = %+v, %v; want an unknown identity", id, err)
	}
}
