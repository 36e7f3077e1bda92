package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"
)

// listKey is the Redis list the seed design's workers take keys from.
const listKey = "ferry-bench:keys"

// seedDesignCommand is the worker of the system ferry replaces: keys LPUSHed into a Redis list, N
// goroutines BRPOP one, read it, PUT it with 3 retries (1s/2s/4s), and move on. A key that still
// fails is only counted: that design had nowhere durable to put it.
func seedDesignCommand() *cli.Command {
	var cfg workerConfig
	var addr string
	return &cli.Command{
		Name:   "seed-design",
		Usage:  "worker: keys in a Redis list, N goroutines BRPOP → read → PUT with retries (the seed system)",
		Hidden: true,
		Flags: append(cfg.flags(),
			&cli.StringFlag{Name: "redis", Required: true, Destination: &addr, Usage: "redis host:port"}),
		Action: func(c *cli.Context) error { return runSeedDesign(c.Context, cfg, addr) },
	}
}

func runSeedDesign(ctx context.Context, cfg workerConfig, addr string) error {
	keys, err := readKeys(cfg.Keys)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: addr, Protocol: 2, DisableIdentity: true,
		PoolSize: cfg.Concurrency + 4, // every worker blocks in BRPOP on its own connection
	})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("seed-design: redis %s: %w", addr, err)
	}
	m, err := openMigrator(ctx, cfg)
	if err != nil {
		return fmt.Errorf("seed-design: %w", err)
	}
	defer m.close()
	pctx, stopProgress := context.WithCancel(ctx)
	go m.progress(pctx, "seed-design", len(keys))

	// The loader pushes while the workers already pop, as the old system's key loader did.
	var loaded atomic.Bool
	loadErr := make(chan error, 1)
	go func() {
		const batch = 1000
		for i := 0; i < len(keys); i += batch {
			vals := make([]any, 0, batch)
			for _, k := range keys[i:min(i+batch, len(keys))] {
				vals = append(vals, k)
			}
			if err := rdb.LPush(ctx, listKey, vals...).Err(); err != nil {
				loadErr <- fmt.Errorf("seed-design: LPUSH: %w", err)
				return
			}
		}
		loaded.Store(true)
		loadErr <- nil
	}()

	var wg sync.WaitGroup
	var popErrs atomic.Int64
	for range cfg.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				res, err := rdb.BRPop(ctx, time.Second, listKey).Result()
				switch {
				case errors.Is(err, redis.Nil):
					// Timed out on an empty list: done once the loader is and nothing is left.
					if loaded.Load() && rdb.LLen(ctx, listKey).Val() == 0 {
						return
					}
					continue
				case err != nil:
					if ctx.Err() == nil && popErrs.Add(1) > 100 {
						return // redis is gone; the missing keys show in the result
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
				m.migrate(ctx, res[1])
			}
		})
	}
	wg.Wait()
	stopProgress()
	var errs []error
	select {
	case err := <-loadErr:
		errs = append(errs, err)
	default:
		errs = append(errs, errors.New("seed-design: the loader did not finish"))
	}
	if err := writeResult(cfg.Out, m.result()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, ctx.Err())...)
}

// redisServer is a private, persistence-free redis-server the harness starts for one run.
type redisServer struct {
	*child
	addr string
}

// startRedis starts redisBin on a free loopback port with its files in dir, and waits until it
// answers.
func startRedis(ctx context.Context, redisBin, dir string) (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	log, err := os.Create(dir + "/redis.log")
	if err != nil {
		return nil, err
	}
	c, err := startChild(ctx, "redis-server", childEnv(), log, log, redisBin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no")
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("%w (install it: apt-get install -y redis-server)", err)
	}
	c.stdio = append(c.stdio, log)
	r := &redisServer{child: c, addr: "127.0.0.1:" + strconv.Itoa(port)}
	rdb := redis.NewClient(&redis.Options{Addr: r.addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := rdb.Ping(ctx).Err(); err == nil {
			return r, nil
		} else if time.Now().After(deadline) || c.exited() {
			c.stop(5 * time.Second)
			return nil, fmt.Errorf("redis-server on %s did not answer: %w (see %s/redis.log)", r.addr, err, dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
