package cass

import (
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/config"
)

func TestNumConns(t *testing.T) {
	for _, tt := range []struct{ concurrency, want int }{
		{0, 2}, {1, 2}, {16, 2}, {32, 2}, {33, 3}, {64, 4}, {128, 8}, {1000, 8},
	} {
		if got := numConns(tt.concurrency); got != tt.want {
			t.Errorf("numConns(%d) = %d, want %d", tt.concurrency, got, tt.want)
		}
	}
}

func TestClusterConfig(t *testing.T) {
	target := config.Target{
		Name: "dc2", Hosts: []string{"127.0.0.2"}, LocalDC: "dc2", Consistency: "local_quorum",
		Timeout: 3 * time.Second, ConnTimeout: 2 * time.Second,
	}
	c, err := ClusterConfig(target, 64)
	if err != nil {
		t.Fatal(err)
	}
	if c.Consistency != gocql.LocalQuorum || c.Timeout != 3*time.Second || c.ConnectTimeout != 2*time.Second ||
		c.NumConns != 4 || c.ProtoVersion != 0 {
		t.Errorf("got consistency %v timeout %v connect %v conns %d proto %d",
			c.Consistency, c.Timeout, c.ConnectTimeout, c.NumConns, c.ProtoVersion)
	}
	if c.HostFilter == nil {
		t.Fatal("local_dc set but no host filter")
	}
	if c.Authenticator != nil {
		t.Error("authenticator set without a username")
	}

	target.LocalDC = ""
	if c, _ = ClusterConfig(target, 1); c.HostFilter != nil {
		t.Error("host filter without local_dc")
	}

	target.Consistency = "SOMETIMES"
	if _, err := ClusterConfig(target, 1); err == nil || !strings.Contains(err.Error(), "dc2") {
		t.Errorf("bad consistency: err = %v, want an error naming the target", err)
	}
}

func TestClusterConfigPassword(t *testing.T) {
	target := config.Target{Name: "dc1", Hosts: []string{"127.0.0.1"}, Username: "ferry"}
	t.Setenv(PasswordEnv, "")
	if _, err := ClusterConfig(target, 1); err == nil || !strings.Contains(err.Error(), PasswordEnv) {
		t.Errorf("username without password: err = %v", err)
	}
	t.Setenv(PasswordEnv, "s3cret")
	c, err := ClusterConfig(target, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, ok := c.Authenticator.(gocql.PasswordAuthenticator)
	if !ok || a.Username != "ferry" || a.Password != "s3cret" {
		t.Errorf("authenticator = %#v", c.Authenticator)
	}
}
