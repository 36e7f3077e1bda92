package bus

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []Record{
		{ID: "id", Key: " k ", Origin: "list:3", S3Key: "p/ k ", Size: 0, MD5: bytes.Repeat([]byte{1}, 16), CRC32C: 7, HasCRC32C: true,
			ContentType: "image/jpeg", Source: "dc1", Object: "id", ETag: "\"e\"", Pass: 2, WriteTime: 1733577600123456, Superseded: 1733577600123457},
		{ID: "id", Key: "k", S3Key: "k", Size: 12, MD5: bytes.Repeat([]byte{2}, 16)}, // no CRC: an older fetcher's
	} {
		h := nats.Header{}
		r.Encode(h)
		got, err := DecodeRecord(h)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("round trip of %+v: %+v, %v", r, got, err)
		}
	}
}

func TestDecodeRecordMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    nats.Header
	}{
		{"size not a number", nats.Header{HdrSize: {"ten"}}},
		{"negative size", nats.Header{HdrSize: {"-1"}}},
		{"md5 not hex", nats.Header{HdrMD5: {"zz"}}},
		{"md5 too short", nats.Header{HdrMD5: {"abcd"}}},
		{"crc not a number", nats.Header{HdrCRC32C: {"x"}}},
		{"superseded not a writetime", nats.Header{HdrSuperseded: {"later"}}},
		{"bad escape", nats.Header{HdrKey: {"%zz"}, HdrEscaped: {HdrKey}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := DecodeRecord(tc.h); err == nil {
				t.Errorf("decoded %+v without an error", r)
			}
		})
	}
	if r, err := DecodeRecord(nats.Header{}); err != nil || r.Size != -1 || r.MD5 != nil || r.HasCRC32C {
		t.Errorf("empty headers: %+v, %v", r, err)
	}
}
