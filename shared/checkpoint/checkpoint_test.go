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
