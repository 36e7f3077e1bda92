package stage

import "testing"

// TestRecordText: records read back as written, and a record written before runs said how they
// ended ("N") reads as an unknown end, so its redelivery gets a recheck rather than a dead letter.
func TestRecordText(t *testing.T) {
	for _, tc := range []struct {
		text string
		rec  record
	}{
		{"3", record{runs: 3, end: endUnknown}},
		{"1 failed", record{runs: 1, end: endFailed}},
		{"10 recheck", record{runs: 10, end: endRecheck}},
	} {
		got, err := parseRecord(tc.text)
		if err != nil || got != tc.rec {
			t.Errorf("parseRecord(%q) = %+v, %v; want %+v", tc.text, got, err, tc.rec)
		}
		if s := tc.rec.String(); s != tc.text {
			t.Errorf("%+v.String() = %q, want %q", tc.rec, s, tc.text)
		}
	}
	for _, bad := range []string{"", "x", "3 done", "-1"} {
		if _, err := parseRecord(bad); err == nil {
			t.Errorf("parseRecord(%q): no error", bad)
		}
	}
}
