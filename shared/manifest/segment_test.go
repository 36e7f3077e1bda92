package manifest

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// TestSegmentRoundTrip: every field of an entry comes back as written, whatever bytes the keys
// hold (a key that differs from another in one byte stays different).
func TestSegmentRoundTrip(t *testing.T) {
	stored := time.Date(2026, 12, 7, 19, 0, 0, 123456789, time.UTC)
	var entries []Entry
	for i, key := range []string{"plain.jpg", "a,b", `q"uote`, "line\nbreak\r", " blank ", "a+b c%2Fd", "ünïcode/ключ", string([]byte{0xff, 0x00, 0x7f}), "a", "a "} {
		entries = append(entries, Entry{Seq: uint64(i + 1), Stored: stored.Add(time.Duration(i) * time.Second), Record: bus.Record{
			ID: "id" + key, Key: key, S3Key: "ab/" + key, Size: int64(i * 1000), MD5: []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
			CRC32C: uint32(i * 7919), HasCRC32C: i%2 == 0, WriteTime: int64(1e15) + int64(i), Superseded: int64(i % 3), Pass: i % 4,
			Source: "dc1", ETag: "etag-" + key}})
	}
	b, err := encode("bkt", entries)
	if err != nil {
		t.Fatal(err)
	}
	var got []Entry
	if err := Decode(bytes.NewReader(b), func(e Entry) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(entries) {
		t.Fatalf("%d entries back, want %d", len(got), len(entries))
	}
	for i := range entries {
		want := entries[i]
		if !want.Record.HasCRC32C {
			want.Record.CRC32C = 0
		}
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, got[i], want)
		}
	}
	if err := Decode(bytes.NewReader([]byte("not gzip")), func(Entry) error { return nil }); err == nil {
		t.Error("a segment that is not gzip decoded")
	}
}
