package cass

import (
	"strings"
	"testing"
)

func TestAtLeast(t *testing.T) {
	for _, tc := range []struct {
		got, want string
		ok, bad   bool
	}{
		{"LOCAL_QUORUM", "LOCAL_QUORUM", true, false},
		{"local_quorum", "LOCAL_QUORUM", true, false},
		{"QUORUM", "LOCAL_QUORUM", true, false},
		{"ALL", "QUORUM", true, false},
		{"EACH_QUORUM", "QUORUM", true, false},
		{"ONE", "LOCAL_ONE", true, false},
		{"LOCAL_ONE", "ONE", true, false},
		{"LOCAL_ONE", "LOCAL_QUORUM", false, false},
		{"TWO", "LOCAL_QUORUM", false, false},
		{"LOCAL_QUORUM", "ALL", false, false},
		{"ANY", "ONE", false, false},
		{"MOST", "ONE", false, true},
		{"ONE", "MOST", false, true},
	} {
		ok, err := AtLeast(tc.got, tc.want)
		if ok != tc.ok || (err != nil) != tc.bad {
			t.Errorf("AtLeast(%s, %s) = %v, %v; want %v (error: %v)", tc.got, tc.want, ok, err, tc.ok, tc.bad)
		}
	}
}

func TestKeyScanCQL(t *testing.T) {
	s := KeyScan{Table: "ks.t", KeyColumn: "k", BlobColumn: "b"}
	want := "SELECT token(k), k, writetime(b) FROM ks.t WHERE token(k) > ? AND token(k) <= ?"
	if got := s.CQL(); got != want {
		t.Errorf("CQL = %q, want %q", got, want)
	}
	if !strings.Contains(s.CQL(), "writetime(b)") {
		t.Error("no writetime")
	}
}
