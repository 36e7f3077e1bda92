package bench

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "4096", want: 4096},
		{in: "1", want: 1},
		{in: "16KiB", want: 16 << 10},
		{in: "16kib", want: 16 << 10},
		{in: " 256 KiB ", want: 256 << 10},
		{in: "1MiB", want: 1 << 20},
		{in: "1.5MiB", want: 3 << 19},
		{in: "1GiB", want: 1 << 30},
		{in: "100kB", want: 100_000},
		{in: "2MB", want: 2_000_000},
		{in: "512B", want: 512},
		{in: "0", wantErr: "must be 1 byte"},
		{in: "0.1B", wantErr: "must be 1 byte"},
		{in: "-5", wantErr: "must be 1 byte"},
		{in: "2GiB", wantErr: "must be 1 byte to 1GiB"},
		{in: "9999999999999999GiB", wantErr: "must be 1 byte to 1GiB"},
		{in: "KiB", wantErr: "no number"},
		{in: "", wantErr: "no number"},
		{in: "16KB/s", wantErr: "want a byte count"},
		{in: "ten", wantErr: "want a byte count"},
		{in: "NaN", wantErr: "want a byte count"},
		{in: "1e3", want: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSize(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseSizes(t *testing.T) {
	tests := []struct {
		in      string
		want    []int64
		wantErr string
	}{
		{in: "16KiB,256KiB,1MiB", want: []int64{16 << 10, 256 << 10, 1 << 20}},
		{in: "1MiB, 4096,", want: []int64{1 << 20, 4096}},
		{in: "", wantErr: "at least one size"},
		{in: " , ", wantErr: "at least one size"},
		{in: "4KiB,4096", wantErr: "4KiB is listed twice"},
		{in: "4KiB,x", wantErr: `--sizes: size "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSizes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSizes(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tt.want) {
				t.Fatalf("parseSizes(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("parseSizes(%q) = %v; want %v", tt.in, got, tt.want)
				}
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{1, "1B"}, {1000, "1000B"}, {1024, "1KiB"}, {16 << 10, "16KiB"}, {3 << 19, "1536KiB"},
		{1 << 20, "1MiB"}, {1 << 30, "1GiB"}, {1<<20 + 1, "1048577B"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.in); got != tt.want {
			t.Errorf("formatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := parseSize(tt.want); err != nil || back != tt.in {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}
