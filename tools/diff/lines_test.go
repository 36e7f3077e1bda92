package diff

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestReadLinesTrim: ferry diff reads a key list's keys exactly as the producer does, so only ASCII
// space, tab and CR (and a BOM starting the list) are trimmed.
func TestReadLinesTrim(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"NBSP is part of the key", "photo.jpg\nphoto.jpg\u00a0\n", []string{"photo.jpg", "photo.jpg\u00a0"}},
		{"other Unicode spaces and NEL are kept", "a\u2003\n\u3000b\nc\u0085", []string{"a\u2003", "\u3000b", "c\u0085"}},
		{"ASCII space, tab and CR are trimmed, blank lines skipped", " \tk1\t \r\n \r\n\nk2\r\n", []string{"k1", "k2"}},
		{"a BOM only at the start", "\ufeffk1\n\ufeffk2\n", []string{"k1", "\ufeffk2"}},
		{"vertical tab and form feed are kept", "\vk\f\n", []string{"\vk\f"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			err := readLines(context.Background(), strings.NewReader(tt.in), func(k []byte) error {
				got = append(got, string(k))
				return nil
			})
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("readLines = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
