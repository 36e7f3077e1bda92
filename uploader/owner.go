package uploader

import (
	"net/url"
	"strings"
)

// The source key that wrote an object is stored in its user metadata, so that a second source key
// mapped to the same S3 key never overwrites the first one's bytes.
const (
	ownerMeta = "ferry-source-key" // ownerValue(key)
	// legacyOwnerMeta is what ferry wrote before ownerMeta: printable ASCII keys as they are (so
	// "x " read back as "x", and "%C3%A9" could be that literal key or "é"), others query-escaped.
	legacyOwnerMeta = "ferry-key"
)

// ownerValue makes a source key safe as an x-amz-meta value: HTTP carries ASCII, and the SDK trims
// the blanks (ASCII and Unicode) around a value it reads. A key of printable ASCII without '%'
// and without a blank at either end is stored as it is, readable in any S3 console; any other key
// has each byte outside '!'..'~', and each '%', written as %XX. The mapping is one-to-one: a
// value holds a '%' exactly when it was escaped.
func ownerValue(key string) string {
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

// ownership is what an object's metadata says about who wrote it.
type ownership int

const (
	ownerNone      ownership = iota // no ferry metadata: not written by ferry
	ownerKey                        // written for this source key
	ownerOther                      // written for another source key
	ownerAmbiguous                  // an older ferry's record that this key or another could have written
)

// ownerOf reads the owner from an object's metadata and compares it with key; name is the owner
// as recorded, for messages.
func ownerOf(meta map[string]string, key string) (o ownership, name string) {
	if v, ok := meta[ownerMeta]; ok {
		if v == ownerValue(key) {
			return ownerKey, key
		}
		if u, err := url.PathUnescape(v); err == nil {
			return ownerOther, u
		}
		return ownerOther, v
	}
	v, ok := meta[legacyOwnerMeta]
	if !ok || v == "" {
		return ownerNone, ""
	}
	// The keys an older ferry could have written v for: v itself (printable ASCII was stored
	// as it is, and read back without its blanks) and the key it query-unescapes to.
	candidates := map[string]bool{v: true}
	if u, err := url.QueryUnescape(v); err == nil && url.QueryEscape(u) == v {
		candidates[u] = true
	}
	if t := strings.TrimSpace(key); t != key && candidates[t] {
		return ownerAmbiguous, v
	}
	switch {
	case !candidates[key]:
		return ownerOther, v
	case len(candidates) > 1:
		return ownerAmbiguous, v
	}
	return ownerKey, key
}
