package config

import (
	"log/slog"
	"strings"
	"testing"
)

// TestPlaintext: a Cassandra username without tls, and an S3 endpoint over http://, to a host that
// is not loopback, are reported (one line naming the setting, the fix and allow_plaintext) unless
// the job file sets allow_plaintext on that target or destination; allow_plaintext where nothing
// is in clear is a validation error, so that it cannot silence a later change. Before, all were
// accepted without a word.
func TestPlaintext(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings of the one report, none: no report; "invalid: …": Parse fails
	}{
		{"username, no tls, remote", `{name: dc1, hosts: [cass1.internal:9042], table: ks.t, username: ferry}`,
			[]string{"cassandra target dc1", "username", "cass1.internal", "tls", "allow_plaintext: true"}},
		{"username, no tls, one host remote", `{hosts: [127.0.0.1, 10.1.2.3], table: ks.t, username: ferry}`,
			[]string{"cassandra target target1", "10.1.2.3"}},
		{"username, no tls, loopback", `{hosts: [127.0.0.1, "localhost:9042", "[::1]:9042", 127.0.0.2], table: ks.t, username: ferry}`, nil},
		{"username, tls", `{hosts: [cass1], table: ks.t, username: ferry, tls: {}}`, nil},
		{"no username", `{hosts: [cass1], table: ks.t}`, nil},
		{"username, no tls, allowed", `{hosts: [cass1], table: ks.t, username: ferry, allow_plaintext: true}`, nil},
		{"allowed with tls", `{hosts: [cass1], table: ks.t, username: ferry, tls: {}, allow_plaintext: true}`,
			[]string{"invalid: allow_plaintext: true, but tls is set"}},
	} {
		t.Run("target "+tc.name, func(t *testing.T) {
			check(t, "source: {targets: ["+tc.yaml+"]}\ndestination: {bucket: my-bucket}\n", tc.want)
		})
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"http remote", `{bucket: my-bucket, endpoint: "http://minio.internal:9000"}`,
			[]string{"destination.endpoint", "http://minio.internal:9000", "https://", "allow_plaintext: true"}},
		{"http ip", `{bucket: my-bucket, endpoint: "http://10.0.0.5"}`, []string{"destination.endpoint"}},
		{"http loopback", `{bucket: my-bucket, endpoint: "http://127.0.0.1:7070"}`, nil},
		{"http localhost", `{bucket: my-bucket, endpoint: "http://localhost:9000"}`, nil},
		{"http ::1", `{bucket: my-bucket, endpoint: "http://[::1]:9000"}`, nil},
		{"https", `{bucket: my-bucket, endpoint: "https://minio.internal:9000"}`, nil},
		{"aws", `{bucket: my-bucket}`, nil},
		{"http allowed", `{bucket: my-bucket, endpoint: "http://minio.internal:9000", allow_plaintext: true}`, nil},
		{"allowed with https", `{bucket: my-bucket, endpoint: "https://s3.internal", allow_plaintext: true}`,
			[]string{"invalid: allow_plaintext: true, but the endpoint is not http://"}},
		{"allowed with aws", `{bucket: my-bucket, allow_plaintext: true}`,
			[]string{"invalid: allow_plaintext: true, but the endpoint is not http://"}},
	} {
		t.Run("destination "+tc.name, func(t *testing.T) {
			check(t, "source: {targets: [{hosts: [127.0.0.1], table: ks.t}]}\ndestination: "+tc.yaml+"\n", tc.want)
		})
	}
}

func check(t *testing.T, yaml string, want []string) {
	t.Helper()
	j, err := Parse([]byte(yaml), "job.yaml")
	if len(want) == 1 && strings.HasPrefix(want[0], "invalid: ") {
		if err == nil || !IsInvalid(err) || !strings.Contains(err.Error(), strings.TrimPrefix(want[0], "invalid: ")) {
			t.Errorf("Parse: %v, want an error saying %q", err, strings.TrimPrefix(want[0], "invalid: "))
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range []string{j.Source.Targets[0].Plaintext(), j.Destination.Plaintext()} {
		if r != "" {
			got = append(got, r)
		}
	}
	if len(want) == 0 {
		if len(got) != 0 {
			t.Errorf("reported %q, want nothing", got)
		}
		return
	}
	if len(got) != 1 {
		t.Fatalf("reported %q, want one report", got)
	}
	for _, w := range want {
		if !strings.Contains(got[0], w) || strings.Contains(got[0], "\n") {
			t.Errorf("report %q: want one line saying %q", got[0], w)
		}
	}
}

// TestWarnPlaintextOnce: each report is logged once per process at warn level, however many
// clients a process opens with the same settings.
func TestWarnPlaintextOnce(t *testing.T) {
	var logged strings.Builder
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	defer slog.SetDefault(old)
	for range 3 {
		WarnPlaintext("report A, from TestWarnPlaintextOnce")
		WarnPlaintext("report B, from TestWarnPlaintextOnce")
	}
	if n := strings.Count(logged.String(), "level=WARN"); n != 2 || strings.Count(logged.String(), "report A") != 1 {
		t.Errorf("%d warnings, want 2 (one a report): %s", n, logged.String())
	}
}
