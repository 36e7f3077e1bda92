package bus

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Dead-letter reasons: a closed set, documented in docs/operations.md. Operators replay by reason.
const (
	ReasonInvalidKey     = "invalid_key"     // not UTF-8, too long, or fails the key rules
	ReasonNotFound       = "not_found"       // no read target holds the key
	ReasonDeleted        = "deleted"         // a scan pass read the key, the fetch found no row: deleted or expired at the source since
	ReasonSourceError    = "source_error"    // reads kept failing until the last delivery
	ReasonTooLarge       = "too_large"       // blob above the hard size limit
	ReasonUploadError    = "upload_error"    // S3 kept failing, or refused this object for good
	ReasonVerifyMissing  = "verify_missing"  // HEAD found no object
	ReasonVerifyMismatch = "verify_mismatch" // size or checksum differ
	ReasonMaxDeliveries  = "max_deliveries"  // a message kept killing or stalling its worker
)

// Reasons lists every reason, in the order docs/operations.md gives them.
var Reasons = []string{ReasonInvalidKey, ReasonNotFound, ReasonDeleted, ReasonSourceError, ReasonTooLarge,
	ReasonUploadError, ReasonVerifyMissing, ReasonVerifyMismatch, ReasonMaxDeliveries}

// DeadLetter is one DLQ entry.
type DeadLetter struct {
	Key      string      // the source key (the message body)
	Stage    string      // the stage that gave up
	Reason   string      // one of Reasons
	Err      string      // the last error, human readable
	Attempts uint64      // handler runs (stage.Serve); deliveries in an advisor's max_deliveries entry
	From     nats.Header // headers of the failed message: Ferry-Id and Ferry-Origin are kept
}

// PublishDeadLetter stores d in the DLQ and waits for the PubAck: only then may the caller Term
// the original. Its Nats-Msg-Id makes a repeat (Term lost, message redelivered) a no-op.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, n Names, d DeadLetter) error {
	m := nats.NewMsg(n.DLQSubject(d.Stage, d.Reason))
	m.Data = []byte(d.Key)
	if d.From != nil {
		Carry(m.Header, d.From)
	}
	id := m.Header.Get(HdrID)
	if id == "" {
		id = KeyID(n.Job, d.Key)
		m.Header.Set(HdrID, id)
	}
	SetText(m.Header, HdrKey, headerSafe(d.Key))
	m.Header.Set(HdrStage, d.Stage)
	m.Header.Set(HdrReason, d.Reason)
	m.Header.Set(HdrError, headerSafe(d.Err))
	m.Header.Set(HdrAttempts, strconv.FormatUint(d.Attempts, 10))
	m.Header.Set(HdrTime, time.Now().UTC().Format(time.RFC3339))
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(MsgID("dlq", id)), jetstream.WithExpectStream(n.DLQ)); err != nil {
		return fmt.Errorf("dead-letter key %q (%s/%s): %w", d.Key, d.Stage, d.Reason, err)
	}
	return nil
}

// headerSafe keeps a header value on one line and bounded: a key can hold anything.
func headerSafe(s string) string {
	const max = 1024
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' || c < 0x20 && c != '\t' {
			b[i] = ' '
		}
	}
	if len(b) > max {
		return strings.ToValidUTF8(string(b[:max]), "") + "…" // never half a character
	}
	return string(b)
}
