// Package stage is the runner every ferry stage uses: it consumes a JetStream work queue with a
// bounded number of workers and is the only code that acknowledges messages. A handler returns nil
// (its output is durable: ack), a Permanent error (dead-letter, then term), a Fatal error (stop the
// service), or any other error (transient: nak with backoff, dead-letter at the last delivery).
package stage

import (
	"errors"
	"fmt"
	"time"
)

type permanentError struct {
	reason string
	err    error
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

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

// Transient marks err as retryable and names the dead-letter reason to use should the message run
// out of deliveries (otherwise the stage's default reason).
func Transient(reason string, err error) error { return &reasonError{reason: reason, err: err} }

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Fatal marks err as one that fails every message (bad credentials, a missing bucket): the runner
// naks the message, stops consuming and returns the error, rather than dead-lettering millions of
// keys.
func Fatal(err error) error { return &fatalError{err: err} }

// IsPermanent reports whether err is Permanent, and its reason.
func IsPermanent(err error) (string, bool) {
	var p *permanentError
	if errors.As(err, &p) {
		return p.reason, true
	}
	return "", false
}

// IsFatal reports whether err is Fatal.
func IsFatal(err error) bool {
	var f *fatalError
	return errors.As(err, &f)
}

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

func (e *outageError) Error() string { return e.err.Error() }
func (e *outageError) Unwrap() error { return e.err }

// Outage marks err as a dependency being down for every key (all read targets unreachable, S3
// refusing connections). The runner keeps the message, extends its ack deadline and retries it
// with growing pauses until the dependency answers: no delivery is used up, so an outage of any
// length neither dead-letters the backlog nor spins. A message held for Options.OutageAlone while
// calls started after its hold began succeed is not in an outage, whatever its error says: its
// failure counts as a run (ownError), so the budget ends it.
func Outage(err error) error { return &outageError{err: err} }

// IsOutage reports whether err is an Outage.
func IsOutage(err error) bool {
	var o *outageError
	return errors.As(err, &o)
}

// ownOutage is an Outage error that only one message kept getting while the dependency answered
// others: a failure of that message, which counts as a run, no longer an outage.
type ownOutage struct {
	err  error // what the outage error wrapped: IsOutage no longer sees it
	text string
}

func (e *ownOutage) Error() string { return e.text }
func (e *ownOutage) Unwrap() error { return e.err }

func ownError(err error, held time.Duration) error {
	var o *outageError
	inner := err
	if errors.As(err, &o) {
		inner = o.err
	}
	return &ownOutage{err: inner, text: fmt.Sprintf("%v (held %s while the dependency answered other messages)", err, held.Round(time.Second))}
}
