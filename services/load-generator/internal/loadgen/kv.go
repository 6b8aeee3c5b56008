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

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
)

var _ service.Checker = (*Generator)(nil)

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

// superviseInterval is how often the supervisor checks the buckets and the
// consumer.
const superviseInterval = 500 * time.Millisecond

// supervise keeps what the generator needs usable across NATS server
// restarts — with the same store or an empty one: after a reconnect it
// re-opens the KV watches at once (nats.go's ordered consumers would only
// notice after missed idle heartbeats, ~10 s), recreates a bucket that is
// gone, restarts the command consumer when it is gone (re-declaring the
// streams), and re-opens the watches when the membership watch has gone
// quiet although heartbeats succeed. What it finds wrong shows in Check.
func (g *Generator) supervise(ctx context.Context) {
	t := g.clock.NewTicker(superviseInterval)
	defer t.Stop()
	nc := g.bus.Conn()
	js := g.bus.JetStream()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		if !nc.IsConnected() {
			g.health.fail("nats", fmt.Errorf("connection %s", nc.Status()))
			continue
		}
		g.health.ok("nats")
		restart := g.reconnected()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		for _, c := range g.bucketConfigs() {
			what := "bucket " + c.Bucket
			_, err := js.KeyValue(pctx, c.Bucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				var kv jetstream.KeyValue
				if kv, err = g.ensureBucket(pctx, c); err == nil {
					g.setBucket(c.Bucket, kv)
					restart = true
					g.logger.Warn("kv bucket was gone; recreated", zap.String("bucket", c.Bucket))
				}
			}
			if err != nil {
				g.health.fail(what, err)
				continue
			}
			g.health.ok(what)
		}
		durable := bus.ConsumerLoadGenerator.Durable
		_, err := js.Consumer(pctx, bus.StreamLifecycle, durable)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound):
			g.health.fail("consumer "+durable, err)
			g.logger.Warn("command consumer is gone; declaring it again", zap.Error(err))
			g.restartConsume()
		case err != nil:
			g.health.fail("consumer "+durable, err)
		default:
			g.health.ok("consumer " + durable)
		}
		if !restart && g.view.quietFor() > 2*g.cfg.MemberTTL+time.Second && g.view.beatWithin(g.cfg.MemberTTL) {
			restart = true
			g.logger.Warn("membership watch went quiet; re-opening watches")
		}
		if restart {
			g.view.hold()
			g.restartWatches()
		}
	}
}

// reconnected reports whether NATS reconnected since the last call (from
// any goroutine); it then holds off judging deaths for a TTL — the others
// may not have heartbeated again yet — and re-opens the watches.
func (g *Generator) reconnected() bool {
	r := g.bus.Conn().Stats().Reconnects
	seen := g.reconnects.Load()
	if r == seen || !g.reconnects.CompareAndSwap(seen, r) {
		return false
	}
	g.logger.Info("nats reconnected; re-opening watches")
	g.view.hold()
	g.restartWatches()
	return true
}

// consume runs the command consumer until ctx ends. When the supervisor
// finds the consumer gone, it is declared again — with the streams, which an
// empty NATS store no longer has. A consumer that cannot start the first
// time fails the component.
func (g *Generator) consume(ctx context.Context, opts ...bus.ConsumeOption) error {
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithCancel(ctx)
		g.kvMu.Lock()
		g.consumeCancel = cancel
		g.kvMu.Unlock()
		if attempt > 0 {
			// bus.New declares the streams (on the existing connection).
			if _, err := bus.New(cctx, g.bus.Conn(), g.cfg.Instance, g.logger, nil); err != nil {
				g.logger.Warn("declare streams failed", zap.Error(err))
			}
		}
		err := g.bus.Consume(cctx, bus.ConsumerLoadGenerator, g.handle, opts...)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && attempt == 0:
			return err
		case err != nil:
			g.health.fail("consumer "+bus.ConsumerLoadGenerator.Durable, err)
			g.logger.Warn("command consumer failed; retrying", zap.Error(err))
			sleep(ctx, time.Second)
		}
	}
}

// restartConsume makes consume declare the consumer again.
func (g *Generator) restartConsume() {
	g.kvMu.Lock()
	defer g.kvMu.Unlock()
	if g.consumeCancel != nil {
		g.consumeCancel()
	}
}

// Check reports whether the generator can do its work now (service.Checker):
// NATS connected, its membership view synced and heartbeating, its buckets,
// watches and command consumer usable. /healthz reports not ready with the
// reason while it fails.
func (g *Generator) Check() error {
	var errs []error
	if !g.started.Load() {
		errs = append(errs, errors.New("load generator: not started"))
	}
	if nc := g.bus.Conn(); !nc.IsConnected() {
		errs = append(errs, fmt.Errorf("load generator: nats connection %s", nc.Status()))
	}
	if !g.view.isSynced() {
		errs = append(errs, errors.New("load generator: membership view not synced"))
	}
	if !g.view.beatWithin(g.cfg.MemberTTL) {
		errs = append(errs, fmt.Errorf("load generator: no heartbeat acknowledged within %s", g.cfg.MemberTTL))
	}
	if err := g.health.err(); err != nil {
		errs = append(errs, fmt.Errorf("load generator: %w", err))
	}
	return errors.Join(errs...)
}
