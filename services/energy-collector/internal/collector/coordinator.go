package collector

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// KV key prefixes in the collectors' bucket.
const (
	keyMember = "member."
	keyClaim  = "claim."
	keyRun    = "run."
)

// coordinator spreads the shared sources over the live collector instances.
//
// Membership: every instance puts member.<instance> every Heartbeat, listing
// the shared sources it can sample; an instance counts as alive while its
// entry is younger than LeaseTTL, measured in the KV server's timestamps
// (entry creation times, the newest seen standing for "now"), so clock skew
// between instances does not matter. A clean shutdown deletes the entry.
//
// Ownership: each source goes to the live instance that ranks highest for it
// by rendezvous hashing, so instances agree without talking and a change of
// membership moves only the sources it must. The owner records itself in
// claim.<source> with a compare-and-set; it takes a claim only when it is
// free, its owner is dead, or it is its own. Every CommitInterval the
// owner's runner commits to the claim, again with compare-and-set, its
// state (the source's counters and the series' running totals) together
// with the rows of the window that state closes; only then are those rows
// handed to the writer, and the next commit waits until they are durable
// (see runner). If the claim moved on, the commit fails and the rows are
// dropped. Claims are read only when about to take one, not watched. The
// claim's revision therefore fences every row: an interval is written by
// one owner only — a new owner writes again just the rows its
// predecessor committed, which the samples table collapses if both made it
// — and the new owner restores the committed state, so its first interval
// starts exactly where the last stored one ended — no gap and no overlap,
// however long the hand-over took and whenever the old owner died. An
// instance that loses a source in a rebalance stops its runner and releases
// the claim with its state (and its last rows unless they are durable); one
// that dies simply stops committing, and its sources move once its member
// entry is LeaseTTL old.
//
// NATS restarts are the bus's to survive: its KV handle declares the bucket
// again when a server restarted with an empty store lost it, and its watch
// starts over, delivering a delete for every key lost with the bucket
// (bus.KeyLost). Such a delete is no decision of anyone's: a lost run.*
// key this instance still knows from its consumer is put back, and a lost
// member.* entry is left to expire with its lease (its instance is alive
// and heartbeats again). A runner whose claim vanished with the store
// recreates it if it committed within LeaseTTL, so it keeps its place.
type coordinator struct {
	c      *Collector
	kv     jetstream.KeyValue
	self   string
	token  string // this process's incarnation of the instance
	shared map[string]SourceConfig
	logger *zap.Logger

	mu        sync.Mutex
	members   map[string]member // by KV key
	serverNow time.Time
	lastBeat  time.Time // local send time of the last acknowledged heartbeat
	synced    bool
	lost      map[string]int // run.* keys lost with the bucket, to put back: times lost

	wake    chan struct{}
	exited  chan runExit
	runners map[string]*runHandle // coordinator goroutine only
	// releasing holds the sources whose runners are finishing (committing,
	// waiting for their rows to be durable) before their claims are
	// released: that takes up to LeaseTTL, so it happens beside the
	// coordinator's loop, which must keep heartbeating.
	releasing map[string]bool // coordinator goroutine only
	released  chan string
	releases  sync.WaitGroup
}

type member struct {
	instance, token string
	sources         map[string]bool
	created         time.Time
}

type memberValue struct {
	Instance string   `json:"instance"`
	Token    string   `json:"token"`
	Sources  []string `json:"sources"`
}

type runHandle struct {
	r      *runner
	ref    *claimRef
	cancel context.CancelFunc
	done   chan struct{}
}

type runExit struct {
	id  string
	h   *runHandle
	err error
}

func newCoordinator(c *Collector, kv jetstream.KeyValue, shared map[string]SourceConfig) *coordinator {
	return &coordinator{c: c, kv: kv, self: c.cfg.Instance, token: newToken(), shared: shared,
		logger:  c.logger,
		members: map[string]member{},
		lost:    map[string]int{},
		wake:    make(chan struct{}, 1), exited: make(chan runExit, len(shared)+1), runners: map[string]*runHandle{},
		releasing: map[string]bool{}, released: make(chan string, len(shared)+1)}
}

// newToken names one process's incarnation of an instance.
func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// kvKey makes a string safe as a KV key token: other characters become '_'
// and a hash keeps distinct names distinct.
func kvKey(s string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
	if safe == s && s != "" {
		return s
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return safe + "-" + hex.EncodeToString(h.Sum(nil))
}

func (co *coordinator) memberKey() string { return keyMember + kvKey(co.self) }
func claimKey(id string) string           { return keyClaim + kvKey(id) }
func runKey(runID string) string          { return keyRun + kvKey(runID) }
func (co *coordinator) signal()           { trySend(co.wake) }
func trySend(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
func (co *coordinator) mine(cv claimValue) bool { return cv.Owner == co.self && cv.Token == co.token }

// run keeps membership and ownership until ctx ends, then stops the
// runners, releases their claims and leaves.
func (co *coordinator) run(ctx context.Context) error {
	stopWatch, err := co.watch(ctx)
	if err != nil {
		return err
	}
	defer stopWatch()

	hb := co.c.clock.NewTicker(co.c.cfg.Heartbeat)
	defer hb.Stop()
	co.heartbeat(ctx)
	for {
		select {
		case <-ctx.Done():
			co.shutdown()
			return nil
		case <-hb.C():
			co.heartbeat(ctx)
		case <-co.wake:
		case id := <-co.released:
			delete(co.releasing, id)
		case e := <-co.exited:
			if co.runners[e.id] == e.h {
				delete(co.runners, e.id)
				co.logger.Info("source taken over by another instance", zap.String("source", e.id), zap.Error(e.err))
			}
		}
		co.putBack(ctx)
		co.reconcile(ctx)
	}
}

// watch starts the watcher of membership and assignments; stop ends it.
// Claims are not watched: their owners commit every interval, and every
// instance decoding every commit would cost more than reading a claim
// when about to take one.
func (co *coordinator) watch(ctx context.Context) (stop func(), err error) {
	w, err := co.kv.WatchFiltered(ctx, []string{keyMember + ">", keyRun + ">"})
	if err != nil {
		return nil, fmt.Errorf("watch collector membership: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			co.apply(e)
		}
	}()
	return func() { _ = w.Stop(); <-done }, nil
}

// putBack puts the run.* keys lost with the bucket back, for the runs
// this instance still measures: another instance starting now learns its
// assignments from the bucket. A run released meanwhile is not put back
// (runKeys orders this with the consumer); a key someone created again
// first is left as it is; one that fails is tried again after the next
// heartbeat.
func (co *coordinator) putBack(ctx context.Context) {
	co.mu.Lock()
	keys := maps.Clone(co.lost)
	co.mu.Unlock()
	for key, n := range keys {
		err := co.putBackRun(ctx, key)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			co.logger.Warn("put back assignment lost with the kv bucket failed; retrying", zap.String("key", key), zap.Error(err))
			continue
		}
		co.mu.Lock()
		if co.lost[key] == n { // not lost again meanwhile
			delete(co.lost, key)
		}
		co.mu.Unlock()
	}
}

func (co *coordinator) putBackRun(ctx context.Context, key string) error {
	co.c.runKeys.Lock()
	defer co.c.runKeys.Unlock()
	a, ok := co.c.assign.byKey(key)
	if !ok {
		return nil // released meanwhile
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode assignment of run %s: %w", a.RunID, err)
	}
	kctx, cancel := context.WithTimeout(ctx, co.c.cfg.LeaseTTL)
	defer cancel()
	_, err = co.kv.Create(kctx, key, b)
	switch {
	case err == nil:
		co.logger.Info("assignment put back after the kv bucket was lost", zap.String("run_id", a.RunID))
	case errors.Is(err, jetstream.ErrKeyExists):
		err = nil // assigned or put back by someone else already
	}
	return err
}

// apply records one KV update seen by the watcher.
func (co *coordinator) apply(e jetstream.KeyValueEntry) {
	if e == nil { // initial values delivered
		co.mu.Lock()
		co.synced = true
		co.mu.Unlock()
		co.c.assign.markSynced()
		co.signal()
		return
	}
	del := e.Operation() != jetstream.KeyValuePut
	lost := del && bus.KeyLost(e)
	key := e.Key()
	co.mu.Lock()
	if e.Created().After(co.serverNow) {
		co.serverNow = e.Created()
	}
	switch {
	case strings.HasPrefix(key, keyMember):
		if lost {
			break // alive while its lease runs; it puts the entry back
		}
		var v memberValue
		if del || json.Unmarshal(e.Value(), &v) != nil {
			delete(co.members, key)
			break
		}
		srcs := make(map[string]bool, len(v.Sources))
		for _, s := range v.Sources {
			srcs[s] = true
		}
		co.members[key] = member{instance: v.Instance, token: v.Token, sources: srcs, created: e.Created()}
	case strings.HasPrefix(key, keyRun):
		if lost {
			co.lost[key]++
			break
		}
		co.mu.Unlock()
		if del {
			co.c.assign.deleteKey(key)
		} else {
			var m events.CollectAssign
			if err := json.Unmarshal(e.Value(), &m); err == nil && m.RunID != "" {
				co.c.assign.put(m)
			}
		}
		return
	}
	co.mu.Unlock()
	co.signal()
}

// heartbeat renews this instance's membership (the bus's KV handle
// declares the bucket again if it was lost); false when it failed.
func (co *coordinator) heartbeat(ctx context.Context) bool {
	ids := make([]string, 0, len(co.shared))
	for id := range co.shared {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b, _ := json.Marshal(memberValue{Instance: co.self, Token: co.token, Sources: ids})
	sent := co.c.clock.Now()
	hctx, cancel := context.WithTimeout(ctx, co.c.cfg.LeaseTTL)
	defer cancel()
	if _, err := co.kv.Put(hctx, co.memberKey(), b); err != nil {
		if ctx.Err() == nil {
			co.logger.Warn("membership heartbeat failed", zap.Error(err))
			co.c.ready.set(condBucket, fmt.Errorf("kv bucket %s: heartbeat failed: %w", co.c.cfg.Bucket, err))
		}
		return false
	}
	co.c.ready.set(condBucket, nil)
	co.mu.Lock()
	co.lastBeat = sent
	co.mu.Unlock()
	return true
}

// aliveLocked reports whether instance (in its incarnation token) is alive.
func (co *coordinator) aliveLocked(instance, token string) bool {
	if instance == co.self && token == co.token {
		return co.c.clock.Since(co.lastBeat) < co.c.cfg.LeaseTTL
	}
	for _, m := range co.members {
		if m.instance == instance && m.token == token {
			return co.serverNow.Sub(m.created) <= co.c.cfg.LeaseTTL
		}
	}
	return false
}

// owner is the live instance that ranks highest for source id.
func (co *coordinator) ownerLocked(id string) string {
	best, bestScore := "", uint64(0)
	consider := func(instance string) {
		// A cryptographic hash: FNV's weak avalanche ranks instance names
		// that differ in one character the same way for every source.
		sum := sha256.Sum256([]byte(instance + "\x00" + id))
		if s := binary.BigEndian.Uint64(sum[:8]); best == "" || s > bestScore || (s == bestScore && instance < best) {
			best, bestScore = instance, s
		}
	}
	if co.aliveLocked(co.self, co.token) {
		consider(co.self)
	}
	for _, m := range co.members {
		if m.instance != co.self && m.sources[id] && co.serverNow.Sub(m.created) <= co.c.cfg.LeaseTTL {
			consider(m.instance)
		}
	}
	return best
}

// reconcile starts the runners of sources this instance should own and can
// claim, and stops and releases those it should no longer own.
func (co *coordinator) reconcile(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	var start, stop []string
	co.mu.Lock()
	if !co.synced {
		co.mu.Unlock()
		return
	}
	for id := range co.shared {
		want := co.ownerLocked(id) == co.self
		_, running := co.runners[id]
		switch {
		case co.releasing[id]:
			// taken again once released
		case want && !running:
			start = append(start, id)
		case !want && running:
			stop = append(stop, id)
		}
	}
	co.mu.Unlock()
	slices.Sort(start)
	slices.Sort(stop)
	for _, id := range stop {
		h := co.runners[id]
		delete(co.runners, id)
		co.releasing[id] = true
		co.releases.Add(1)
		go func() {
			defer co.releases.Done()
			co.release(h, id)
			co.released <- id
		}()
	}
	for _, id := range start {
		co.take(ctx, id)
	}
	co.c.m.owned.Set(float64(len(co.runners)))
}
