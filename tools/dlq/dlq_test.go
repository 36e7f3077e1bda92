package dlq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/service"
)

// publishKey publishes key to KEYS as the producer does: Ferry-Id KeyID, Nats-Msg-Id keys:<id>.
func publishKey(t *testing.T, js jetstream.JetStream, n bus.Names, key string) {
	t.Helper()
	id := bus.KeyID(n.Job, key)
	m := bus.KeyMsg(n, key, id, "keys.txt:1")
	if _, err := js.PublishMsg(context.Background(), m, jetstream.WithMsgID(bus.MsgID("keys", id)), jetstream.WithExpectStream(n.Keys)); err != nil {
		t.Fatal(err)
	}
}

// deadLetter dead-letters key as a stage does, carrying the failed message's Ferry-Id (id; empty:
// none) and returns the entry's DLQ sequence.
func deadLetter(t *testing.T, js jetstream.JetStream, n bus.Names, key, stage, reason, id string) uint64 {
	t.Helper()
	var from nats.Header
	if id != "" {
		from = nats.Header{bus.HdrID: []string{id}}
	}
	if err := bus.PublishDeadLetter(context.Background(), js, n, bus.DeadLetter{Key: key, Stage: stage, Reason: reason,
		Err: "boom", Attempts: 3, From: from}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), n.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// keyMsg is one message of KEYS as stored.
type keyMsg struct{ key, ferryID, msgID, origin string }

// keys reads KEYS back in order.
func keys(t *testing.T, js jetstream.JetStream, n bus.Names) []keyMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, n.Keys)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []keyMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, keyMsg{string(m.Data), m.Header.Get(bus.HdrID), m.Header.Get(jetstream.MsgIDHeader), m.Header.Get(bus.HdrOrigin)})
	}
	return out
}

// flakyDelete is a JetStream whose DLQ stream fails the next DeleteMsg: a replay interrupted
// between storing the key in KEYS and removing the dead letter.
type flakyDelete struct {
	jetstream.JetStream
	fail *bool
}

func (f flakyDelete) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := f.JetStream.Stream(ctx, name)
	return flakyStream{s, f.fail}, err
}

type flakyStream struct {
	jetstream.Stream
	fail *bool
}

func (f flakyStream) DeleteMsg(ctx context.Context, seq uint64) error {
	if *f.fail {
		*f.fail = false
		return errors.New("interrupted")
	}
	return f.Stream.DeleteMsg(ctx, seq)
}

// TestReplayMessageIDs: a replayed dead letter goes back to KEYS under its own Ferry-Id and
// Nats-Msg-Id (KeyID.r<DLQ seq>), so the duplicate window, which still holds the key's first
// publish, does not drop it; replaying the same entry again publishes nothing (it is gone, or,
// when a replay stopped before removing it, the broker dedupes the second publish); a key that
// dies again has a new entry and is replayed again under a new id.
func TestReplayMessageIDs(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	const key = "a/b.bin"
	id := bus.KeyID(n.Job, key)
	publishKey(t, js, n, key)
	seq := deadLetter(t, js, n, key, bus.StageFetcher, bus.ReasonNotFound, id)

	k, err := Replay(ctx, js, n, deadletter.Filter{}, 0, false)
	if err != nil || k != 1 {
		t.Fatalf("replay: %d, %v; want 1", k, err)
	}
	rid := fmt.Sprintf("%s.r%d", id, seq)
	want := []keyMsg{
		{key, id, "keys:" + id, "keys.txt:1"},
		{key, rid, "keys:" + rid, fmt.Sprintf("dlq#%d fetcher/not_found", seq)},
	}
	if got := keys(t, js, n); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("KEYS after the replay:\n got %v\nwant %v", got, want)
	}
	if d := bustest.Msgs(t, js, n.DLQ); d != 0 {
		t.Fatalf("DLQ holds %d after the replay, want 0", d)
	}

	// Replaying again: the entry is gone, nothing is published.
	if k, err := Replay(ctx, js, n, deadletter.Filter{}, 0, false); err != nil || k != 0 {
		t.Fatalf("second replay: %d, %v; want 0", k, err)
	}
	if got := len(keys(t, js, n)); got != 2 {
		t.Fatalf("KEYS holds %d after a second replay, want 2", got)
	}

	// The replayed key dies again: its dead letter carries the replay's Ferry-Id, and is a new entry.
	seq2 := deadLetter(t, js, n, key, bus.StageVerifier, bus.ReasonVerifyMissing, rid)
	if seq2 == seq {
		t.Fatal("the second dead letter was deduped")
	}
	// A replay interrupted after the publish, before the removal, and run again: one copy in KEYS.
	fail := true
	if k, err := Replay(ctx, flakyDelete{js, &fail}, n, deadletter.Filter{}, 0, false); err == nil || k != 0 {
		t.Fatalf("interrupted replay: %d, %v; want 0 and an error", k, err)
	}
	if d := bustest.Msgs(t, js, n.DLQ); d != 1 {
		t.Fatalf("DLQ holds %d after an interrupted replay, want 1", d)
	}
	if k, err := Replay(ctx, js, n, deadletter.Filter{}, 0, false); err != nil || k != 1 {
		t.Fatalf("replay after the interruption: %d, %v; want 1", k, err)
	}
	rid2 := fmt.Sprintf("%s.r%d", id, seq2)
	want = append(want, keyMsg{key, rid2, "keys:" + rid2, fmt.Sprintf("dlq#%d verifier/verify_missing", seq2)})
	if got := keys(t, js, n); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("KEYS after the replays:\n got %v\nwant %v", got, want)
	}
	if d := bustest.Msgs(t, js, n.DLQ); d != 0 {
		t.Fatalf("DLQ holds %d at the end, want 0", d)
	}
}

// TestReplaySelects: the filter, the limit and --dry-run decide what is replayed; what is not stays
// in the DLQ.
func TestReplaySelects(t *testing.T) {
	letters := []struct{ key, stage, reason string }{
		{"k1", bus.StageFetcher, bus.ReasonNotFound},
		{"k2", bus.StageFetcher, bus.ReasonSourceError},
		{"k3", bus.StageUploader, bus.ReasonUploadError},
		{"k4", bus.StageFetcher, bus.ReasonNotFound},
	}
	for _, tc := range []struct {
		name     string
		f        deadletter.Filter
		limit    int
		dryRun   bool
		replayed []string // keys in KEYS afterwards, in order
		left     uint64   // entries left in the DLQ
	}{
		{name: "all", replayed: []string{"k1", "k2", "k3", "k4"}},
		{name: "stage", f: deadletter.Filter{Stages: []string{bus.StageUploader}}, replayed: []string{"k3"}, left: 3},
		{name: "reason", f: deadletter.Filter{Reasons: []string{bus.ReasonNotFound}}, replayed: []string{"k1", "k4"}, left: 2},
		{name: "stage and reason", f: deadletter.Filter{Stages: []string{bus.StageFetcher}, Reasons: []string{bus.ReasonSourceError, bus.ReasonUploadError}},
			replayed: []string{"k2"}, left: 3},
		{name: "limit", limit: 2, replayed: []string{"k1", "k2"}, left: 2},
		{name: "dry run", dryRun: true, left: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			for _, d := range letters {
				deadLetter(t, js, n, d.key, d.stage, d.reason, "")
			}
			k, err := Replay(context.Background(), js, n, tc.f, tc.limit, tc.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			wantK := len(tc.replayed)
			if tc.dryRun {
				wantK = len(letters)
			}
			if k != wantK {
				t.Errorf("replay counted %d, want %d", k, wantK)
			}
			var got []string
			for _, m := range keys(t, js, n) {
				got = append(got, m.key)
			}
			if strings.Join(got, ",") != strings.Join(tc.replayed, ",") {
				t.Errorf("KEYS holds %v, want %v", got, tc.replayed)
			}
			if d := bustest.Msgs(t, js, n.DLQ); d != tc.left {
				t.Errorf("DLQ holds %d, want %d", d, tc.left)
			}
		})
	}
}

// run runs `ferry dlq args...` against the job "t" at url, returning stdout and stderr.
func run(t *testing.T, url string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{Name: "ferry", Flags: service.GlobalFlags(), Commands: []*cli.Command{Command()},
		Writer: &out, ErrWriter: &errOut, ExitErrHandler: func(*cli.Context, error) {}}
	err := app.Run(append([]string{"ferry", "--nats", url, "--job", "t", "--log-level", "error", "dlq"}, args...))
	return out.String(), errOut.String(), err
}

// TestCommand: ls counts by stage and reason, export writes the selected entries' lines, replay
// reports what it did, and unknown stages or reasons are usage errors.
func TestCommand(t *testing.T) {
	url, js, n := bustest.JobAt(t)
	deadLetter(t, js, n, "k1", bus.StageFetcher, bus.ReasonNotFound, "")
	deadLetter(t, js, n, "k2", bus.StageUploader, bus.ReasonUploadError, "")
	file := filepath.Join(t.TempDir(), "dead.tsv")

	for _, tc := range []struct {
		args    []string
		out     []string // lines of stdout, each a substring match (runs of blanks as one)
		invalid bool
	}{
		{args: []string{"ls"}, out: []string{"STAGE REASON KEYS", "fetcher not_found 1", "uploader upload_error 1", "total 2"}},
		{args: []string{"export"}, out: []string{"k1\tfetcher\tnot_found\t3\tboom", "k2\tuploader\tupload_error\t3\tboom"}},
		{args: []string{"export", "--stage", "uploader", "--out", file}},
		{args: []string{"replay", "--dry-run"}, out: []string{"would replay 2 dead letters"}},
		{args: []string{"export", "--stage", "bogus"}, invalid: true},
		{args: []string{"replay", "--reason", "bogus"}, invalid: true},
		{args: []string{"replay", "--reason", "not_found"}, out: []string{"replayed 1 dead letters"}},
		{args: []string{"ls"}, out: []string{"STAGE REASON KEYS", "uploader upload_error 1", "total 1"}},
	} {
		out, _, err := run(t, url, tc.args...)
		if tc.invalid {
			if !config.IsInvalid(err) {
				t.Errorf("%v: %v, want a usage error", tc.args, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(tc.out) > 0 && len(lines) != len(tc.out) {
			t.Errorf("%v printed %d lines, want %d:\n%s", tc.args, len(lines), len(tc.out), out)
			continue
		}
		for i, w := range tc.out {
			if !strings.Contains(strings.Join(strings.Fields(lines[i]), " "), strings.Join(strings.Fields(w), " ")) {
				t.Errorf("%v line %d: %q, want it to hold %q", tc.args, i+1, lines[i], w)
			}
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != "k2\tuploader\tupload_error\t3\tboom\n" {
		t.Errorf("export --out: %q", got)
	}
}
