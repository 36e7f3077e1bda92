package cass

import (
	"context"
	"errors"
	"net"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/fault"
)

// IsTransient reports whether err may go away on its own: a timeout, an unavailable or overloaded
// replica, a lost connection. Those are worth a retry later or on the next read target. It is false
// for nil, for ErrNotFound (an answer, not a failure), and for errors that say the configuration is
// wrong (syntax, invalid query, no such keyspace, unauthorized, bad credentials, a column of the
// wrong type): retrying those only repeats them. An error it does not know is transient, as
// everywhere in ferry: redelivery is bounded, a lost key is not.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, gocql.ErrNotFound) {
		return false
	}
	// Cancelled counts as transient: it is a shutdown, and the key must come back, not be
	// dead-lettered.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}

	// Server errors with their own types. Checked before RequestError, which they all satisfy.
	var (
		unavailable  *gocql.RequestErrUnavailable
		readTimeout  *gocql.RequestErrReadTimeout
		writeTimeout *gocql.RequestErrWriteTimeout
		readFailure  *gocql.RequestErrReadFailure
		writeFailure *gocql.RequestErrWriteFailure
		casUnknown   *gocql.RequestErrCASWriteUnknown
		cdcFailure   *gocql.RequestErrCDCWriteFailure
		unprepared   *gocql.RequestErrUnprepared
		function     *gocql.RequestErrFunctionFailure
		exists       *gocql.RequestErrAlreadyExists
	)
	switch {
	case errors.As(err, &unavailable), errors.As(err, &readTimeout), errors.As(err, &writeTimeout),
		errors.As(err, &readFailure), errors.As(err, &writeFailure), errors.As(err, &casUnknown),
		errors.As(err, &cdcFailure), errors.As(err, &unprepared):
		return true
	case errors.As(err, &function), errors.As(err, &exists):
		return false
	}
	var re gocql.RequestError
	if errors.As(err, &re) {
		switch re.Code() {
		case gocql.ErrCodeSyntax, gocql.ErrCodeInvalid, gocql.ErrCodeUnauthorized,
			gocql.ErrCodeCredentials, gocql.ErrCodeConfig, gocql.ErrCodeProtocol:
			return false
		default: // overloaded, bootstrapping, truncate, server error
			return true
		}
	}

	// The driver's own errors.
	switch {
	case errors.Is(err, gocql.ErrTimeoutNoResponse), errors.Is(err, gocql.ErrTooManyTimeouts),
		errors.Is(err, gocql.ErrConnectionClosed), errors.Is(err, gocql.ErrNoStreams),
		errors.Is(err, gocql.ErrNoConnections), errors.Is(err, gocql.ErrNoConnectionsStarted),
		errors.Is(err, gocql.ErrHostQueryFailed), errors.Is(err, gocql.ErrUnavailable),
		errors.Is(err, gocql.ErrSessionClosed):
		return true
	case errors.Is(err, gocql.ErrQueryArgLength), errors.Is(err, gocql.ErrKeyspaceDoesNotExist),
		errors.Is(err, gocql.ErrNoKeyspace), errors.Is(err, gocql.ErrNoHosts),
		errors.Is(err, gocql.ErrUnsupported), errors.Is(err, gocql.ErrUseStmt),
		errors.Is(err, gocql.ErrTooManyStmts), errors.Is(err, gocql.ErrFrameTooBig):
		return false
	}
	var (
		unmarshal gocql.UnmarshalError
		marshal   gocql.MarshalError
	)
	if errors.As(err, &unmarshal) || errors.As(err, &marshal) {
		return false // the column is not of the type the target says: configuration
	}
	return true // among them dial errors, resets and i/o timeouts from the network
}

// IsUnreachable reports whether err says the target cannot be reached at all (no live connection,
// no host, not enough live replicas, a refused dial), as opposed to a failure of this one read.
// The fetcher holds its messages through such an outage instead of using up their deliveries.
func IsUnreachable(err error) bool {
	var unavailable *gocql.RequestErrUnavailable
	var opErr *net.OpError
	return errors.Is(err, gocql.ErrNoConnections) || errors.Is(err, gocql.ErrNoConnectionsStarted) ||
		errors.Is(err, gocql.ErrUnavailable) || errors.Is(err, gocql.ErrConnectionClosed) ||
		errors.Is(err, gocql.ErrSessionClosed) || errors.As(err, &unavailable) ||
		(errors.As(err, &opErr) && opErr.Op == "dial")
}

// Classify is this package's table from its errors to fault kinds: a key a target does not hold
// is Permanent (for that target), a target that cannot be reached is an Outage, anything else
// Transient. Reader marks the errors it returns with it.
func Classify(err error) fault.Kind {
	switch {
	case errors.Is(err, ErrNotFound):
		return fault.Permanent
	case IsUnreachable(err):
		return fault.Outage
	}
	return fault.Transient
}
