package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SpreadLeaders moves the leaders of the job's replicated work streams, and of their consumers,
// so that the partitions of one stage are led by different servers: partition p of the q-th work
// queue (KEYS, BLOBS, UPLOADED) goes to server (p+q) mod the number of servers, in name order.
// The cluster places a stream's leader where it likes, often several on one server, and one
// leader carries all of its stream's bytes; spreading is what makes partitions add up. A consumer
// is led where its stream is: the pulls and acks then stay on one server.
//
// It is best-effort and idempotent: a leader already in place is left alone, and one that will
// not move within a few seconds is reported in the error, not retried for long. R1 streams have no
// followers to hand over to and are skipped. It returns the groups it moved.
func SpreadLeaders(ctx context.Context, js jetstream.JetStream, n Names) (moved []string, err error) {
	type group struct {
		stream, consumer string
		slot             int // the server, by index in name order (mod their number)
		peers            []string
	}
	var groups []group
	var servers []string
	for q, base := range []string{n.Keys, n.Blobs, n.Uploaded} {
		consumer := []string{n.Fetcher, n.Uploader, n.Verifier}[q]
		for p, name := range n.Streams(base) {
			s, err := js.Stream(ctx, name)
			if err != nil {
				return moved, fmt.Errorf("spread leaders: stream %s: %w", name, err)
			}
			c := s.CachedInfo().Cluster
			if c == nil || len(c.Replicas) == 0 {
				continue // R1 (or a single server): nothing to move
			}
			peers := []string{c.Leader}
			for _, r := range c.Replicas {
				peers = append(peers, r.Name)
			}
			for _, peer := range peers {
				if peer != "" && !slices.Contains(servers, peer) {
					servers = append(servers, peer)
				}
			}
			groups = append(groups, group{stream: name, slot: p + q, peers: peers},
				group{stream: name, consumer: consumer, slot: p + q, peers: peers})
		}
	}
	slices.Sort(servers)
	var errs []error
	for _, g := range groups {
		target := servers[g.slot%len(servers)]
		if !slices.Contains(g.peers, target) {
			continue // a larger cluster: this group's peers do not include it
		}
		ok, err := moveLeader(ctx, js, g.stream, g.consumer, target)
		what := g.stream
		if g.consumer != "" {
			what += ">" + g.consumer
		}
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s to %s: %w", what, target, err))
		case ok:
			moved = append(moved, what+" → "+target)
		}
	}
	if len(errs) > 0 {
		return moved, fmt.Errorf("spread leaders: %w", errors.Join(errs...))
	}
	return moved, nil
}

// moveLeader asks the group (a stream, or its consumer) to hand its leadership to server (leader
// stepdown with a preferred placement, nats-server 2.11+) and waits up to 10 seconds for it;
// false when server led it already.
func moveLeader(ctx context.Context, js jetstream.JetStream, stream, consumer, server string) (bool, error) {
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	if consumer != "" {
		subject = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer
	}
	body, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": server}})
	deadline := time.Now().Add(10 * time.Second)
	var asked time.Time
	for {
		leader, err := leaderOf(ctx, js, stream, consumer)
		if err != nil {
			return false, err
		}
		if leader == server {
			return !asked.IsZero(), nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("leader still %s after 10s", leader)
		}
		if time.Since(asked) > 2*time.Second {
			// The answer says little ("already leader" while an election runs); the leader read
			// back is what counts, and a request lost in an election is asked again.
			_, _ = js.Conn().RequestWithContext(ctx, subject, body)
			asked = time.Now()
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func leaderOf(ctx context.Context, js jetstream.JetStream, stream, consumer string) (string, error) {
	if consumer == "" {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return "", err
		}
		if c := s.CachedInfo().Cluster; c != nil {
			return c.Leader, nil
		}
		return "", nil
	}
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return "", err
	}
	if cl := c.CachedInfo().Cluster; cl != nil {
		return cl.Leader, nil
	}
	return "", nil
}
