// Package keyrules turns a source key into an S3 key by the job's configured rules: validate,
// rewrite with regular expressions, then fill a template (optionally with a hash prefix that
// spreads keys over S3 partitions, which take about 3,500 PUT/s each).
package keyrules

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"path"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/ferry-migrate/ferry/shared/config"
)

// ErrInvalid is wrapped by every rejection; the fetcher dead-letters such keys as invalid_key.
var ErrInvalid = errors.New("invalid key")

// Rules are compiled key rules.
type Rules struct {
	maxLen      int
	pattern     *regexp.Regexp
	rewrites    []rewrite
	template    string
	contentType string
	reserved    []string
}

type rewrite struct {
	re      *regexp.Regexp
	replace string
}

// Compile compiles validated rules (config.KeyRules.Validate).
func Compile(k config.KeyRules) (*Rules, error) {
	r := &Rules{maxLen: k.MaxLength, template: k.Template, contentType: k.ContentType, reserved: k.Reserved}
	if r.maxLen == 0 {
		r.maxLen = 1024
	}
	if r.template == "" {
		r.template = "{key}"
	}
	var err error
	if k.Pattern != "" {
		if r.pattern, err = regexp.Compile(k.Pattern); err != nil {
			return nil, fmt.Errorf("key pattern: %w", err)
		}
	}
	for i, w := range k.Rewrite {
		re, err := regexp.Compile(w.Match)
		if err != nil {
			return nil, fmt.Errorf("key rewrite[%d]: %w", i, err)
		}
		r.rewrites = append(r.rewrites, rewrite{re, w.Replace})
	}
	return r, nil
}

// CheckSource is the check every stage can make on a raw key: valid UTF-8, not empty, not too
// long, no control characters.
func CheckSource(key []byte, maxLen int) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: empty", ErrInvalid)
	case len(key) > maxLen:
		return fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrInvalid, len(key), maxLen)
	case !utf8.Valid(key):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	}
	for _, c := range string(key) {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: control character %U", ErrInvalid, c)
		}
	}
	return nil
}

// Map validates key and returns its S3 key.
func (r *Rules) Map(key string) (string, error) {
	if err := CheckSource([]byte(key), r.maxLen); err != nil {
		return "", fmt.Errorf("key %q: %w", key, err)
	}
	k := key
	for _, w := range r.rewrites {
		k = w.re.ReplaceAllString(k, w.replace)
	}
	if r.pattern != nil && !r.pattern.MatchString(k) {
		return "", fmt.Errorf("key %q (rewritten %q): %w: does not match %s", key, k, ErrInvalid, r.pattern)
	}
	sum := md5.Sum([]byte(k))
	h := hex.EncodeToString(sum[:])
	out := strings.NewReplacer("{key}", k, "{hash2}", h[:2], "{hash4}", h[:4]).Replace(r.template)
	if len(out) > 1024 {
		return "", fmt.Errorf("key %q: %w: S3 key %q is over 1024 bytes", key, ErrInvalid, out)
	}
	for _, p := range r.reserved {
		if strings.HasPrefix(out, p) {
			return "", fmt.Errorf("key %q: %w: S3 key %q is under %q, kept for ferry's manifests (manifest.prefix)", key, ErrInvalid, out, p)
		}
	}
	// Empty, "." and ".." segments are folded by many S3-compatible servers (and file-backed ones
	// like versitygw's posix), so two different keys could land on one object.
	for _, seg := range strings.Split(out, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("key %q: %w: S3 key %q has an empty, '.' or '..' path segment", key, ErrInvalid, out)
		}
	}
	return out, nil
}

// ContentType is the configured content type, else the one of the key's extension, else
// application/octet-stream.
func (r *Rules) ContentType(s3Key string) string {
	if r.contentType != "" {
		return r.contentType
	}
	if t := mime.TypeByExtension(path.Ext(s3Key)); t != "" {
		return t
	}
	return "application/octet-stream"
}
