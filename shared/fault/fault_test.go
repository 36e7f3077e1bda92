package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindOf(t *testing.T) {
	base := errors.New("boom")
	for _, tc := range []struct {
		name string
		err  error
		want Kind
	}{
		{"unmarked", base, Transient},
		{"marked", Mark(base, Outage), Outage},
		{"wrapped", fmt.Errorf("key %q: %w", "k", Mark(base, Fatal)), Fatal},
		{"outermost decides", Mark(fmt.Errorf("ctx: %w", Mark(base, Outage)), Permanent), Permanent},
		{"joined: the first marked", errors.Join(base, Mark(base, Permanent)), Permanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.err); got != tc.want {
				t.Errorf("KindOf = %v, want %v", got, tc.want)
			}
		})
	}
	if Mark(nil, Fatal) != nil {
		t.Error("Mark(nil) is not nil")
	}
}
