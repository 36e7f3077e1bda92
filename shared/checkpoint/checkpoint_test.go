package checkpoint

import (
	"testing"

	"github.com/ferry-migrate/ferry/shared/config"
)

// TestKeys: the KV keys are what a running job already stored; a change would restart every list
// and scan from the beginning.
func TestKeys(t *testing.T) {
	if got, want := ListKey("/data/keys.txt"), "producer.ceb10099b05b04810385398e"; got != want {
		t.Errorf("ListKey = %q, want %q", got, want)
	}
	if got, want := ScanKey(config.Target{Table: "ks.blobs", KeyColumn: "key"}), "scan.e65e1039b158a7bfd5437231"; got != want {
		t.Errorf("ScanKey = %q, want %q", got, want)
	}
}

// TestPassKeys: a later pass's range checkpoints are out of reach of a watch of the scan key +
// ".*" (pass 1's), and the keys parse back.
func TestPassKeys(t *testing.T) {
	tg := config.Target{Table: "ks.blobs", KeyColumn: "key"}
	scan := ScanKey(tg)
	if got, want := PassKey(tg, 3), "pass.e65e1039b158a7bfd5437231.3"; got != want {
		t.Errorf("PassKey = %q, want %q", got, want)
	}
	if s, n, ok := ParsePassKey(PassKey(tg, 3)); !ok || s != scan || n != 3 {
		t.Errorf("ParsePassKey = %q %d %v", s, n, ok)
	}
	for _, tc := range []struct {
		key         string
		pass, index int
		ok          bool
	}{
		{RangePrefix(scan, 1) + ".7", 1, 7, true},
		{RangePrefix(scan, 2) + ".0", 2, 0, true},
		{scan + ".p12.31", 12, 31, true},
		{scan, 0, 0, false},
		{scan + ".p1.3", 0, 0, false},
		{scan + ".x2.3", 0, 0, false},
		{scan + ".p2", 0, 0, false},
		{"producer.abc", 0, 0, false},
	} {
		s, pass, i, ok := ParseRangeKey(tc.key)
		if ok != tc.ok || pass != tc.pass || i != tc.index || (ok && s != scan) {
			t.Errorf("ParseRangeKey(%q) = %q %d %d %v, want %d %d %v", tc.key, s, pass, i, ok, tc.pass, tc.index, tc.ok)
		}
	}
	if got := RangePrefix(scan, 2); got != scan+".p2" {
		t.Errorf("RangePrefix(2) = %q", got)
	}
}
