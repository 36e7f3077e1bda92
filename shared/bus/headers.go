package bus

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Message headers. Every stage copies Ferry-Id, Ferry-Key and Ferry-Origin forward.
const (
	HdrID          = "Ferry-Id"     // key identity (KeyID, or KeyID + replay suffix); basis of Nats-Msg-Id
	HdrKey         = "Ferry-Key"    // the source key as read from the list
	HdrOrigin      = "Ferry-Origin" // file:line, token range or "replay"
	HdrS3Key       = "Ferry-S3-Key"
	HdrSize        = "Ferry-Size"
	HdrMD5         = "Ferry-MD5" // hex
	HdrCRC32C      = "Ferry-CRC32C"
	HdrContentType = "Ferry-Content-Type"
	HdrSource      = "Ferry-Source" // which read target served the blob
	HdrObject      = "Ferry-Object" // object-store name when the blob is not inline
	HdrETag        = "Ferry-ETag"
	HdrStage       = "Ferry-Stage"
	HdrReason      = "Ferry-Reason"
	HdrError       = "Ferry-Error"
	HdrAttempts    = "Ferry-Attempts"
	HdrTime        = "Ferry-Time"
	HdrEscaped     = "Ferry-Escaped"    // the headers of this message whose values are percent-escaped (SetText)
	HdrPass        = "Ferry-Pass"       // the scan pass that published the key (1 the first full scan); absent for key lists
	HdrWriteTime   = "Ferry-Writetime"  // Cassandra writetime of the blob read, microseconds since the epoch
	HdrSuperseded  = "Ferry-Superseded" // on a DONE entry: the writetime of the newer bytes of the key that S3 holds instead of this message's
)

// Carry copies the identity headers of in to out as they are, an escaped key with its mark.
func Carry(out, in nats.Header) {
	escaped := escapedSet(in)
	for _, name := range []string{HdrID, HdrKey, HdrOrigin} {
		v := in.Get(name)
		if v == "" {
			continue
		}
		out.Set(name, v)
		mark(out, name, escaped[name])
	}
}

// SetText sets a header that carries a key, so that Text reads back exactly what was set. NATS
// drops the blanks around a header value (" x" arrives as "x", a second key's name) and a line
// break would end the header: such a value is percent-escaped and named in Ferry-Escaped.
// Every other value is stored as it is, readable in `nats stream view` and by older ferries.
func SetText(h nats.Header, name, v string) {
	esc := needsEscape(v)
	if esc {
		v = url.PathEscape(v)
	}
	h.Set(name, v)
	mark(h, name, esc)
}

// Text reads a header set by SetText (or by an older ferry, which never escaped).
func Text(h nats.Header, name string) (string, error) {
	v := h.Get(name)
	if !escapedSet(h)[name] {
		return v, nil
	}
	u, err := url.PathUnescape(v)
	if err != nil {
		return "", fmt.Errorf("%s %q: escaped value: %w", name, v, err)
	}
	return u, nil
}

func needsEscape(v string) bool {
	if v != "" && (blank(v[0]) || blank(v[len(v)-1])) {
		return true
	}
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			return true
		}
	}
	return false
}

func blank(c byte) bool { return c == ' ' || c == '\t' }

func escapedSet(h nats.Header) map[string]bool {
	v := h.Get(HdrEscaped)
	if v == "" {
		return nil
	}
	set := map[string]bool{}
	for _, name := range strings.Split(v, ",") {
		set[name] = true
	}
	return set
}

// mark records whether header name is escaped in h's Ferry-Escaped list.
func mark(h nats.Header, name string, escaped bool) {
	set := escapedSet(h)
	if set[name] == escaped {
		return
	}
	if escaped {
		if set == nil {
			set = map[string]bool{}
		}
		set[name] = true
	} else {
		delete(set, name)
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	if len(names) == 0 {
		h.Del(HdrEscaped)
		return
	}
	sort.Strings(names)
	h.Set(HdrEscaped, strings.Join(names, ","))
}

// CRC32COf parses the Ferry-CRC32C header (the CRC32C of the source bytes, in decimal); ok is
// false when the message has none (published before the fetcher set it).
func CRC32COf(h nats.Header) (crc uint32, ok bool, err error) {
	v := h.Get(HdrCRC32C)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, false, fmt.Errorf("%s %q: %w", HdrCRC32C, v, err)
	}
	return uint32(n), true, nil
}

// KeyMsg is a KEYS message for key; id is its Ferry-Id (KeyID, or a replay's own id) and origin
// says where it came from (file:line, or the DLQ entry it replays).
func KeyMsg(n Names, key, id, origin string) *nats.Msg {
	_, subject := n.Route(n.Keys, id)
	m := nats.NewMsg(subject)
	m.Data = []byte(key)
	m.Header.Set(HdrID, id)
	m.Header.Set(HdrOrigin, origin)
	return m
}
