package cass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/gocql/gocql"
)

// codeErr stands in for the driver's unexported error frame, which carries overloaded, syntax and
// the other codes without a type of their own.
type codeErr struct{ code int }

func (e codeErr) Code() int       { return e.code }
func (e codeErr) Message() string { return fmt.Sprintf("code %#x", e.code) }
func (e codeErr) Error() string   { return e.Message() }

func TestIsTransient(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("cassandra target dc1: read key %q: %w", "k", err) }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"not found", wrap(ErrNotFound), false},
		{"driver not found", gocql.ErrNotFound, false},
		{"no response", wrap(gocql.ErrTimeoutNoResponse), true},
		{"read timeout", wrap(&gocql.RequestErrReadTimeout{Received: 0, BlockFor: 1}), true},
		{"write timeout", wrap(&gocql.RequestErrWriteTimeout{}), true},
		{"read failure", wrap(&gocql.RequestErrReadFailure{}), true},
		{"unavailable", wrap(&gocql.RequestErrUnavailable{Required: 1}), true},
		{"unprepared", wrap(&gocql.RequestErrUnprepared{}), true},
		{"deadline", wrap(context.DeadlineExceeded), true},
		{"canceled at shutdown", wrap(context.Canceled), true},
		{"no hosts in pool", wrap(gocql.ErrNoConnections), true},
		{"no connections at start", gocql.ErrNoConnectionsStarted, true},
		{"connection closed", wrap(gocql.ErrConnectionClosed), true},
		{"too many timeouts", wrap(gocql.ErrTooManyTimeouts), true},
		{"session closed", wrap(gocql.ErrSessionClosed), true},
		{"overloaded", wrap(codeErr{gocql.ErrCodeOverloaded}), true},
		{"bootstrapping", wrap(codeErr{gocql.ErrCodeBootstrapping}), true},
		{"server error", wrap(codeErr{gocql.ErrCodeServer}), true},
		{"dial refused", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), true},
		{"unknown", errors.New("something odd"), true},
		{"syntax", wrap(codeErr{gocql.ErrCodeSyntax}), false},
		{"invalid (no such table)", wrap(codeErr{gocql.ErrCodeInvalid}), false},
		{"unauthorized", wrap(codeErr{gocql.ErrCodeUnauthorized}), false},
		{"bad credentials", wrap(codeErr{gocql.ErrCodeCredentials}), false},
		{"config", wrap(codeErr{gocql.ErrCodeConfig}), false},
		{"function failure", wrap(&gocql.RequestErrFunctionFailure{}), false},
		{"already exists", wrap(&gocql.RequestErrAlreadyExists{}), false},
		{"keyspace missing", wrap(gocql.ErrKeyspaceDoesNotExist), false},
		{"arg count", wrap(gocql.ErrQueryArgLength), false},
		{"frame too big", wrap(gocql.ErrFrameTooBig), false},
		{"wrong column type", wrap(gocql.UnmarshalError("can not unmarshal int into *[]uint8")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsTransient(tt.err); got != tt.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
