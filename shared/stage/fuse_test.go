package stage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestFuse: the fused handler returns the last output when every stage succeeds, and the output
// before a failing stage otherwise (that stage's own service then takes it from its stream); the
// first stage's error is its own. The Stored hooks of every output consumed run, once, in order.
func TestFuse(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		fail      int // which stage fails (0: none; 1 is the first)
		wantOut   string
		wantErr   bool
		wantHooks []string
		wantFell  string
	}{
		{"all succeed", 0, "c", false, []string{"a", "b", "c"}, ""},
		{"the second fails: the first's output", 2, "a", false, []string{"a"}, "b"},
		{"the third fails: the second's output", 3, "b", false, []string{"a", "b"}, "c"},
		{"the first fails: its error", 1, "", true, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hooks, seen []string
			stageN := func(n int, name string) *stage.Service {
				return &stage.Service{Options: stage.Options{Stage: name}, Handler: func(_ context.Context, in stage.Msg) (*stage.Output, error) {
					seen = append(seen, in.Subject+"|"+in.Record.Key)
					if tc.fail == n {
						return nil, stage.Permanent("x", boom)
					}
					return &stage.Output{Subject: name, Stream: "S" + name, ID: name, Body: []byte(name),
						Record: bus.Record{ID: "id", Key: " k ", S3Key: "p/ k ", Size: 1, MD5: make([]byte, 16)},
						Stored: func(context.Context) { hooks = append(hooks, name) }}, nil
				}}
			}
			fell := ""
			h := stage.Fuse(func(st string, err error) {
				fell = st
				if !errors.Is(err, boom) {
					t.Errorf("fell back with %v", err)
				}
			}, stageN(1, "a"), stageN(2, "b"), stageN(3, "c"))
			out, err := h(context.Background(), stage.Msg{Subject: "keys", Body: []byte(" k ")})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if err != nil {
				return
			}
			if out.Subject != tc.wantOut || string(out.Body) != tc.wantOut {
				t.Errorf("output %s %q, want %s", out.Subject, out.Body, tc.wantOut)
			}
			if len(hooks) != 0 {
				t.Errorf("hooks ran before the output was stored: %v", hooks)
			}
			if out.Stored != nil {
				out.Stored(context.Background())
			}
			if !slices.Equal(hooks, tc.wantHooks) {
				t.Errorf("hooks %v, want %v", hooks, tc.wantHooks)
			}
			if fell != tc.wantFell {
				t.Errorf("fell back at %q, want %q", fell, tc.wantFell)
			}
			// Each later stage got the output before it as its stream would deliver it.
			for i, s := range seen[1:] {
				if want := []string{"a| k ", "b| k "}[i]; s != want {
					t.Errorf("stage %d saw %q, want %q", i+2, s, want)
				}
			}
		})
	}
}

// TestFuseServedByFirst: the fused handler replaces the first service's own (its runner serves
// it) and still calls the handlers the services had when fused.
func TestFuseServedByFirst(t *testing.T) {
	calls := 0
	mk := func(name string) *stage.Service {
		return &stage.Service{Options: stage.Options{Stage: name}, Handler: func(context.Context, stage.Msg) (*stage.Output, error) {
			calls++
			return &stage.Output{Subject: name, Record: bus.Record{Key: "k", Size: 1}}, nil
		}}
	}
	f := mk("a")
	f.Handler = stage.Fuse(nil, f, mk("b"))
	out, err := f.Handler(context.Background(), stage.Msg{Body: []byte("k")})
	if err != nil || out.Subject != "b" || calls != 2 {
		t.Fatalf("output %+v, err %v, %d calls; want b's after 2", out, err, calls)
	}
}
