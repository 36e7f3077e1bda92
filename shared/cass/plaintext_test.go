package cass

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/ferry-migrate/ferry/shared/config"
)

// TestClusterConfigWarnsPlaintext: a session for a target whose username's password would cross
// the network in clear logs one warning naming the target, without the password; a loopback,
// TLS or allow_plaintext target logs none. Before, nothing was said.
func TestClusterConfigWarnsPlaintext(t *testing.T) {
	var logged strings.Builder
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	defer slog.SetDefault(old)
	t.Setenv(PasswordEnv, "pw-sekretxq")
	for _, tc := range []struct {
		target config.Target
		warn   bool
	}{
		{config.Target{Name: "plain-remote", Hosts: []string{"cass1.example:9042"}, Username: "ferry"}, true},
		{config.Target{Name: "plain-loopback", Hosts: []string{"127.0.0.1"}, Username: "ferry"}, false},
		{config.Target{Name: "plain-allowed", Hosts: []string{"cass1.example"}, Username: "ferry", AllowPlaintext: true}, false},
		{config.Target{Name: "tls", Hosts: []string{"cass1.example"}, Username: "ferry", TLS: &config.TargetTLS{}}, false},
		{config.Target{Name: "anonymous", Hosts: []string{"cass1.example"}}, false},
	} {
		logged.Reset()
		for range 2 { // a second session: no second warning
			if _, err := ClusterConfig(tc.target, 1); err != nil {
				t.Fatal(err)
			}
		}
		out := logged.String()
		if n := strings.Count(out, "level=WARN"); n != map[bool]int{true: 1}[tc.warn] || strings.Contains(out, "sekretxq") ||
			(tc.warn && !strings.Contains(out, tc.target.Name)) {
			t.Errorf("%s: logged %q, want %v warning naming it, without the password", tc.target.Name, out, tc.warn)
		}
	}
}
