package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/service"
)

var _ service.Checker = (*Generator)(nil)

// What survives a NATS server restart, and who takes care of it: the bus
// (pkg/bus) declares the streams and both buckets again after a reconnect,
// re-declares the command consumer when the server lost it, restarts the KV
// watches, and its Check — on /healthz beside the generator's — says not
// ready until all that works again. What only the generator knows is its
// own: a reconnect holds judgements of deaths off for a TTL (lead), a key
// its watch reports lost with a re-created bucket is not a departure
// (membership) and a lost plan is written again from the copy every
// instance keeps (plans).

// open opens the buckets through the bus, which knows their configuration
// (bus.BucketConfig) and keeps them from then on.
func (g *Generator) open(ctx context.Context) error {
	for _, name := range []string{BucketMembers, BucketRuns} {
		kv, err := g.bus.KV(ctx, name)
		if err != nil {
			return err
		}
		switch name {
		case BucketMembers:
			g.members = kv
		case BucketRuns:
			g.runs = kv
		}
	}
	return nil
}

// reconnected reports whether NATS reconnected since the last call (from
// any goroutine); it then holds off judging deaths for a TTL: the others
// may not have heartbeated again yet.
func (g *Generator) reconnected() bool {
	r := g.bus.Conn().Stats().Reconnects
	seen := g.reconnects.Load()
	if r == seen || !g.reconnects.CompareAndSwap(seen, r) {
		return false
	}
	g.logger.Info("nats reconnected; holding off judging deaths", zap.Duration("for", g.cfg.MemberTTL))
	g.view.hold()
	return true
}

// quietLimit is how long the membership watch may deliver nothing while
// this instance's own heartbeats — which it must see — are acknowledged,
// before the generator reports it deaf.
func (g *Generator) quietLimit() time.Duration { return 2*g.cfg.MemberTTL + time.Second }

// Check reports whether the generator can do its work now
// (service.Checker): started, its membership view synced and following
// the bucket, and its heartbeats acknowledged. The connection, streams,
// buckets and the command consumer are the bus's to report (Bus.Check, on
// /healthz beside this one).
func (g *Generator) Check() error {
	var errs []error
	if !g.started.Load() {
		errs = append(errs, errors.New("load generator: not started"))
	}
	if !g.view.isSynced() {
		errs = append(errs, errors.New("load generator: membership view not synced"))
	}
	if !g.view.beatWithin(g.cfg.MemberTTL) {
		err := fmt.Errorf("load generator: no heartbeat acknowledged within %s", g.cfg.MemberTTL)
		if last := g.beatErr.Load(); last != nil {
			err = fmt.Errorf("%w (last error: %s)", err, *last)
		}
		errs = append(errs, err)
	} else if q := g.view.quietFor(); q > g.quietLimit() {
		errs = append(errs, fmt.Errorf("load generator: membership watch delivered nothing for %s although heartbeats are acknowledged",
			q.Round(time.Millisecond)))
	}
	return errors.Join(errs...)
}
