package cass

import (
	"testing"

	"github.com/gocql/gocql"
)

// TestBlobCell: NULL and 0 bytes must stay apart through the scan, or a NULL blob is migrated as
// an empty object (the driver's own []byte scan gives nil for both).
func TestBlobCell(t *testing.T) {
	blob := gocql.NewNativeType(4, gocql.TypeBlob, "")
	for _, tc := range []struct {
		name     string
		data     []byte
		wantNil  bool
		wantSize int
	}{
		{"null", nil, true, 0},
		{"0 bytes", []byte{}, false, 0},
		{"3 bytes", []byte("abc"), false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c blobCell
			if err := gocql.Unmarshal(blob, tc.data, &c); err != nil {
				t.Fatal(err)
			}
			if (c == nil) != tc.wantNil || len(c) != tc.wantSize {
				t.Fatalf("got %q (nil %v), want %d bytes (nil %v)", c, c == nil, tc.wantSize, tc.wantNil)
			}
			if len(tc.data) > 0 {
				tc.data[0] = 'x' // the driver reuses its frame buffer
				if c[0] == 'x' {
					t.Fatal("the cell shares the driver's buffer")
				}
			}
		})
	}
}

// TestCheckColumns: a target's SELECT gives the blob, optionally followed by its writetime; any
// other shape is configuration (not transient), so NewReader fails instead of every key.
func TestCheckColumns(t *testing.T) {
	col := func(name string, typ gocql.Type) gocql.ColumnInfo {
		return gocql.ColumnInfo{Name: name, TypeInfo: gocql.NewNativeType(4, typ, "")}
	}
	blob, wt, key := col("data", gocql.TypeBlob), col("writetime(data)", gocql.TypeBigInt), col("key", gocql.TypeVarchar)
	for _, tc := range []struct {
		name string
		cols []gocql.ColumnInfo
		ok   bool
	}{
		{"blob alone", []gocql.ColumnInfo{blob}, true},
		{"blob and writetime", []gocql.ColumnInfo{blob, wt}, true},
		{"no metadata (an error answer)", nil, true},
		{"second column not a bigint", []gocql.ColumnInfo{blob, key}, false},
		{"three columns", []gocql.ColumnInfo{blob, wt, key}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkColumns(tc.cols)
			if (err == nil) != tc.ok || (err != nil && IsTransient(err)) {
				t.Fatalf("checkColumns = %v (transient %v), want ok %v and never transient", err, IsTransient(err), tc.ok)
			}
		})
	}
}
