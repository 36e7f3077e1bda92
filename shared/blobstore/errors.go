package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ferry-migrate/ferry/shared/fault"
)

var (
	// ErrNotFound is a missing object (Head, Get). HEAD has no body, so on a missing bucket Head
	// also says ErrNotFound: Check the bucket at start.
	ErrNotFound = errors.New("object not found")
	// ErrExists is an object that a conditional Put (IfAbsent) found already there.
	ErrExists = errors.New("object already exists")
	// ErrNoBucket is a missing bucket found by Check.
	ErrNoBucket = errors.New("bucket does not exist")
	// ErrBadDigest is a body that does not match the MD5 it came with (caught here before a
	// multipart upload; S3 reports the same as BadDigest on a single PUT).
	ErrBadDigest = errors.New("body does not match its md5")
)

// MismatchError is a stored object that differs from what was expected.
type MismatchError struct {
	Key   string
	Field string // "size", "crc32c", "etag" or MD5Meta
	Want  string
	Got   string // empty when the object lacks MD5Meta
}

func (e *MismatchError) Error() string {
	got := e.Got
	if got == "" {
		got = "nothing"
	}
	return fmt.Sprintf("object %s: %s mismatch: want %s, got %s", e.Key, e.Field, e.Want, got)
}

// codeKinds are S3 error codes (AWS's and versitygw's) whose kind is known. Codes not listed fall
// back to the HTTP status.
var codeKinds = map[string]fault.Kind{
	// Transient: the server or the path to it is struggling, or bytes were damaged in transit.
	"SlowDown":                  fault.Transient,
	"RequestTimeout":            fault.Transient,
	"RequestTimeTooSkewed":      fault.Transient, // the SDK corrects its clock offset on the next attempt
	"InternalError":             fault.Transient,
	"ServiceUnavailable":        fault.Transient,
	"Throttling":                fault.Transient,
	"ThrottlingException":       fault.Transient,
	"RequestThrottled":          fault.Transient,
	"TooManyRequests":           fault.Transient,
	"BadDigest":                 fault.Transient,
	"XAmzContentSHA256Mismatch": fault.Transient,
	"IncompleteBody":            fault.Transient,
	"OperationAborted":          fault.Transient,
	"NoSuchUpload":              fault.Transient, // our multipart upload vanished; a new Put starts over
	"InvalidPart":               fault.Transient,

	// Fatal: credentials, bucket, account or destination settings are wrong for every key.
	"AccessDenied":                 fault.Fatal,
	"AccessForbidden":              fault.Fatal,
	"AllAccessDisabled":            fault.Fatal,
	"AccountProblem":               fault.Fatal,
	"InvalidAccessKeyId":           fault.Fatal,
	"SignatureDoesNotMatch":        fault.Fatal,
	"InvalidToken":                 fault.Fatal,
	"ExpiredToken":                 fault.Fatal,
	"InvalidSecurity":              fault.Fatal,
	"MissingSecurityHeader":        fault.Fatal,
	"NotSignedUp":                  fault.Fatal,
	"NoSuchBucket":                 fault.Fatal,
	"InvalidBucketName":            fault.Fatal,
	"PermanentRedirect":            fault.Fatal, // wrong region or endpoint
	"AuthorizationHeaderMalformed": fault.Fatal, // wrong region
	"InvalidStorageClass":          fault.Fatal,
	"QuotaExceeded":                fault.Fatal, // versitygw bucket quota: no key fits until someone acts
	"InsufficientStorage":          fault.Fatal,

	// Permanent: this object (its key, size or metadata) can never be stored.
	"EntityTooLarge":              fault.Permanent,
	"KeyTooLongError":             fault.Permanent,
	"InvalidObjectName":           fault.Permanent,
	"MetadataTooLarge":            fault.Permanent,
	"ObjectParentIsFile":          fault.Permanent, // versitygw posix: "a/b" exists, "a/b/c" cannot
	"ExistingObjectIsDirectory":   fault.Permanent, // versitygw posix: "a/b/c" exists, "a/b" cannot
	"DirectoryObjectContainsData": fault.Permanent,
}

// Classify is this package's table from its errors to fault kinds; the Client marks every error
// it returns with it, so the runner reads the kind directly. Unknown errors are Transient: a
// retry costs little, a wrongly dropped key is lost.
func Classify(err error) fault.Kind {
	if err == nil {
		return fault.Transient
	}
	var k fault.Kinded
	if errors.As(err, &k) {
		return k.FaultKind()
	}
	if certHint(err) != "" {
		return fault.Fatal // the server's certificate will not verify on the next try either
	}
	switch {
	case errors.Is(err, ErrNoBucket):
		return fault.Fatal
	case errors.Is(err, ErrNotFound):
		return fault.Permanent
	case errors.Is(err, ErrBadDigest), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fault.Transient
	case IsUnreachable(err):
		return fault.Outage
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code := apiErr.ErrorCode()
		if k, ok := codeKinds[code]; ok {
			return k
		}
		// InvalidArgument covers many things; only one about the key is this object's fault.
		if code == "InvalidArgument" || code == "InvalidURI" {
			msg := strings.ToLower(apiErr.ErrorMessage())
			if code == "InvalidURI" || strings.Contains(msg, "key") || strings.Contains(msg, "object name") {
				return fault.Permanent
			}
		}
	}
	switch s := statusOf(err); {
	case s == 401 || s == 403:
		return fault.Fatal // HEAD answers carry no code: a bare 403 is bad credentials or policy
	case s == 301:
		return fault.Fatal // bucket in another region
	case s == 413:
		return fault.Permanent // body too large
	}
	// 408, 500, other network errors, timeouts and anything unknown.
	return fault.Transient
}

// Mark gives err its kind by this package's table (Classify); nil stays nil. The Client marks every
// error it returns; a stand-in for it (a test's fake store) does the same.
func Mark(err error) error {
	if err == nil {
		return nil
	}
	return fault.Mark(err, Classify(err))
}

// statusOf is the HTTP status of a failed request, or 0 when none was received.
func statusOf(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isCode(err error, code string) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == code
}

// IsBadDigest reports whether a PUT failed because the body did not match the MD5 sent with it:
// ErrBadDigest (checked here before a multipart upload) or S3's BadDigest on a single PUT. The
// caller tells bytes damaged on the way (retry) from a body that never matched (replay) by
// hashing the body itself; doing so only on this error keeps MD5 off the normal path.
func IsBadDigest(err error) bool {
	var apiErr smithy.APIError
	return errors.Is(err, ErrBadDigest) || errors.As(err, &apiErr) && apiErr.ErrorCode() == "BadDigest"
}

// IsAccessDenied reports whether S3 refused a request for lack of permission (AccessDenied, or a
// bare 403 where the answer has no body), as opposed to bad credentials or a missing bucket.
func IsAccessDenied(err error) bool {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "AccessDenied", "AccessForbidden":
			return true
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "NoSuchBucket":
			return false
		}
	}
	return statusOf(err) == 403
}

// IsUnreachable reports whether err means S3 is not serving anyone at the moment, as opposed to a
// failure of this one object: it could not be reached (connection refused, no route, DNS
// failure), what stands in front of it answered for it (a load balancer or ingress whose backends
// are down: 502, 503 "no healthy upstream", 504), or the connection was cut (reset, broken pipe,
// EOF before or within the answer). Callers hold the message as an outage (stage.Outage) instead
// of using up its budget, so a long outage does not dead-letter the backlog. A single object that
// keeps getting one of these while others pass ends in the DLQ all the same: the runner counts
// its runs once it was held for stage.Options.OutageAlone while other messages succeeded.
//
// Throttling (503 SlowDown, 429, the throttling codes) is held too: S3 asks every client to slow
// down (a prefix's or a server's request rate), no object is at fault, and counting runs would
// dead-letter the backlog under sustained throttling. Holding is backing off (pauses from 2 s up
// to a minute), and the adaptive limit counts each as a drop and lowers the concurrency.
//
// 500 (InternalError) is not: S3 answered about this request, and some servers say 500 for one
// object (a posix backend's I/O error on its file); it stays a transient error with a budget.
func IsUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests":
			return true
		}
	}
	switch statusOf(err) {
	case 0: // no answer: below
	case 429, 502, 503, 504:
		return true
	default:
		return false // S3 answered
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	// Cut connections: a proxy whose backend went away resets or closes them mid-request.
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
