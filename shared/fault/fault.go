// Package fault is the one vocabulary of failure that ferry's clients (blobstore, cass, bus) and
// its runner share, as rclone's fserrors serves every backend: each client keeps its own table
// from its errors to a Kind and marks the errors it returns; the runner reads the Kind and acts
// (retry, dead-letter, hold, stop) without knowing which client failed.
package fault

import (
	"errors"
	"fmt"
)

// Kind is how a failure is handled.
type Kind int

const (
	// Transient may succeed later: retry with backoff, within the message's budget. An error
	// nobody marked is Transient: a retry costs little, a wrongly dropped key is lost.
	Transient Kind = iota
	// Permanent will never succeed for this key (not found, invalid, refused for this object):
	// dead-letter it.
	Permanent
	// Outage is a dependency down for every key (no connection, no leader, a proxy with no
	// backend): hold the message and retry until it answers, using no run of its budget.
	Outage
	// Fatal will fail every key until an operator acts (bad credentials, a missing bucket): stop.
	Fatal
)

func (k Kind) String() string {
	switch k {
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	case Outage:
		return "outage"
	case Fatal:
		return "fatal"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Kinded is an error that says its Kind. The outermost one in a chain decides: a caller that knows
// better (a stage that saw a refusal was the object's own) wraps and overrides.
type Kinded interface {
	error
	FaultKind() Kind
}

// KindOf is the Kind of the outermost Kinded error in err's chain; Transient when none.
func KindOf(err error) Kind {
	var k Kinded
	if errors.As(err, &k) {
		return k.FaultKind()
	}
	return Transient
}

type marked struct {
	kind Kind
	err  error
}

func (e *marked) Error() string   { return e.err.Error() }
func (e *marked) Unwrap() error   { return e.err }
func (e *marked) FaultKind() Kind { return e.kind }

// Mark returns err marked with kind; nil stays nil.
func Mark(err error, kind Kind) error {
	if err == nil {
		return nil
	}
	return &marked{kind: kind, err: err}
}
