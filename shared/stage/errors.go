// Package stage is the runner every ferry stage uses: it consumes a JetStream work queue with a
// bounded number of workers and is the only code that acknowledges messages. A handler returns
// its output (the runner stores it, then acks) or an error whose fault.Kind decides: Permanent
// (dead-letter, then term), Outage (hold and retry, no run used), Fatal (stop the service), or
// Transient (nak with backoff, dead-letter when the budget is used up). The clients mark their
// errors with a Kind; Permanent, Transient and Reason add the dead-letter reason.
package stage

import (
	"errors"
	"fmt"
	"time"

	"github.com/ferry-migrate/ferry/shared/fault"
)

type permanentError struct {
	reason string
	err    error
}

func (e *permanentError) Error() string       { return e.err.Error() }
func (e *permanentError) Unwrap() error       { return e.err }
func (*permanentError) FaultKind() fault.Kind { return fault.Permanent }

// Permanent marks err as one that no retry can fix; the message is dead-lettered with reason.
func Permanent(reason string, err error) error {
	if err == nil {
		err = errors.New(reason)
	}
	return &permanentError{reason: reason, err: err}
}

type reasonError struct {
	reason string
	err    error
}

func (e *reasonError) Error() string { return e.err.Error() }
func (e *reasonError) Unwrap() error { return e.err }

// Reason names the dead-letter reason of err, whose Kind stays what its client said: a handler
// passes a client's error on with the reason its stage gives it.
func Reason(reason string, err error) error { return &reasonError{reason: reason, err: err} }

// Transient marks err as retryable and names the dead-letter reason to use should the message run
// out of deliveries (otherwise the stage's default reason).
func Transient(reason string, err error) error {
	return fault.Mark(Reason(reason, err), fault.Transient)
}

type fatalError struct{ err error }

func (e *fatalError) Error() string       { return e.err.Error() }
func (e *fatalError) Unwrap() error       { return e.err }
func (*fatalError) FaultKind() fault.Kind { return fault.Fatal }

// Fatal marks err as one that fails every message (bad credentials, a missing bucket): the runner
// naks the message, stops consuming and returns the error, rather than dead-lettering millions of
// keys.
func Fatal(err error) error { return &fatalError{err: err} }

// IsPermanent reports whether err is Permanent, and its reason ("" when nobody named one).
func IsPermanent(err error) (string, bool) {
	if fault.KindOf(err) != fault.Permanent {
		return "", false
	}
	var p *permanentError
	if errors.As(err, &p) {
		return p.reason, true
	}
	return transientReason(err, ""), true
}

// IsFatal reports whether err is Fatal.
func IsFatal(err error) bool { return fault.KindOf(err) == fault.Fatal }

func transientReason(err error, fallback string) string {
	var r *reasonError
	if errors.As(err, &r) {
		return r.reason
	}
	return fallback
}

// panicError is a handler panic, treated as transient: the next delivery may be on a healthy worker,
// and MaxDeliver bounds the loop.
type panicError struct{ v any }

func (e panicError) Error() string { return fmt.Sprintf("handler panic: %v", e.v) }

type outageError struct{ err error }

func (e *outageError) Error() string       { return e.err.Error() }
func (e *outageError) Unwrap() error       { return e.err }
func (*outageError) FaultKind() fault.Kind { return fault.Outage }

// Outage marks err as a dependency being down for every key (all read targets unreachable, S3
// refusing connections). The runner keeps the message, extends its ack deadline and retries it
// with growing pauses until the dependency answers: no delivery is used up, so an outage of any
// length neither dead-letters the backlog nor spins. A message held for Options.OutageAlone while
// calls started after its hold began succeed is not in an outage, whatever its error says: its
// failure counts as a run (ownError), so the budget ends it.
func Outage(err error) error { return &outageError{err: err} }

// IsOutage reports whether err is an Outage.
func IsOutage(err error) bool { return fault.KindOf(err) == fault.Outage }

// ownOutage is an Outage error that only one message kept getting while the dependency answered
// others: a failure of that message, which counts as a run, no longer an outage.
type ownOutage struct {
	err  error // the outage error: its FaultKind (Transient) overrides the Outage inside
	text string
}

func (e *ownOutage) Error() string       { return e.text }
func (e *ownOutage) Unwrap() error       { return e.err }
func (*ownOutage) FaultKind() fault.Kind { return fault.Transient }

func ownError(err error, held time.Duration) error {
	return &ownOutage{err: err, text: fmt.Sprintf("%v (held %s while the dependency answered other messages)", err, held.Round(time.Second))}
}
