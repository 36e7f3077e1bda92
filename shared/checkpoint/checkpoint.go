// Package checkpoint is the producer's position as it is stored in the job's KV bucket: how far
// each key list is published, and each table scan's plan and the progress of its token ranges.
// The producer writes these records and resumes from them; `ferry status` reads them. Both import
// this package, so neither imports the other.
package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keylist"
)

// The KV keys: a key list's checkpoint is ListPrefix.<digest of its name>; a scan's plan is
// ScanPrefix.<digest of table and key column> and range i's checkpoint that key + ".<i>".
const (
	ListPrefix = "producer"
	ScanPrefix = "scan"
)

// List is a key list's position, stored under ListKey(name), with what identifies the list it
// was saved for: the file's or object's identity (size and modification time or ETag) and the
// SHA-256 of the list's first Offset (decompressed) bytes. A list whose identity changed is
// resumed only when those bytes are unchanged. Checkpoints saved before lists had an identity
// have no SHA256.
type List struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"` // bytes of the (decompressed) list whose keys are durably in KEYS
	Line   int64  `json:"line"`
	Done   bool   `json:"done"`
	keylist.Identity
	SHA256    string `json:"sha256,omitempty"`     // hex, of the list's first Offset (decompressed) bytes
	HashState []byte `json:"hash_state,omitempty"` // that hash's state, to hash on from Offset without reading the bytes before it again
}

// ListKey is the KV key of a key list's checkpoint. name is how the producer names the list: an
// absolute path, an s3:// URL or "-", so the same list has the same key from any working
// directory.
func ListKey(name string) string {
	sum := sha256.Sum256([]byte(name))
	return ListPrefix + "." + hex.EncodeToString(sum[:12])
}

// Range is the token range (Start, End] with Start < End.
type Range struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// Width is the number of tokens in r.
func (r Range) Width() uint64 { return uint64(r.End) - uint64(r.Start) }

func (r Range) String() string { return fmt.Sprintf("(%d, %d]", r.Start, r.End) }

// ScanPlan is the split a scan uses, stored under ScanKey; saved once, so a restart scans the
// same ranges even if the flags or the ring changed meanwhile.
type ScanPlan struct {
	Table     string  `json:"table"`
	KeyColumn string  `json:"key_column"`
	Ranges    []Range `json:"ranges"`
}

// ScanRange is a range's progress, stored under ScanKey + ".<range index>": every key whose token is at most
// Last is in KEYS.
type ScanRange struct {
	Last int64 `json:"last"`
	Done bool  `json:"done"`
	Keys int64 `json:"keys"` // keys read, re-reads after a restart included
	// Published is the keys of the range published: at or after the pass's writetime floor
	// (all of them in a full pass), re-reads included. Absent in checkpoints saved before passes.
	Published int64 `json:"published,omitempty"`
}

// ScanKey is the KV key of a table's scan plan, and the prefix of its ranges' checkpoints: one
// scan per table and job.
func ScanKey(t config.Target) string {
	sum := sha256.Sum256([]byte(t.Table + "/" + t.KeyColumn))
	return ScanPrefix + "." + hex.EncodeToString(sum[:12])
}

// PassPrefix starts the KV keys of a table's scan passes: PassKey(t, n) holds pass n's record.
const PassPrefix = "pass"

// Pass is one scan pass of a table, stored under PassKey. Pass 1 is the first full scan; a delta
// pass (Since > 0) enumerates every key again but publishes only those whose blob's writetime is
// at or after Since. The producer writes it when the pass starts and as it ends; `ferry status`
// shows the passes, `ferry prune` and its proof read them.
type Pass struct {
	N     int    `json:"n"`
	Table string `json:"table"`
	// Since is the writetime floor in microseconds since the epoch (the --since point less the
	// clock-skew margin); 0 for a full pass, which publishes every key.
	Since       int64     `json:"since_us"`
	SinceFrom   string    `json:"since_from,omitempty"` // what --since named: "pass 3", a time
	Margin      string    `json:"margin,omitempty"`     // the clock-skew margin taken off
	Consistency string    `json:"consistency"`
	DC          string    `json:"dc,omitempty"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end,omitzero"` // zero while running
	Scanned     int64     `json:"scanned"`      // keys read (re-reads after a restart included)
	Published   int64     `json:"published"`    // keys published (at or after Since)
	Complete    bool      `json:"complete"`     // every token range of the pass read to its end
}

// Kind names the pass for people: "full", or "delta since pass 2 less 10m0s" (or since a time).
func (p Pass) Kind() string {
	if p.Since == 0 {
		return "full"
	}
	s := "delta since " + p.SinceFrom
	if p.Margin != "" && p.Margin != "0s" {
		s += " less " + p.Margin
	}
	return s
}

// RangePrefix is the prefix of pass n's range checkpoints, <prefix>.<range index>, where scanKey
// is the scan's ScanKey: scanKey itself for pass 1, the layout from before passes (so a scan
// started then resumes), scanKey + ".p<n>" for a later pass. A KV watch of scanKey + ".*" (one
// token) sees pass 1's ranges only.
func RangePrefix(scanKey string, n int) string {
	if n <= 1 {
		return scanKey
	}
	return scanKey + ".p" + strconv.Itoa(n)
}

// ParseRangeKey reads a range checkpoint's KV key: the scan's key (scan.<digest>), the pass and
// the range index. ok is false for any other key, the plan's included.
func ParseRangeKey(key string) (scanKey string, pass, index int, ok bool) {
	parts := strings.Split(key, ".")
	if parts[0] != ScanPrefix || len(parts) < 3 || len(parts) > 4 {
		return "", 0, 0, false
	}
	pass = 1
	if len(parts) == 4 {
		n, err := strconv.Atoi(strings.TrimPrefix(parts[2], "p"))
		if err != nil || !strings.HasPrefix(parts[2], "p") || n < 2 {
			return "", 0, 0, false
		}
		pass = n
	}
	i, err := strconv.Atoi(parts[len(parts)-1])
	if err != nil || i < 0 {
		return "", 0, 0, false
	}
	return parts[0] + "." + parts[1], pass, i, true
}

// ParsePassKey reads a pass record's KV key: the scan's key (scan.<digest>) it belongs to and
// the pass number.
func ParsePassKey(key string) (scanKey string, n int, ok bool) {
	parts := strings.Split(key, ".")
	if len(parts) != 3 || parts[0] != PassPrefix {
		return "", 0, false
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil || n < 1 {
		return "", 0, false
	}
	return ScanPrefix + "." + parts[1], n, true
}

// PassKey is the KV key of pass n of table t's scan.
func PassKey(t config.Target, n int) string {
	sum := sha256.Sum256([]byte(t.Table + "/" + t.KeyColumn))
	return fmt.Sprintf("%s.%s.%d", PassPrefix, hex.EncodeToString(sum[:12]), n)
}
