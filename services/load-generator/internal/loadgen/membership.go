package loadgen

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
)

// membership is this instance's view of the live load-generator instances.
//
// Every instance puts its key in BucketMembers every Heartbeat; every
// instance watches the bucket. An instance is alive while its latest entry
// is at most MemberTTL older than the newest entry seen — both timestamps
// set by the KV server, so clocks of other machines do not matter, and a
// watcher that falls behind (a stalled process, a NATS outage) stops the
// clock rather than declaring everybody dead. This instance itself is alive
// while its last heartbeat was acknowledged within MemberTTL.
//
// Deaths are only acted on (ranges taken over) once the view is stable: it
// has been continuous for MemberTTL since the watch started, NATS
// reconnected or the bucket came back empty, so that instances that have
// not heartbeated again yet after an outage are not taken for dead.
type membership struct {
	self   string
	ttl    time.Duration
	clock  clock.PassiveClock
	logger *zap.Logger

	mu        sync.Mutex
	created   map[string]time.Time // instance → server time of its latest heartbeat
	serverNow time.Time            // newest server time seen
	lastBeat  time.Time            // local send time of this instance's last acknowledged heartbeat
	since     time.Time            // local time since which the view is continuous
	updated   time.Time            // local time of the last update of the watch
	synced    bool                 // the watch delivered the bucket's current entries
}

func newMembership(self string, ttl time.Duration, clk clock.PassiveClock, logger *zap.Logger) *membership {
	return &membership{self: self, ttl: ttl, clock: clk, logger: logger, created: map[string]time.Time{}}
}

// memberValue is what an instance puts in its heartbeat.
type memberValue struct {
	Instance string `json:"instance"`
	TsMs     int64  `json:"ts_ms"` // sender's clock; informational only
}

// start marks the view as starting: its watch is opened.
func (m *membership) start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.since = m.clock.Now()
	m.synced = false
}

// hold restarts the stability period (NATS reconnected: the others may not
// have heartbeated again yet).
func (m *membership) hold() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.since = m.clock.Now()
}

// apply records one update of the watch; nil marks the initial values done.
func (m *membership) apply(e jetstream.KeyValueEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.updated = m.clock.Now()
	if e == nil {
		m.synced = true
		return
	}
	if e.Created().After(m.serverNow) {
		m.serverNow = e.Created()
	}
	if e.Operation() != jetstream.KeyValuePut {
		if bus.KeyLost(e) {
			// Lost with a bucket NATS re-created empty, not a departure:
			// the entry's age decides, as for a crash, so an instance that
			// heartbeats again in time stays. Nobody could heartbeat
			// before the bucket was back, which can be more than a TTL
			// after the reconnect's hold began: hold judgements off for a
			// TTL from now (TestALostMembershipBucketHoldsJudgementsOff).
			m.since = m.clock.Now()
			return
		}
		delete(m.created, e.Key()) // a clean shutdown: gone at once
		return
	}
	m.created[e.Key()] = e.Created()
}

// beat records an acknowledged heartbeat sent at local time sent.
func (m *membership) beat(sent time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastBeat = sent
}

// view returns the live instances and whether deaths may be acted on.
func (m *membership) view() (alive map[string]bool, stable bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	alive = map[string]bool{}
	for i, c := range m.created {
		if i != m.self && m.serverNow.Sub(c) <= m.ttl {
			alive[i] = true
		}
	}
	selfAlive := !m.lastBeat.IsZero() && now.Sub(m.lastBeat) < m.ttl
	if selfAlive {
		alive[m.self] = true
	}
	stable = m.synced && selfAlive && !m.since.IsZero() && now.Sub(m.since) >= m.ttl
	return alive, stable
}

// quietFor is how long the watch has delivered nothing.
func (m *membership) quietFor() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.updated.IsZero() {
		return 0
	}
	return m.clock.Now().Sub(m.updated)
}

// beatWithin reports whether this instance's last heartbeat was
// acknowledged within d.
func (m *membership) beatWithin(d time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.lastBeat.IsZero() && m.clock.Now().Sub(m.lastBeat) < d
}

// isSynced reports whether the view holds the bucket's current entries.
func (m *membership) isSynced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced
}

// heartbeat puts this instance's membership entry.
func (g *Generator) heartbeat(ctx context.Context) error {
	sent := g.clock.Now()
	b, _ := json.Marshal(memberValue{Instance: g.cfg.Instance, TsMs: sent.UnixMilli()})
	hctx, cancel := context.WithTimeout(ctx, g.cfg.MemberTTL)
	defer cancel()
	if _, err := g.members.Put(hctx, g.cfg.Instance, b); err != nil {
		return err
	}
	g.view.beat(sent)
	return nil
}

// heartbeats puts the membership entry every Heartbeat until ctx ends. A
// failure shows in Check (through the age of the last acknowledged one,
// with this error).
func (g *Generator) heartbeats(ctx context.Context) {
	var lastWarn time.Time
	service.Every(ctx, g.clock, g.cfg.Heartbeat, nil, func() {
		if err := g.heartbeat(ctx); err != nil && ctx.Err() == nil {
			msg := err.Error()
			g.beatErr.Store(&msg)
			if now := g.clock.Now(); now.Sub(lastWarn) >= 5*time.Second {
				lastWarn = now
				g.logger.Warn("membership heartbeat failed", zap.Error(err))
			}
			return
		}
		g.beatErr.Store(nil)
	})
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
