package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/config"
)

func TestPartitionNames(t *testing.T) {
	one, three := For("j"), For("j").WithPartitions(3)
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"one partition keeps the names", fmt.Sprint(one.Streams(one.Keys)), "[FERRY_j_KEYS]"},
		{"one partition keeps the subjects", fmt.Sprint(one.Subjects(one.Blobs)), "[ferry.j.blobs]"},
		{"three streams", fmt.Sprint(three.Streams(three.Uploaded)), "[FERRY_j_UPLOADED_0 FERRY_j_UPLOADED_1 FERRY_j_UPLOADED_2]"},
		{"three subjects", fmt.Sprint(three.Subjects(three.Keys)), "[ferry.j.keys.0 ferry.j.keys.1 ferry.j.keys.2]"},
		{"base of a partition", three.Base("FERRY_j_BLOBS_2"), three.Blobs},
		{"base of a partition out of range", three.Base("FERRY_j_BLOBS_3"), ""},
		{"base of a padded number", three.Base("FERRY_j_BLOBS_01"), ""},
		{"base of the unpartitioned name, partitioned", three.Base("FERRY_j_BLOBS"), ""},
		{"base, one partition", one.Base("FERRY_j_KEYS"), one.Keys},
		{"base of DONE", three.Base(three.Done), ""},
		{"advisories cover every partition", len(three.AdvisorySubjects), 9},
		{"advisory of a partition", three.AdvisorySubjects[1], AdvisoryPrefix + "FERRY_j_KEYS_1.*"},
		{"route, one partition", fmt.Sprintln(one.Route(one.Keys, "abc")), "FERRY_j_KEYS ferry.j.keys\n"},
	} {
		if fmt.Sprint(tc.got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	// A key's partition is the same in every stage, and the ids spread over all partitions.
	seen := map[int]int{}
	for i := range 3000 {
		id := KeyID("j", fmt.Sprintf("img/%d.jpg", i))
		p := three.Partition(id)
		for _, base := range []string{three.Keys, three.Blobs, three.Uploaded} {
			stream, subject := three.Route(base, id)
			if want := fmt.Sprintf("_%d", p); !strings.HasSuffix(stream, want) || !strings.HasSuffix(subject, fmt.Sprintf(".%d", p)) {
				t.Fatalf("id %s: partition %d, route %s %s", id, p, stream, subject)
			}
			if three.Base(stream) != base {
				t.Fatalf("Base(%s) = %q, want %s", stream, three.Base(stream), base)
			}
		}
		seen[p]++
	}
	for p := range 3 {
		if seen[p] < 900 || seen[p] > 1100 {
			t.Errorf("partition %d has %d of 3000 keys: %v", p, seen[p], seen)
		}
	}
}

// TestSetupPartitions: a new job gets --partitions streams (BLOBS's cap each partition's), the
// services' Setup (partitions 0) finds the count, ferry setup with another count is a config
// error, and Delete removes the partitions.
func TestSetupPartitions(t *testing.T) {
	ctx := context.Background()
	js := embeddedJS(t)
	s := DefaultSettings()
	s.Partitions = 3
	n, err := Setup(ctx, js, For("p"), s, true)
	if err != nil {
		t.Fatal(err)
	}
	if n.Partitions != 3 {
		t.Fatalf("Setup returned %d partitions, want 3", n.Partitions)
	}
	for _, base := range []string{n.Keys, n.Blobs, n.Uploaded} {
		if _, err := js.Stream(ctx, base); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream %s beside its partitions: %v", base, err)
		}
		subjects := n.Subjects(base)
		for i, name := range n.Streams(base) {
			st, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			if cfg.Subjects[0] != subjects[i] || cfg.Metadata[MetaPartitions] != "3" {
				t.Errorf("stream %s: subjects %v metadata %v", name, cfg.Subjects, cfg.Metadata)
			}
			if base == n.Blobs && cfg.MaxBytes != s.BlobsMaxBytes {
				t.Errorf("stream %s: cap %d, want each partition's %d", name, cfg.MaxBytes, s.BlobsMaxBytes)
			}
		}
	}
	cons, err := Consumers(ctx, js, n, n.Blobs, n.Uploader)
	if err != nil || len(cons) != 3 {
		t.Fatalf("consumers of BLOBS: %d, %v", len(cons), err)
	}

	// A service: default flags find the job's count.
	if got, err := Setup(ctx, js, For("p"), DefaultSettings(), false); err != nil || got.Partitions != 3 {
		t.Errorf("service Setup: %d partitions, %v; want 3", got.Partitions, err)
	}
	for _, want := range []int{1, 4} {
		s.Partitions = want
		_, err := Setup(ctx, js, For("p"), s, true)
		if !config.IsInvalid(err) || !strings.Contains(fmt.Sprint(err), "has 3 partition(s)") {
			t.Errorf("setup --partitions %d on a job of 3: %v, want a config error naming 3", want, err)
		}
	}
	// A one-partition job refuses partitions too.
	if _, err := Setup(ctx, js, For("one"), DefaultSettings(), true); err != nil {
		t.Fatal(err)
	}
	s.Partitions = 2
	if _, err := Setup(ctx, js, For("one"), s, true); !config.IsInvalid(err) {
		t.Errorf("setup --partitions 2 on a job of 1: %v, want a config error", err)
	}

	if err := Delete(ctx, js, For("p")); err != nil {
		t.Fatal(err)
	}
	for _, name := range n.Streams(n.Keys) {
		if _, err := js.Stream(ctx, name); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream %s after Delete: %v", name, err)
		}
	}
}
