package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
)

// keyPinned prefixes the node locks of pinned sources.
const keyPinned = "pinned."

// errLockLost means another instance on this node holds the pinned
// source's lock now.
var errLockLost = errors.New("node lock held by another instance")

// errLeaseExpired means this instance has not renewed the lock for longer
// than its lease (it was paused, or starved of CPU): another instance may
// hold it and read the meter already, so a reading now must not be stored.
var errLeaseExpired = errors.New("node lock not renewed within its lease")

// nodeLock lets one collector instance per node read a pinned source. A
// pinned source reads this machine's own meter (RAPL, the utilisation
// model), so two instances on one machine reading it would store every
// stretch of the node's energy twice — and the analyzer would add both.
// The instance holding the lock reads; another one on the node stands by
// and takes the lock over once it is LeaseTTL past its last renewal (the
// holder died) or released (it stopped).
//
// The lock is a KV entry {instance, token, expires} written with revision
// checks, so of two instances racing for it one wins. Expiry is the
// holder's clock: both sides are on one machine. A holder whose renewal
// fails for want of NATS keeps reading (nobody else can take the lock
// meanwhile); one that finds the entry changed under it stops at once.
type nodeLock struct {
	kv          jetstream.KeyValue
	key         string
	self, token string
	c           *Collector
	rev         uint64
	// okMs is when the last acquire or renewal that succeeded was sent
	// (unix ms).
	okMs atomic.Int64
	// prevRenewedMs is when the instance that held the lock before an
	// acquire last renewed it (unix ms; 0 when none): about its last
	// reading, where the hole before a take-over begins.
	prevRenewedMs int64
}

type lockValue struct {
	Instance  string `json:"instance"`
	Token     string `json:"token"`
	ExpiresMs int64  `json:"expires_ms"`
}

func newNodeLock(c *Collector, kv jetstream.KeyValue, sc SourceConfig, token string) *nodeLock {
	return &nodeLock{kv: kv, key: keyPinned + kvKey(sc.Node) + "." + kvKey(sc.ID), self: c.cfg.Instance, token: token, c: c}
}

func (l *nodeLock) value(ttl time.Duration) []byte {
	b, _ := json.Marshal(lockValue{Instance: l.self, Token: l.token, ExpiresMs: l.c.clock.Now().Add(ttl).UnixMilli()})
	return b
}

// acquire takes the lock if it is free, expired or this instance's (a
// restart of it). prev is the instance that held it before ("" when
// none); holder, when not acquired, is the instance holding it.
func (l *nodeLock) acquire(ctx context.Context) (ok bool, prev, holder string, err error) {
	ctx, cancel := context.WithTimeout(ctx, l.c.cfg.LeaseTTL)
	defer cancel()
	sent := l.c.clock.Now().UnixMilli()
	defer func() {
		if ok {
			l.okMs.Store(sent)
		}
	}()
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err := l.kv.Create(ctx, l.key, l.value(l.c.cfg.LeaseTTL))
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return false, "", "", nil // another instance was quicker
			}
			return false, "", "", fmt.Errorf("create node lock %s: %w", l.key, err)
		}
		l.rev = rev
		return true, "", "", nil
	}
	if err != nil {
		return false, "", "", fmt.Errorf("read node lock %s: %w", l.key, err)
	}
	var cur lockValue
	if json.Unmarshal(e.Value(), &cur) == nil && cur.Instance != l.self && l.c.clock.Now().UnixMilli() < cur.ExpiresMs {
		return false, "", cur.Instance, nil
	}
	rev, err := l.kv.Update(ctx, l.key, l.value(l.c.cfg.LeaseTTL), e.Revision())
	if err != nil {
		if isRevisionConflict(err) {
			return false, "", "", nil
		}
		return false, "", "", fmt.Errorf("take node lock %s: %w", l.key, err)
	}
	l.rev = rev
	l.prevRenewedMs = 0
	if cur.ExpiresMs > 0 {
		l.prevRenewedMs = cur.ExpiresMs - l.c.cfg.LeaseTTL.Milliseconds()
	}
	return true, cur.Instance, "", nil
}

// renew extends the lock; errLockLost when another instance took it.
func (l *nodeLock) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.c.cfg.LeaseTTL)
	defer cancel()
	sent := l.c.clock.Now().UnixMilli()
	rev, err := l.kv.Update(ctx, l.key, l.value(l.c.cfg.LeaseTTL), l.rev)
	if err == nil {
		l.rev = rev
		l.okMs.Store(sent)
		return nil
	}
	if !isRevisionConflict(err) {
		return err // NATS unreachable: keep reading (valid says when that is safe)
	}
	// The entry changed: taken by another instance, or lost with a NATS
	// server that restarted empty (then it is created again).
	e, gerr := l.kv.Get(ctx, l.key)
	switch {
	case errors.Is(gerr, jetstream.ErrKeyNotFound):
		rev, cerr := l.kv.Create(ctx, l.key, l.value(l.c.cfg.LeaseTTL))
		if cerr != nil {
			if errors.Is(cerr, jetstream.ErrKeyExists) {
				return errLockLost
			}
			return cerr
		}
		l.rev = rev
		l.okMs.Store(sent)
		return nil
	case gerr != nil:
		return gerr
	}
	var cur lockValue
	if json.Unmarshal(e.Value(), &cur) == nil && cur.Instance == l.self && cur.Token == l.token {
		l.rev = e.Revision()
		if time.UnixMilli(cur.ExpiresMs).After(l.c.clock.Now()) {
			l.okMs.Store(sent) // still ours and unexpired: as good as renewed
		}
		return nil
	}
	return errLockLost
}

// valid is checked before a reading is stored: errLeaseExpired when the
// lock went unrenewed past its lease while connected to NATS — a paused
// process resuming must not store the reading that spans its pause, which
// the instance that took over has measured meanwhile (a renewal the pause
// made time out is no outage: the connection is still up). Disconnected
// from NATS, it keeps reading: no instance can take the lock then, and the
// machine's meter goes on being measured through the outage.
func (l *nodeLock) valid() error {
	if !l.c.bus.Conn().IsConnected() {
		return nil
	}
	if l.c.clock.Now().UnixMilli()-l.okMs.Load() > l.c.cfg.LeaseTTL.Milliseconds() {
		return errLeaseExpired
	}
	return nil
}

// release lets a standby instance take the lock at once: the entry stays
// this instance's but expired, so a restart of this instance continues
// from its checkpoint while another instance starts afresh.
func (l *nodeLock) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.cfg.LeaseTTL)
	defer cancel()
	_, _ = l.kv.Update(ctx, l.key, l.value(-time.Millisecond), l.rev)
}

func isRevisionConflict(err error) bool {
	return bus.IsRevisionConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound)
}

// runPinned reads the pinned source sc while this instance holds its
// node lock, and stands by while another instance on the node does.
func (c *Collector) runPinned(ctx context.Context, sc SourceConfig, token string) error {
	lock := newNodeLock(c, c.kv, sc, token)
	t := c.clock.NewTicker(c.cfg.Heartbeat)
	defer t.Stop()
	standingBy, warned, carried := "", false, false
	var last *runner // the runner whose lease lapsed, continued if this instance takes the lock again
	defer c.m.standby.WithLabelValues(sc.ID).Set(0)
	for {
		ok, prev, holder, err := lock.acquire(ctx)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			if !warned {
				c.logger.Warn("cannot take this node's meter lock; trying again", zap.String("source", sc.ID), zap.Error(err))
				warned = true
			}
		case ok:
			warned, standingBy = false, ""
			c.m.standby.WithLabelValues(sc.ID).Set(0)
			// Only this instance's own checkpoint continues exactly; after
			// another instance read the meter, start from a new baseline
			// (the hand-over is a gap, bridged and flagged by the analyzer).
			fresh := prev != "" && prev != c.cfg.Instance
			if fresh {
				c.logger.Info("took this node's meter over", zap.String("source", sc.ID), zap.String("from", prev))
			}
			var prev *runner
			if !fresh {
				prev = last
			}
			r, err := c.readPinned(ctx, sc, lock, fresh, prev)
			last = nil
			if ctx.Err() != nil {
				return err
			}
			switch {
			case errors.Is(err, errLeaseExpired):
				last = r // taken again by this instance: it continues r
				c.logger.Warn("the meter's lock went unrenewed past its lease (paused or starved?); its last reading is dropped and the lock taken again if free",
					zap.String("source", sc.ID))
			case errors.Is(err, errLockLost):
				c.logger.Warn("another instance on this node reads the meter now; standing by", zap.String("source", sc.ID))
			default:
				return err
			}
		case !carried || holder != standingBy:
			if !carried {
				// Killed while it read the meter and back as a standby: the
				// rows its last commit carried (not yet durable then) are
				// its own readings; store them now, not only if it reads
				// again.
				c.writeCarriedRows(sc)
				carried = true
			}
			if holder == standingBy {
				break
			}
			standingBy = holder
			c.logger.Info("standing by: another instance on this node reads its meter", zap.String("source", sc.ID), zap.String("holder", holder))
		}
		c.m.standby.WithLabelValues(sc.ID).Set(boolGauge(standingBy != ""))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// readPinned runs the source's runner while renewing the lock, and returns
// it (nil if it could not start) with the error that ended it.
func (c *Collector) readPinned(ctx context.Context, sc SourceConfig, lock *nodeLock, fresh bool, prev *runner) (*runner, error) {
	r, err := c.pinnedRunner(sc, fresh, prev)
	if err != nil {
		return nil, err
	}
	if fresh && lock.prevRenewedMs > 0 {
		r.hole(lock.prevRenewedMs, "meter taken over from another instance on this node; the stretch since its last lock renewal is not measured")
	}
	r.guard = lock.valid
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		service.Every(rctx, c.clock, c.cfg.Heartbeat, nil, func() {
			if err := lock.renew(rctx); errors.Is(err, errLockLost) {
				cancel(errLockLost) // ends the loop
			} else if err != nil && rctx.Err() == nil {
				c.logger.Debug("node lock renewal failed; still reading", zap.String("source", sc.ID), zap.Error(err))
			}
		})
	}()
	err = r.run(rctx)
	lost := errors.Is(context.Cause(rctx), errLockLost)
	cancel(nil)
	<-renewed
	if lost {
		return r, errLockLost
	}
	lock.release(ctx)
	return r, err
}

// writeCarriedRows stores the rows the pinned source's last file commit
// carries (harmless if they were stored already: samples de-duplicate by
// key).
func (c *Collector) writeCarriedRows(sc SourceConfig) {
	if c.cfg.SpoolDir == "" {
		return
	}
	_, h, err := openFileCommit(c.cfg.SpoolDir, sc.ID)
	if err != nil || len(h.rows) == 0 {
		return
	}
	rows, err := decodeRows(h.rows)
	if err != nil || len(rows) == 0 {
		return
	}
	c.writer.AddSamples(rows)
	c.logger.Info("rows of this instance's last reading of the meter written", zap.String("source", sc.ID), zap.Int("rows", len(rows)))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
