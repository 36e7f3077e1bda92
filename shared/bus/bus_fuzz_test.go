package bus

import (
	"net/textproto"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzHeaderSafe: a dead letter's Ferry-Key and Ferry-Error headers hold anything a key list or an
// error can hold. After headerSafe the value stays on one line (no header can be injected into
// the DLQ entry), is bounded, and comes back from the NATS header decoder as the one value it
// was, give or take the spaces the NATS encoder trims.
//
//	go test -run '^$' -fuzz FuzzHeaderSafe -fuzztime 60s ./shared/bus/
func FuzzHeaderSafe(f *testing.F) {
	for _, s := range []string{
		"", "t01aaaa.jpg", "a\r\nFerry-Reason: forged", "\x00\x01\x1f\x7f", "tab\there", "  padded  ",
		"\xff\xfe", "ünïcødé", strings.Repeat("k", 2000), strings.Repeat("é", 600), "NATS/1.0 503\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := headerSafe(s)
		if strings.ContainsAny(out, "\r\n") {
			t.Fatalf("headerSafe(%q) = %q keeps a line break", s, out)
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c < 0x20 && c != '\t' {
				t.Fatalf("headerSafe(%q) = %q keeps control byte %#x", s, out, c)
			}
		}
		if len(out) > 1024+len("…") {
			t.Fatalf("headerSafe: %d bytes in, %d out: over the bound", len(s), len(out))
		}
		clean := len(s) <= 1024
		for i := 0; i < len(s) && clean; i++ {
			clean = s[i] >= 0x20 || s[i] == '\t'
		}
		if clean && out != s {
			t.Fatalf("headerSafe changed a clean value: %q -> %q", s, out)
		}
		// Encode the way nats.go does (it trims the value) and decode it back.
		block := "NATS/1.0\r\n" + HdrKey + ": " + textproto.TrimString(out) + "\r\n" + HdrStage + ": fetcher\r\n\r\n"
		h, err := nats.DecodeHeadersMsg([]byte(block))
		if err != nil {
			t.Fatalf("decode header block of %q: %v", out, err)
		}
		if len(h) != 2 || len(h.Values(HdrKey)) != 1 || h.Get(HdrStage) != "fetcher" {
			t.Fatalf("headerSafe(%q) = %q decodes to %v: a header was injected or lost", s, out, h)
		}
		if got, want := h.Get(HdrKey), strings.TrimLeft(textproto.TrimString(out), " \t"); got != want {
			t.Fatalf("header value %q decodes as %q", want, got)
		}
	})
}

// FuzzSizeOf: the Ferry-Size header of a BLOBS or UPLOADED message is parsed by DecodeRecord for
// the uploader and the verifier; a malformed one must read as -1 with an error (the message is
// dead-lettered as malformed), never as a size the body is then compared with by accident, and
// decoding any header block must not panic.
//
//	go test -run '^$' -fuzz FuzzSizeOf -fuzztime 60s ./shared/bus/
func FuzzSizeOf(f *testing.F) {
	for _, s := range []string{"0", "17825792", "-1", "", "abc", "1e6", " 12", "+5", "0x10",
		"9223372036854775807", "9223372036854775808", "١٢", "12\r\nFerry-MD5: 00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h := nats.Header{}
		h.Set(HdrSize, v)
		rec, err := DecodeRecord(h)
		n := rec.Size
		if n < 0 && v != "" && err == nil {
			t.Fatalf("Ferry-Size %q reads as %d without an error", v, n)
		}
		if n < -1 {
			t.Fatalf("SizeOf(%q) = %d", v, n)
		}
		if n >= 0 {
			parsed, err := strconv.ParseInt(v, 10, 64)
			if err != nil || parsed != n {
				t.Fatalf("SizeOf(%q) = %d, but the value does not parse as that size (%v)", v, n, err)
			}
		}
		if r, _ := DecodeRecord(nats.Header{}); r.Size != -1 {
			t.Fatal("SizeOf of a message without Ferry-Size is not -1")
		}
		// The same value as it arrives over the wire: decoding never panics, and a size that
		// survives decoding is the one that was sent.
		block := "NATS/1.0\r\n" + HdrSize + ": " + v + "\r\n\r\n"
		if dh, err := nats.DecodeHeadersMsg([]byte(block)); err == nil {
			if r, _ := DecodeRecord(dh); r.Size >= 0 {
				m := r.Size
				if parsed, err := strconv.ParseInt(dh.Get(HdrSize), 10, 64); err != nil || parsed != m {
					t.Fatalf("decoded Ferry-Size %q reads as %d", dh.Get(HdrSize), m)
				}
			}
		}
		out := nats.Header{}
		Carry(out, h) // Carry copies only identity headers
		if out.Get(HdrSize) != "" {
			t.Fatal("Carry copied Ferry-Size")
		}
	})
}
