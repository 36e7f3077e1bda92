package blobstore

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/ferry-migrate/ferry/shared/config"
)

// TestNewWarnsPlaintext: a client for an http:// endpoint that is not loopback logs one warning
// naming the endpoint; https, loopback and allow_plaintext log none. Before, nothing was said.
func TestNewWarnsPlaintext(t *testing.T) {
	var logged strings.Builder
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	defer slog.SetDefault(old)
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s-sekretxq")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, tc := range []struct {
		d    config.Destination
		warn bool
	}{
		{config.Destination{Endpoint: "http://s3.example:9000", Bucket: "b1"}, true},
		{config.Destination{Endpoint: "http://127.0.0.1:7070", Bucket: "b2"}, false},
		{config.Destination{Endpoint: "http://s3.example:9001", Bucket: "b3", AllowPlaintext: true}, false},
		{config.Destination{Endpoint: "https://s3.example:9002", Bucket: "b4"}, false},
	} {
		logged.Reset()
		for range 2 {
			if _, err := New(context.Background(), tc.d, 1); err != nil {
				t.Fatal(err)
			}
		}
		out := logged.String()
		if n := strings.Count(out, "level=WARN"); n != map[bool]int{true: 1}[tc.warn] || strings.Contains(out, "sekretxq") ||
			(tc.warn && !strings.Contains(out, tc.d.Endpoint)) {
			t.Errorf("%s: logged %q, want %v warning naming it", tc.d.Endpoint, out, tc.warn)
		}
	}
}
