package blobstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/fault"
)

// rootCAs is the pool of CAs trusted for HTTPS: the system's plus the destination's ca_bundle and
// AWS_CA_BUNDLE; nil (Go's default, the system's) when neither is set. The SDK reads AWS_CA_BUNDLE
// too, but on its own it trusts that bundle alone; here it adds to the system's like ca_bundle.
func rootCAs(caBundle string) (*x509.CertPool, error) {
	env := os.Getenv("AWS_CA_BUNDLE")
	if caBundle == "" && env == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, b := range []struct{ path, name string }{{caBundle, "destination.ca_bundle"}, {env, "AWS_CA_BUNDLE"}} {
		if b.path == "" {
			continue
		}
		certs, err := config.LoadCABundle(b.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// trustHint makes a server certificate that does not verify a Fatal error that says what to fix:
// every request would fail the same way until the CA is configured.
type trustHint struct{ s3.HTTPClient }

func (h trustHint) Do(r *http.Request) (*http.Response, error) {
	resp, err := h.HTTPClient.Do(r)
	if err != nil {
		if hint := certHint(err); hint != "" {
			err = fault.Mark(fmt.Errorf("%w (%s)", err, hint), fault.Fatal)
		}
	}
	return resp, err
}

// certHint says what to check when err is a failed verification of the server's certificate.
func certHint(err error) string {
	var (
		host    x509.HostnameError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		verify  *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &host):
		return "the S3 server's certificate is not valid for this host: check destination.endpoint"
	case errors.As(err, &unknown):
		return "the S3 server's certificate is signed by a CA this process does not trust: set destination.ca_bundle (or AWS_CA_BUNDLE) to a PEM file of that CA"
	case errors.As(err, &invalid):
		return "the S3 server's certificate is invalid (expired or not for serving): check it, and destination.ca_bundle"
	case errors.As(err, &verify):
		return "the S3 server's certificate does not verify: check destination.ca_bundle (or AWS_CA_BUNDLE) and destination.endpoint"
	}
	return ""
}
