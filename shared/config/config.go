// Package config holds the job's configuration: the source (ordered Cassandra read targets), the
// destination (an S3 bucket), the key rules, and their validation. It is loaded from one YAML file
// so that every service of a job reads the same settings; credentials never live in it (the S3
// client takes them from the standard AWS chain; a Cassandra password from a file it names or the
// environment).
package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Job is one migration: where keys are read from and where objects go.
type Job struct {
	Source      Source      `yaml:"source"`
	Destination Destination `yaml:"destination"`
	Keys        KeyRules    `yaml:"keys"`
	Prune       Prune       `yaml:"prune"`
	Manifest    Manifest    `yaml:"manifest"`
}

// Manifest is where `ferry manifest` keeps the DONE ledger once it drains it: compressed
// segments of verified keys, so that DONE stays bounded.
type Manifest struct {
	Bucket string `yaml:"bucket"` // default: destination.bucket
	Prefix string `yaml:"prefix"` // default DefaultManifestPrefix; the segments are <prefix><job>/done/
}

// DefaultManifestPrefix is manifest.prefix when the job file does not name one.
const DefaultManifestPrefix = "ferry-manifests/"

// ManifestInDestination says whether the manifests share the destination bucket: then the key rules keep
// their prefix free of objects (KeyRules.Reserved) and prune leaves them alone.
func (j *Job) ManifestInDestination() bool {
	return j.Manifest.Bucket == "" || j.Manifest.Bucket == j.Destination.Bucket
}

// Prune is how `ferry prune` reads the source key set it deletes by.
type Prune struct {
	// Consistency is the read level of prune's key scan and of its re-check before each
	// deletion, default QUORUM: a key a replica missed must not look deleted. --consistency may
	// raise it, never lower it.
	Consistency string `yaml:"consistency"`
}

// DefaultPruneConsistency is prune.consistency when the job file does not name one. QUORUM,
// not LOCAL_QUORUM: LOCAL_QUORUM never asks another DC's replicas, so a key written through
// another DC's coordinator and not yet replicated here looks deleted; QUORUM reads a majority
// of all replicas, which overlaps any QUORUM write and reaches into the other DCs. With a DC
// down the read fails and prune refuses, instead of deleting by the replicas that remain:
// a deletion cannot be taken back, so prune gives up availability for it.
const DefaultPruneConsistency = "QUORUM"

// Source is an ordered list of read targets; the fetcher tries them in order.
type Source struct {
	Targets []Target `yaml:"targets"`
}

// Target is one Cassandra table in one datacenter or cluster.
type Target struct {
	Name        string        `yaml:"name"`         // shown in the BLOBS Source header and metrics
	Hosts       []string      `yaml:"hosts"`        // contact points, host or host:port
	LocalDC     string        `yaml:"local_dc"`     // DC-aware routing; empty: any DC
	Consistency string        `yaml:"consistency"`  // e.g. LOCAL_ONE (default), LOCAL_QUORUM, ONE
	Table       string        `yaml:"table"`        // keyspace.table
	KeyColumn   string        `yaml:"key_column"`   // default "key"
	BlobColumn  string        `yaml:"blob_column"`  // default "data"
	Query       string        `yaml:"query"`        // full CQL with one ?; overrides table and columns; selects the blob [, writetime(blob)]
	Timeout     time.Duration `yaml:"timeout"`      // per query; default 5s
	ConnTimeout time.Duration `yaml:"conn_timeout"` // default 5s
	Username    string        `yaml:"username"`     // PasswordAuthenticator; see PasswordFile
	// PasswordFile holds the username's password (its first line), read at start. Without it the
	// password comes from FERRY_CASSANDRA_PASSWORD; never from the job file or the command line.
	PasswordFile string `yaml:"password_file"`
	// TLS turns on client-to-node TLS; absent: clear text. "tls: {}" verifies against the system's CAs.
	TLS *TargetTLS `yaml:"tls"`
	// AllowPlaintext declares that a username without tls, to hosts that are not loopback, is
	// deliberate (the network is encrypted below ferry): no warning at start (Plaintext).
	AllowPlaintext bool `yaml:"allow_plaintext"`
}

// TargetTLS is client-to-node TLS for a read target (client_encryption_options on the nodes).
type TargetTLS struct {
	CAFile   string `yaml:"ca_file"`   // PEM CAs that sign the nodes' certificates; empty: the system's
	CertFile string `yaml:"cert_file"` // client certificate (PEM), with key_file: for require_client_auth
	KeyFile  string `yaml:"key_file"`  //
	// ServerName is the name every node's certificate must hold; empty: each node's address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate: encryption without authentication of the node.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Destination is the S3 bucket the objects go to.
type Destination struct {
	Endpoint     string        `yaml:"endpoint"`      // empty: AWS; else a URL such as http://127.0.0.1:7070
	Region       string        `yaml:"region"`        // default us-east-1
	Bucket       string        `yaml:"bucket"`        //
	PathStyle    bool          `yaml:"path_style"`    // needed by most S3-compatible servers
	StorageClass string        `yaml:"storage_class"` // empty: the bucket's default
	Timeout      time.Duration `yaml:"timeout"`       // per request; default 60s
	// CABundle is a PEM file of CA certificates trusted for the endpoint's HTTPS, in addition to
	// the system's (a private CA of an S3-compatible server).
	CABundle string `yaml:"ca_bundle"`
	// ServerSideEncryption asks S3 to encrypt each object at rest: "AES256" (S3-managed keys) or
	// "aws:kms"; empty: the bucket's default encryption.
	ServerSideEncryption string `yaml:"server_side_encryption"`
	// SSEKMSKeyID is the KMS key (ID, ARN or alias) with aws:kms; empty: the account's S3 key.
	SSEKMSKeyID string `yaml:"sse_kms_key_id"`
	// Checksum is the flexible checksum S3 checks each object against and keeps with it, and the
	// verifier compares: "crc32c" (default: a full-object CRC32C, also for multipart uploads) or
	// "off" for servers that do not support S3's checksums; the verifier then relies on ferry's
	// MD5 in the object's metadata.
	Checksum string `yaml:"checksum"`
	// ReplaceUnowned lets the uploader write over an object that holds other bytes and no ferry
	// owner record (written by another tool or by hand). Default false: such a key is
	// dead-lettered upload_error and the object is left as it is.
	ReplaceUnowned bool `yaml:"replace_unowned"`
	// AllowPlaintext declares that an http:// endpoint to a host that is not loopback is
	// deliberate: no warning at start (Plaintext).
	AllowPlaintext bool `yaml:"allow_plaintext"`
}

// Checksum values of Destination.Checksum.
const (
	ChecksumCRC32C = "crc32c"
	ChecksumOff    = "off"
)

// SSE values of Destination.ServerSideEncryption.
const (
	SSEAES256 = "AES256"
	SSEKMS    = "aws:kms"
)

// KeyRules turn a source key into an S3 key. They are configuration, not code: see keyrules.
type KeyRules struct {
	MaxLength int       `yaml:"max_length"` // default 1024 bytes
	Pattern   string    `yaml:"pattern"`    // a valid key (after rewrites) matches it; empty: any
	Rewrite   []Rewrite `yaml:"rewrite"`    // applied in order to form the S3 key
	Template  string    `yaml:"template"`   // S3 key template; {key}, {hash2}, {hash4}; default {key}
	// ContentType is the object's Content-Type; default from the key's extension.
	ContentType string `yaml:"content_type"`
	// Reserved are S3 key prefixes no key may map under (not from the file: Defaults sets the
	// manifest prefix when the manifests share the destination bucket), so that a key's object
	// and ferry's own files never meet.
	Reserved []string `yaml:"-"`
}

// Rewrite replaces every match of a regular expression (Go RE2 syntax, $1 for groups).
type Rewrite struct {
	Match   string `yaml:"match"`
	Replace string `yaml:"replace"`
}

var jobName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateJobName checks a job name: it becomes part of stream, consumer and bucket names.
func ValidateJobName(name string) error {
	if !jobName.MatchString(name) {
		return Invalid(fmt.Errorf("invalid job name %q: use 1-64 letters, digits, '_' or '-'", name))
	}
	return nil
}

// Load reads and validates a job file; defaults are filled in.
func Load(path string) (*Job, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Invalid(fmt.Errorf("read config (--config, FERRY_CONFIG): %w", err))
	}
	return Parse(b, path)
}

// Parse decodes YAML (unknown fields are an error: a typo must not silently change behaviour).
func Parse(b []byte, name string) (*Job, error) {
	var j Job
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&j); err != nil {
		// yaml lists each problem on a line of its own; keep the error on one line.
		msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
		return nil, Invalid(fmt.Errorf("config %s: %s", name, msg))
	}
	j.Defaults()
	if err := j.Validate(); err != nil {
		return nil, Invalid(fmt.Errorf("config %s: %w", name, err))
	}
	return &j, nil
}

// Defaults fills in unset values.
func (j *Job) Defaults() {
	for i := range j.Source.Targets {
		t := &j.Source.Targets[i]
		if t.Name == "" {
			t.Name = fmt.Sprintf("target%d", i+1)
		}
		if t.Consistency == "" {
			t.Consistency = "LOCAL_ONE"
		}
		if t.KeyColumn == "" {
			t.KeyColumn = "key"
		}
		if t.BlobColumn == "" {
			t.BlobColumn = "data"
		}
		if t.Timeout == 0 {
			t.Timeout = 5 * time.Second
		}
		if t.ConnTimeout == 0 {
			t.ConnTimeout = 5 * time.Second
		}
	}
	d := &j.Destination
	if d.Region == "" {
		d.Region = "us-east-1"
	}
	if d.Timeout == 0 {
		d.Timeout = 60 * time.Second
	}
	if j.Keys.MaxLength == 0 {
		j.Keys.MaxLength = 1024
	}
	if j.Keys.Template == "" {
		j.Keys.Template = "{key}"
	}
	if j.Prune.Consistency == "" {
		j.Prune.Consistency = DefaultPruneConsistency
	}
	if j.Manifest.Prefix == "" {
		j.Manifest.Prefix = DefaultManifestPrefix
	}
	if j.ManifestInDestination() {
		j.Keys.Reserved = []string{j.Manifest.Prefix}
	}
}

// Validate reports every bad value at once.
func (j *Job) Validate() error {
	var errs []error
	if len(j.Source.Targets) == 0 {
		errs = append(errs, errors.New("source.targets: at least one read target is required"))
	}
	names := map[string]bool{}
	for i, t := range j.Source.Targets {
		if err := t.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("source.targets[%d]: %w", i, err))
		}
		if names[t.Name] {
			errs = append(errs, fmt.Errorf("source.targets[%d]: duplicate name %q", i, t.Name))
		}
		names[t.Name] = true
	}
	if err := j.Destination.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("destination: %w", err))
	}
	if err := j.Keys.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("keys: %w", err))
	}
	if c := strings.ToUpper(j.Prune.Consistency); c != "" && (!consistency[c] || c == "ANY") {
		errs = append(errs, fmt.Errorf("prune.consistency: %q is not a read level", j.Prune.Consistency))
	}
	if p := j.Manifest.Prefix; p != "" && (strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || strings.Contains(p, "//") || strings.ContainsAny(p, "\n\x00")) {
		errs = append(errs, fmt.Errorf("manifest.prefix %q: want a key prefix ending in / such as %s (no leading slash)", p, DefaultManifestPrefix))
	}
	return errors.Join(errs...)
}

var (
	ident       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)
	consistency = map[string]bool{"ANY": true, "ONE": true, "TWO": true, "THREE": true, "QUORUM": true,
		"ALL": true, "LOCAL_QUORUM": true, "EACH_QUORUM": true, "LOCAL_ONE": true}
)

// Validate checks one read target.
func (t Target) Validate() error {
	var errs []error
	if len(t.Hosts) == 0 {
		errs = append(errs, errors.New("hosts: at least one contact point is required"))
	}
	for _, h := range t.Hosts {
		if strings.TrimSpace(h) == "" || strings.ContainsAny(h, " /") {
			errs = append(errs, fmt.Errorf("hosts: %q is not a host or host:port", h))
		}
	}
	if !consistency[strings.ToUpper(t.Consistency)] {
		errs = append(errs, fmt.Errorf("consistency: unknown level %q", t.Consistency))
	}
	if t.Query != "" {
		if strings.Count(t.Query, "?") != 1 {
			errs = append(errs, fmt.Errorf("query: must hold exactly one '?' for the key: %q", t.Query))
		}
		if !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(t.Query)), "SELECT ") {
			errs = append(errs, fmt.Errorf("query: must be a SELECT: %q", t.Query))
		}
	} else {
		ks, tbl, ok := strings.Cut(t.Table, ".")
		if !ok || !ident.MatchString(ks) || !ident.MatchString(tbl) {
			errs = append(errs, fmt.Errorf("table: want keyspace.table, got %q", t.Table))
		}
		if !ident.MatchString(t.KeyColumn) {
			errs = append(errs, fmt.Errorf("key_column: %q is not a column name", t.KeyColumn))
		}
		if !ident.MatchString(t.BlobColumn) {
			errs = append(errs, fmt.Errorf("blob_column: %q is not a column name", t.BlobColumn))
		}
	}
	if t.Timeout < 0 || t.ConnTimeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if t.PasswordFile != "" {
		if t.Username == "" {
			errs = append(errs, errors.New("password_file: set, but username is empty"))
		} else if _, err := ReadPasswordFile(t.PasswordFile); err != nil {
			errs = append(errs, fmt.Errorf("password_file: %w", err))
		}
	}
	if t.TLS != nil {
		if err := t.TLS.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("tls: %w", err))
		}
		if t.AllowPlaintext {
			errs = append(errs, errors.New("allow_plaintext: true, but tls is set: nothing is in clear; remove allow_plaintext"))
		}
	}
	return errors.Join(errs...)
}

// ReadPasswordFile returns the first line of a password file (without its line end). An empty
// first line is an error. The error never holds the file's content.
func ReadPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimRight(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("%s: the first line is empty", path)
	}
	return pw, nil
}

// Validate checks a read target's TLS settings; the files are read here so that a typo'd path
// stops the service at start.
func (c TargetTLS) Validate() error {
	var errs []error
	if c.CAFile != "" {
		if _, err := LoadCABundle(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("ca_file: %w", err))
		}
		if c.InsecureSkipVerify {
			errs = append(errs, errors.New("insecure_skip_verify: true ignores ca_file: give one"))
		}
	}
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		errs = append(errs, errors.New("cert_file and key_file: give both or neither"))
	case c.CertFile != "":
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("cert_file, key_file: %w", err))
		}
	}
	if c.ServerName != "" && (strings.ContainsAny(c.ServerName, " /:") || strings.TrimSpace(c.ServerName) != c.ServerName) {
		errs = append(errs, fmt.Errorf("server_name: %q is not a host name", c.ServerName))
	}
	return errors.Join(errs...)
}

// CQL is the SELECT the fetcher prepares for this target: one ? for the key; out the blob and
// its writetime (microseconds), read in one query. A custom query may select the blob alone
// (its writetime is then unknown: a rewrite cannot be told from a stale retry) or the blob and
// writetime(blob), in that order.
func (t Target) CQL() string {
	if t.Query != "" {
		return t.Query
	}
	return fmt.Sprintf("SELECT %s, writetime(%s) FROM %s WHERE %s = ?", t.BlobColumn, t.BlobColumn, t.Table, t.KeyColumn)
}

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// Validate checks the destination.
func (d Destination) Validate() error {
	var errs []error
	if !bucketName.MatchString(d.Bucket) {
		errs = append(errs, fmt.Errorf("bucket: %q is not a valid S3 bucket name", d.Bucket))
	}
	if d.Endpoint != "" {
		u, err := url.Parse(d.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("endpoint: want http(s)://host[:port], got %q", d.Endpoint))
		}
	}
	if d.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if d.AllowPlaintext && !strings.HasPrefix(d.Endpoint, "http://") {
		errs = append(errs, fmt.Errorf("allow_plaintext: true, but the endpoint is not http:// (%q): nothing is in clear; remove allow_plaintext", d.Endpoint))
	}
	if d.CABundle != "" {
		if _, err := LoadCABundle(d.CABundle); err != nil {
			errs = append(errs, fmt.Errorf("ca_bundle: %w", err))
		} else if strings.HasPrefix(d.Endpoint, "http://") {
			errs = append(errs, fmt.Errorf("ca_bundle: set, but endpoint %q is plain http: use https://", d.Endpoint))
		}
	}
	switch d.ServerSideEncryption {
	case "", SSEAES256, SSEKMS:
	default:
		errs = append(errs, fmt.Errorf("server_side_encryption: %q is not %s or %s", d.ServerSideEncryption, SSEAES256, SSEKMS))
	}
	if d.SSEKMSKeyID != "" && d.ServerSideEncryption != SSEKMS {
		errs = append(errs, fmt.Errorf("sse_kms_key_id: needs server_side_encryption: %s", SSEKMS))
	}
	switch d.Checksum {
	case "", ChecksumCRC32C, ChecksumOff:
	default:
		errs = append(errs, fmt.Errorf("checksum: %q is not %s or %s", d.Checksum, ChecksumCRC32C, ChecksumOff))
	}
	return errors.Join(errs...)
}

// LoadCABundle reads a PEM file of CA certificates: ca_bundle, or AWS_CA_BUNDLE. Anything but
// certificates in it is an error, as is a file without any: a typo'd path or a key file must not
// leave the client trusting only the system's CAs without a word.
func LoadCABundle(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is a %q, want CERTIFICATE", path, n, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d: %w", path, n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return certs, nil
}

// Validate checks the key rules compile.
func (k KeyRules) Validate() error {
	var errs []error
	if k.MaxLength < 1 || k.MaxLength > 1024 {
		errs = append(errs, fmt.Errorf("max_length: %d is outside 1..1024 (S3 keys are at most 1024 bytes)", k.MaxLength))
	}
	if k.Pattern != "" {
		if _, err := regexp.Compile(k.Pattern); err != nil {
			errs = append(errs, fmt.Errorf("pattern: %w", err))
		}
	}
	for i, r := range k.Rewrite {
		if _, err := regexp.Compile(r.Match); err != nil {
			errs = append(errs, fmt.Errorf("rewrite[%d].match: %w", i, err))
		}
	}
	if !strings.Contains(k.Template, "{key}") {
		errs = append(errs, fmt.Errorf("template: %q must contain {key}", k.Template))
	}
	// A placeholder the rules do not fill would be copied into every S3 key as it is.
	for _, m := range placeholder.FindAllString(k.Template, -1) {
		if !slices.Contains(Placeholders, m) {
			errs = append(errs, fmt.Errorf("template: %q: unknown placeholder %s (want %s)", k.Template, m, strings.Join(Placeholders, ", ")))
		}
	}
	if rest := placeholder.ReplaceAllString(k.Template, ""); strings.ContainsAny(rest, "{}") {
		errs = append(errs, fmt.Errorf("template: %q: a brace outside a placeholder (want %s)", k.Template, strings.Join(Placeholders, ", ")))
	}
	return errors.Join(errs...)
}

// Placeholders are what a key template may hold (keyrules fills them).
var Placeholders = []string{"{key}", "{hash2}", "{hash4}"}

var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

// invalidError is a bad flag or configuration value: the process exits 2 (a usage error), not 1.
type invalidError struct{ err error }

func (e *invalidError) Error() string { return e.err.Error() }
func (e *invalidError) Unwrap() error { return e.err }

// Invalid marks err as a bad flag or configuration value; nil stays nil.
func Invalid(err error) error {
	if err == nil {
		return nil
	}
	return &invalidError{err: err}
}

// IsInvalid reports whether err is a bad flag or configuration value.
func IsInvalid(err error) bool {
	var e *invalidError
	return errors.As(err, &e)
}
