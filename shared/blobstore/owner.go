package blobstore

import (
	"net/url"
	"strconv"
	"strings"
)

// The source key an object was written for is stored in its user metadata (the owner record), so
// that a second source key mapped to the same S3 key never overwrites the first one's bytes, and
// an object ferry did not write is told apart.
const (
	OwnerMeta = "ferry-source-key" // OwnerValue(key)
	// LegacyOwnerMeta is what ferry wrote before OwnerMeta: printable ASCII keys as they are (so
	// "x " read back as "x", and "%C3%A9" could be that literal key or "é"), others query-escaped.
	LegacyOwnerMeta = "ferry-key"
	// WriteTimeMeta is the Cassandra writetime of the bytes the object holds, in decimal
	// microseconds since the epoch (WriteTimeValue), so that a later message of the same key
	// replaces the object only with newer bytes. An object without it (written by an older ferry,
	// or from a source that does not give the writetime) counts as older than any known writetime.
	WriteTimeMeta = "ferry-writetime"
)

// WriteTimeValue is the WriteTimeMeta value of a writetime; "" for 0 (unknown), which is not stored.
func WriteTimeValue(wt int64) string {
	if wt <= 0 {
		return ""
	}
	return strconv.FormatInt(wt, 10)
}

// writeTimeOf reads WriteTimeMeta; 0 when absent or not a positive number.
func writeTimeOf(meta map[string]string) int64 {
	n, err := strconv.ParseInt(metaValue(meta, WriteTimeMeta), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// OwnerValue makes a source key safe as an x-amz-meta value: HTTP carries ASCII, and the SDK trims
// the blanks (ASCII and Unicode) around a value it reads. A key of printable ASCII without '%'
// and without a blank at either end is stored as it is, readable in any S3 console; any other key
// has each byte outside '!'..'~', and each '%', written as %XX. The mapping is one-to-one: a
// value holds a '%' exactly when it was escaped.
func OwnerValue(key string) string {
	escape := key != "" && (key[0] == ' ' || key[len(key)-1] == ' ')
	for i := 0; i < len(key) && !escape; i++ {
		escape = key[i] < 0x20 || key[i] > 0x7e || key[i] == '%'
	}
	if !escape {
		return key
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c <= 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Ownership is what an object's metadata says about who wrote it.
type Ownership int

const (
	OwnerNone      Ownership = iota // no ferry metadata: not written by ferry
	OwnerKey                        // written for this source key
	OwnerOther                      // written for another source key
	OwnerAmbiguous                  // an older ferry's record that this key or another could have written
)

// OwnerOf reads the owner from an object's metadata and compares it with key; name is the owner
// as recorded, for messages.
func OwnerOf(meta map[string]string, key string) (o Ownership, name string) {
	if v, ok := meta[OwnerMeta]; ok {
		if v == OwnerValue(key) {
			return OwnerKey, key
		}
		if u, err := url.PathUnescape(v); err == nil {
			return OwnerOther, u
		}
		return OwnerOther, v
	}
	v, ok := meta[LegacyOwnerMeta]
	if !ok || v == "" {
		return OwnerNone, ""
	}
	// The keys an older ferry could have written v for: v itself (printable ASCII was stored
	// as it is, and read back without its blanks) and the key it query-unescapes to.
	candidates := map[string]bool{v: true}
	if u, err := url.QueryUnescape(v); err == nil && url.QueryEscape(u) == v {
		candidates[u] = true
	}
	if t := strings.TrimSpace(key); t != key && candidates[t] {
		return OwnerAmbiguous, v
	}
	switch {
	case !candidates[key]:
		return OwnerOther, v
	case len(candidates) > 1:
		return OwnerAmbiguous, v
	}
	return OwnerKey, key
}
