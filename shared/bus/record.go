package bus

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Record is what a message between the stages says about its key, read from and written to its
// headers by one codec (DecodeRecord, Record.Encode). A field the message does not carry is
// zero; Size is -1 then.
type Record struct {
	ID          string // Ferry-Id: the key's identity, basis of every Nats-Msg-Id
	Key         string // the source key
	Origin      string // file:line, token range or "replay"
	S3Key       string
	Size        int64  // blob bytes; -1 when absent
	MD5         []byte // of the source bytes; nil when absent
	CRC32C      uint32 // of the source bytes, when HasCRC32C
	HasCRC32C   bool
	ContentType string
	Source      string // the read target that served the blob
	Object      string // object-store name of a blob above the inline limit
	ETag        string
	// Pass is the scan pass that published the key (Ferry-Pass); 0 for keys from lists and replays.
	Pass int
	// WriteTime is the Cassandra writetime of the bytes read (Ferry-Writetime), microseconds
	// since the epoch; 0 when unknown (a custom query that does not select it, an older fetcher).
	WriteTime int64
	// Superseded, on a DONE entry, is the writetime of the newer bytes of the key that S3 holds
	// instead of this message's (Ferry-Superseded); those are verified by their own message.
	Superseded int64
}

// DecodeRecord reads a Record from h. A header that is there but does not parse is an error that
// names it (and its value); the fields that parsed are still set. Size is -1 when absent or bad.
func DecodeRecord(h nats.Header) (Record, error) {
	r := Record{ID: h.Get(HdrID), Origin: h.Get(HdrOrigin), ContentType: h.Get(HdrContentType),
		Source: h.Get(HdrSource), Object: h.Get(HdrObject), ETag: h.Get(HdrETag), Size: -1}
	var errs []error
	var err error
	if r.Key, err = Text(h, HdrKey); err != nil {
		errs = append(errs, err)
	}
	if r.S3Key, err = Text(h, HdrS3Key); err != nil {
		errs = append(errs, err)
	}
	if v := h.Get(HdrSize); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			r.Size = n
		} else {
			errs = append(errs, fmt.Errorf("%s %q: not a byte count", HdrSize, v))
		}
	}
	if v := h.Get(HdrMD5); v != "" {
		if sum, err := hex.DecodeString(v); err == nil && len(sum) == 16 {
			r.MD5 = sum
		} else {
			errs = append(errs, fmt.Errorf("%s %q: not an MD5 in hex", HdrMD5, v))
		}
	}
	if crc, ok, err := CRC32COf(h); err != nil {
		errs = append(errs, err)
	} else {
		r.CRC32C, r.HasCRC32C = crc, ok
	}
	if v := h.Get(HdrPass); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			r.Pass = n
		} else {
			errs = append(errs, fmt.Errorf("%s %q: not a pass number", HdrPass, v))
		}
	}
	if v := h.Get(HdrWriteTime); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			r.WriteTime = n
		} else {
			errs = append(errs, fmt.Errorf("%s %q: not a writetime", HdrWriteTime, v))
		}
	}
	if v := h.Get(HdrSuperseded); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			r.Superseded = n
		} else {
			errs = append(errs, fmt.Errorf("%s %q: not a writetime", HdrSuperseded, v))
		}
	}
	return r, errors.Join(errs...)
}

// Encode writes r's fields that are set into h.
func (r Record) Encode(h nats.Header) {
	set := func(name, v string) {
		if v != "" {
			h.Set(name, v)
		}
	}
	set(HdrID, r.ID)
	set(HdrOrigin, r.Origin)
	if r.Key != "" {
		SetText(h, HdrKey, r.Key)
	}
	if r.S3Key != "" {
		SetText(h, HdrS3Key, r.S3Key)
	}
	if r.Size >= 0 {
		h.Set(HdrSize, strconv.FormatInt(r.Size, 10))
	}
	if r.MD5 != nil {
		h.Set(HdrMD5, hex.EncodeToString(r.MD5))
	}
	if r.HasCRC32C {
		h.Set(HdrCRC32C, strconv.FormatUint(uint64(r.CRC32C), 10))
	}
	set(HdrContentType, r.ContentType)
	set(HdrSource, r.Source)
	set(HdrObject, r.Object)
	set(HdrETag, r.ETag)
	if r.Pass > 0 {
		h.Set(HdrPass, strconv.Itoa(r.Pass))
	}
	if r.WriteTime > 0 {
		h.Set(HdrWriteTime, strconv.FormatInt(r.WriteTime, 10))
	}
	if r.Superseded > 0 {
		h.Set(HdrSuperseded, strconv.FormatInt(r.Superseded, 10))
	}
}
