package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// bucketConfigs are the KV buckets the generator needs, both in file storage:
// a NATS server restart must keep the plans and checkpoints, and a
// membership bucket that vanished with a restart left every later load
// dead-lettered.
func (g *Generator) bucketConfigs() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: BucketMembers, TTL: membersTTL, History: 1, Storage: jetstream.FileStorage,
			Description: "Live load-generator instances (heartbeats; liveness is judged by their age)"},
		{Bucket: BucketRuns, TTL: runsTTL, History: 1, Storage: jetstream.FileStorage,
			Description: "Load plans (key ranges per instance) and per-instance checkpoints"},
	}
}

// open creates (or updates) the buckets.
func (g *Generator) open(ctx context.Context) error {
	for _, c := range g.bucketConfigs() {
		kv, err := g.ensureBucket(ctx, c)
		if err != nil {
			return err
		}
		g.setBucket(c.Bucket, kv)
	}
	return nil
}

// ensureBucket creates or updates bucket c. A membership bucket left in
// memory storage by an older version cannot be updated to file storage; it
// holds only heartbeats, so it is replaced.
func (g *Generator) ensureBucket(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	js := g.bus.JetStream()
	kv, err := js.CreateOrUpdateKeyValue(ctx, c)
	if err == nil {
		return kv, nil
	}
	if c.Bucket == BucketMembers {
		if st, serr := js.Stream(ctx, "KV_"+c.Bucket); serr == nil && st.CachedInfo().Config.Storage != c.Storage {
			g.logger.Warn("replacing the membership bucket to move it to file storage", zap.String("bucket", c.Bucket))
			if derr := js.DeleteKeyValue(ctx, c.Bucket); derr != nil && !errors.Is(derr, jetstream.ErrBucketNotFound) {
				return nil, fmt.Errorf("replace kv bucket %s: %w", c.Bucket, derr)
			}
			if kv, err = js.CreateOrUpdateKeyValue(ctx, c); err == nil {
				return kv, nil
			}
		}
	}
	return nil, fmt.Errorf("open kv bucket %s: %w", c.Bucket, err)
}

func (g *Generator) setBucket(name string, kv jetstream.KeyValue) {
	g.kvMu.Lock()
	defer g.kvMu.Unlock()
	switch name {
	case BucketMembers:
		g.members = kv
	case BucketRuns:
		g.runs = kv
	}
}

func (g *Generator) kvMembers() jetstream.KeyValue {
	g.kvMu.Lock()
	defer g.kvMu.Unlock()
	return g.members
}

func (g *Generator) kvRuns() jetstream.KeyValue {
	g.kvMu.Lock()
	defer g.kvMu.Unlock()
	return g.runs
}

// watchLoop keeps a KV watch open: it opens it, hands every update to
// apply, and opens it again when it ends — the subscription closed, or
// restartWatches cancelled it (a bucket was recreated). onStart, when set,
// runs before each (re)open.
func (g *Generator) watchLoop(ctx context.Context, name string, open func(context.Context) (jetstream.KeyWatcher, error),
	apply func(context.Context, jetstream.KeyValueEntry), onStart func()) {
	var lastWarn time.Time
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		g.kvMu.Lock()
		g.watchCancel[name] = cancel
		g.kvMu.Unlock()
		if onStart != nil {
			onStart()
		}
		w, err := open(wctx)
		if err != nil {
			cancel()
			g.health.fail("watch "+name, err)
			if now := time.Now(); now.Sub(lastWarn) >= 5*time.Second && ctx.Err() == nil {
				lastWarn = now
				g.logger.Warn("kv watch failed; retrying", zap.String("watch", name), zap.Error(err))
			}
			sleep(ctx, 250*time.Millisecond)
			continue
		}
		g.health.ok("watch " + name)
		for e := range w.Updates() {
			apply(wctx, e)
		}
		_ = w.Stop()
		cancel()
		sleep(ctx, 50*time.Millisecond)
	}
}

// restartWatches makes every watch loop open its watch again.
func (g *Generator) restartWatches() {
	g.kvMu.Lock()
	defer g.kvMu.Unlock()
	for _, cancel := range g.watchCancel {
		cancel()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// health collects what keeps the generator from working right now, by
// what failed ("heartbeat", "watch plans", ...).
type health struct {
	mu       sync.Mutex
	problems map[string]string
}

func newHealth() *health { return &health{problems: map[string]string{}} }

func (h *health) fail(what string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problems[what] = err.Error()
}

func (h *health) ok(what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.problems, what)
}

func (h *health) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.problems) == 0 {
		return nil
	}
	var out []string
	for what, msg := range h.problems {
		out = append(out, what+": "+msg)
	}
	slices.Sort(out)
	return errors.New(strings.Join(out, "; "))
}
