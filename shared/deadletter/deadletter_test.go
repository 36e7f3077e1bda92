package deadletter

import (
	"context"
	"fmt"
	"testing"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
)

// TestSince: a follower of the DLQ reads each dead letter once across calls, again from the
// start when the DLQ is deleted and made again (its sequences restart), and nothing, without an
// error, while there is no DLQ.
func TestSince(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	publish := func(keys ...string) {
		t.Helper()
		for _, k := range keys {
			if err := bus.PublishDeadLetter(ctx, js, n, bus.DeadLetter{Key: k, Stage: bus.StageFetcher, Reason: bus.ReasonNotFound, Err: "no row", Attempts: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var cur Cursor
	read := func() []string {
		t.Helper()
		var got []string
		if err := Since(ctx, js, n, &cur, func(e Entry) error {
			got = append(got, e.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	check := func(step string, got []string, want ...string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: read %v, want %v", step, got, want)
		}
	}
	check("empty DLQ", read())
	publish("a", "b")
	check("first read", read(), "a", "b")
	check("nothing new", read())
	publish("c")
	check("what is new", read(), "c")

	if err := js.DeleteStream(ctx, n.DLQ); err != nil {
		t.Fatal(err)
	}
	check("no DLQ", read())
	s := bus.DefaultSettings()
	s.MaxDeliver = 3
	if _, err := bus.Setup(ctx, js, n, s, false); err != nil {
		t.Fatal(err)
	}
	publish("d")
	check("DLQ made again", read(), "d")

	// Deleted and made again between two reads, with fewer entries than were read before.
	publish("e", "f")
	check("before", read(), "e", "f")
	if err := js.DeleteStream(ctx, n.DLQ); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Setup(ctx, js, n, s, false); err != nil {
		t.Fatal(err)
	}
	publish("g")
	check("made again under the cursor", read(), "g")
}
