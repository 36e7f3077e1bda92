package service

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// TestNATSURLCommandLine: credentials inside --nats on the command line (which ps and
// /debug/pprof/cmdline show) are refused with one line pointing to FERRY_NATS and the credential
// flags, without repeating them; the same URL from FERRY_NATS is taken. Before, any --nats was
// taken as given.
func TestNATSURLCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string // the URL, or "" for a refusal
		refusal   string // in the error
	}{
		{name: "default", want: "nats://127.0.0.1:4222"},
		{name: "flag without credentials", args: []string{"--nats", "nats://a:4222,nats://b:4222"}, want: "nats://a:4222,nats://b:4222"},
		{name: "env with password", env: "nats://u:sekretxq@a:4222", want: "nats://u:sekretxq@a:4222"},
		{name: "env with token", env: "tls://sekretxq@a:4222", want: "tls://sekretxq@a:4222"},
		{name: "flag with password", args: []string{"--nats", "nats://u:sekretxq@a:4222"}, refusal: "FERRY_NATS"},
		{name: "flag with token", args: []string{"--nats=tls://sekretxq@a:4222"}, refusal: "--nats-creds"},
		{name: "flag with password in the second URL", args: []string{"--nats", "nats://a:1,nats://u:sekretxq@b:2"}, refusal: "--nats-password-file"},
		{name: "flag and env the same", env: "nats://u:sekretxq@a:4222", args: []string{"--nats", "nats://u:sekretxq@a:4222"}, refusal: "FERRY_NATS"},
		{name: "flag over env", env: "nats://a:4222", args: []string{"--nats", "nats://u:sekretxq@a:4222"}, refusal: "FERRY_NATS"},
		{name: "env that does not parse", env: "nats://u:sekr^etxq@a:4222", refusal: "percent-encode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("FERRY_NATS", tc.env)
			if tc.env == "" {
				os.Unsetenv("FERRY_NATS") // t.Setenv restores it
			}
			var got string
			var err error
			app := &cli.App{Name: "ferry", Flags: GlobalFlags(), Action: func(c *cli.Context) error {
				got, err = NATSURL(c)
				return nil
			}}
			if err := app.Run(append([]string{"ferry"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if tc.refusal == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("took %q", got)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.refusal) || strings.Contains(msg, "sekr") || strings.Contains(msg, "etxq") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line saying %q without the secret", msg, tc.refusal)
			}
			if !config.IsInvalid(err) {
				t.Errorf("%v: not a usage error (exit 2)", err)
			}
			if tc.env == "" || len(tc.args) > 0 {
				if !errors.Is(err, ErrCredentialsInArgs) {
					t.Errorf("%v: not ErrCredentialsInArgs", err)
				}
			} else if !errors.Is(err, bus.ErrBadURL) {
				t.Errorf("%v: not bus.ErrBadURL", err)
			}
		})
	}
}
