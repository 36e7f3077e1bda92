package prune

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
)

func TestCheckQuarantine(t *testing.T) {
	for _, tc := range []struct {
		prefix, quarantine string
		ok                 bool
	}{
		{"p/", "", true},
		{"p/", "q/", true},
		{"p/", "pruned/", true}, // differs from p/ at its second byte
		{"p/", "p/q/", false},
		{"p/", "p/", false},
		{"p/x/", "p/", false}, // the rules' keys all begin with it
		{"", "pruned/", false},
		{"images/", "images-pruned/", true},
	} {
		if err := CheckQuarantine(tc.prefix, tc.quarantine); (err == nil) != tc.ok {
			t.Errorf("CheckQuarantine(%q, %q) = %v, want ok %v", tc.prefix, tc.quarantine, err, tc.ok)
		}
	}
}

// recheckSource is a scan that missed key x (another target holds it, or it came back after the
// scan read its range): Holds, the re-check before acting, finds it.
type recheckSource struct {
	fakeSource
	live string
}

func (s recheckSource) Holds(ctx context.Context, key string) (bool, error) {
	if key == s.live {
		return true, nil
	}
	return s.fakeSource.Holds(ctx, key)
}

// TestRunOwnersAndRecheck: objects only in S3 without an owner record naming a key the rules put
// there are listed as not ferry's and never touched; a candidate whose key a read target holds
// at the re-check is kept.
func TestRunOwnersAndRecheck(t *testing.T) {
	rules := compileRules(t, "p/{key}")
	old := time.Now().Add(-time.Hour)
	b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{
		"p/a":       ferryObj(old, "a", 1),               // live
		"p/x":       ferryObj(old, "x", 1),               // x: held by a target the scan missed
		"p/y":       ferryObj(old, "y", 1),               // y: gone, ferry's: deleted
		"p/foreign": {old, map[string]string{}},          // the application's own write
		"p/other":   ferryObj(old, "elsewhere/other", 1), // another job's key
		"p/legacy":  {old, map[string]string{blobstore.LegacyOwnerMeta: "legacy"}},
	}}
	src := recheckSource{fakeSource: fakeSource{rows: []Row{{Key: []byte("a"), WriteTime: 1}}}, live: "x"}
	o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: "p/", Delete: true,
		MaxDelete: Threshold{Count: 10}, Listers: 1, Workers: 2}
	rec := &fakeRecorder{}
	res, err := Run(context.Background(), src, b, rules, rec, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := candidates(t, o.Out); strings.Join(got, " ") != "p/legacy p/x p/y" {
		t.Errorf("candidates %q, want p/legacy p/x p/y", got)
	}
	raw, err := os.ReadFile(filepath.Join(o.Out, FileForeign))
	if err != nil {
		t.Fatal(err)
	}
	if f := string(raw); !strings.Contains(f, "p/foreign\tno owner record") || !strings.Contains(f, "p/other\towner \"elsewhere/other\"") {
		t.Errorf("%s:\n%s", FileForeign, f)
	}
	if res.Foreign != 2 || res.OnlyInS3 != 3 || res.Live != 1 || res.Deleted != 2 {
		t.Errorf("foreign %d, only in S3 %d, live %d, deleted %d; want 2, 3, 1, 2", res.Foreign, res.OnlyInS3, res.Live, res.Deleted)
	}
	for _, k := range []string{"p/a", "p/x", "p/foreign", "p/other"} {
		if _, ok := b.objs[k]; !ok {
			t.Errorf("%s deleted", k)
		}
	}
	if p := proofOf(res, o, "QUORUM", "QUORUM", nil); p.Proven() {
		t.Errorf("PROVEN with p/x's key live at the re-check")
	}
}
