package bus

import (
	"fmt"
	"strconv"

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
)

// Carry copies the identity headers of in to out.
func Carry(out, in nats.Header) {
	for _, h := range []string{HdrID, HdrKey, HdrOrigin} {
		if v := in.Get(h); v != "" {
			out.Set(h, v)
		}
	}
}

// SizeOf parses the Ferry-Size header; -1 when absent or malformed.
func SizeOf(h nats.Header) int64 {
	n, err := strconv.ParseInt(h.Get(HdrSize), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
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
	m := nats.NewMsg(n.KeysSubject)
	m.Data = []byte(key)
	m.Header.Set(HdrID, id)
	m.Header.Set(HdrOrigin, origin)
	return m
}
