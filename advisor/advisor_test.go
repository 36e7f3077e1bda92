package advisor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/advisor"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/service"
)

// TestAdvisorCommand: `ferry advisor` alone dead-letters the message a max-deliveries advisory
// names and deletes it from its work queue, and stops cleanly when its context ends.
func TestAdvisorCommand(t *testing.T) {
	url, js, n := bustest.JobAt(t)
	ctx := context.Background()
	if _, err := js.PublishMsg(ctx, bus.KeyMsg(n, "doomed.jpg", bus.KeyID(n.Job, "doomed.jpg"), "test")); err != nil {
		t.Fatal(err)
	}
	adv := fmt.Sprintf(`{"stream":%q,"consumer":%q,"stream_seq":1,"deliveries":10}`, n.Keys, n.Fetcher)
	if _, err := js.Publish(ctx, bus.AdvisoryPrefix+n.Keys+"."+n.Fetcher, []byte(adv)); err != nil {
		t.Fatal(err)
	}
	app := &cli.App{Name: "ferry", Flags: service.GlobalFlags(), Commands: []*cli.Command{advisor.Command()}}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.RunContext(actx, []string{"ferry", "--nats", url, "--job", n.Job, "advisor"}) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := deadletter.Count(ctx, js, n)
		if err == nil && c[bus.StageFetcher+"/"+bus.ReasonMaxDeliveries] == 1 && bustest.Msgs(t, js, n.Keys) == 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no max_deliveries dead letter, or KEYS not emptied, after 15 s: %v %v", c, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ferry advisor: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("ferry advisor did not stop")
	}
}
