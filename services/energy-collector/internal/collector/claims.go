package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Claims: the owner of a shared source holds claim.<source> in the bucket,
// taken and committed to with compare-and-set, so that every row is fenced
// by the claim's revision (see coordinator for who owns what, and commit.go
// for what a commit carries).

// claimValue is a claim in the bucket.
type claimValue struct {
	Source string          `json:"source"`
	Owner  string          `json:"owner,omitempty"`
	Token  string          `json:"token,omitempty"`
	State  json.RawMessage `json:"state,omitempty"`
	// Rows are those of the window State closes, until they are known
	// durable: whoever takes the claim writes them again (see runner).
	Rows json.RawMessage `json:"rows,omitempty"`
}

// take claims source id — when it is unclaimed, released, ours (this or a
// previous incarnation) or its owner is dead — with a compare-and-set, and
// starts its runner from the claim's hand-over state.
func (co *coordinator) take(ctx context.Context, id string) {
	kctx, cancel := context.WithTimeout(ctx, co.c.cfg.LeaseTTL)
	defer cancel()
	var cl claimValue
	var rev uint64
	e, err := co.kv.Get(kctx, claimKey(id))
	switch {
	case err == nil:
		if json.Unmarshal(e.Value(), &cl) != nil {
			cl = claimValue{}
		}
		rev = e.Revision()
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
	default:
		co.logger.Debug("read claim failed", zap.String("source", id), zap.Error(err))
		return
	}
	co.mu.Lock()
	free := cl.Owner == "" || cl.Owner == co.self || !co.aliveLocked(cl.Owner, cl.Token)
	co.mu.Unlock()
	if !free {
		return // its owner hands it over once it sees us
	}
	val, _ := json.Marshal(claimValue{Source: id, Owner: co.self, Token: co.token, State: cl.State, Rows: cl.Rows})
	if rev > 0 {
		rev, err = co.kv.Update(kctx, claimKey(id), val, rev)
	} else {
		rev, err = co.kv.Create(kctx, claimKey(id), val)
	}
	if err != nil {
		co.logger.Debug("claim not taken", zap.String("source", id), zap.Error(err))
		return
	}
	prev := cl.Owner
	if prev == "" {
		prev = "none"
	}
	co.logger.Info("source claimed", zap.String("source", id), zap.String("previous_owner", prev), zap.Bool("handover_state", len(cl.State) > 0),
		zap.Bool("handover_rows", len(cl.Rows) > 0))
	ref := &claimRef{co: co, id: id, rev: rev, last: co.c.clock.Now()}
	r := newRunner(co.c, co.shared[id], ref, handover{state: cl.State, rows: cl.Rows})
	rctx, rcancel := context.WithCancel(ctx)
	h := &runHandle{r: r, ref: ref, cancel: rcancel, done: make(chan struct{})}
	co.runners[id] = h
	go func() {
		defer close(h.done)
		if err := r.run(rctx); err != nil {
			co.exited <- runExit{id: id, h: h, err: err}
		}
	}()
}

// release stops a runner and frees its claim, leaving its last committed
// state — and that commit's rows, unless they are durable — for the next
// owner.
func (co *coordinator) release(h *runHandle, id string) {
	if h == nil {
		return
	}
	h.cancel()
	<-h.done
	ho := h.r.handover()
	val, _ := json.Marshal(claimValue{Source: id, State: ho.state, Rows: ho.rows})
	ctx, cancel := context.WithTimeout(context.Background(), co.c.cfg.LeaseTTL+time.Second)
	defer cancel()
	if _, err := co.kv.Update(ctx, claimKey(id), val, h.ref.rev); err != nil {
		co.logger.Debug("claim release failed (taken over already?)", zap.String("source", id), zap.Error(err))
		return
	}
	co.logger.Info("source released", zap.String("source", id))
}

func (co *coordinator) shutdown() {
	var wg sync.WaitGroup
	for id, h := range co.runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co.release(h, id)
		}()
	}
	wg.Wait()
	co.releases.Wait()
	co.runners = map[string]*runHandle{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = co.kv.Delete(ctx, co.memberKey())
}

// claimRef commits a runner's state to its claim.
type claimRef struct {
	co   *coordinator
	id   string
	rev  uint64
	last time.Time // when the claim was last known to be ours
}

var _ committer = (*claimRef)(nil)

func (c *claimRef) commit(ctx context.Context, state, rows []byte) (bool, error) {
	co := c.co
	val, err := json.Marshal(claimValue{Source: c.id, Owner: co.self, Token: co.token, State: state, Rows: rows})
	if err != nil {
		return false, err
	}
	// Not the runner's context: a commit cut short by shutdown could still
	// land, and then its rows must not be dropped.
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), co.c.cfg.LeaseTTL+time.Second)
	defer cancel()
	rev, err := co.kv.Update(kctx, claimKey(c.id), val, c.rev)
	if err == nil {
		c.rev, c.last = rev, co.c.clock.Now()
		return true, nil
	}
	// Find out what happened: the claim may have moved, or the update may
	// have landed with only its acknowledgement lost.
	e, gerr := co.kv.Get(kctx, claimKey(c.id))
	if gerr != nil {
		if errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
			return c.recreate(kctx, val)
		}
		return false, nil
	}
	var cur claimValue
	if json.Unmarshal(e.Value(), &cur) != nil || !co.mine(cur) {
		return false, errLost
	}
	c.rev, c.last = e.Revision(), co.c.clock.Now()
	if bytes.Equal(e.Value(), val) {
		return true, nil
	}
	return false, nil
}

// recreate puts back a claim that vanished — a NATS server restarted with
// an empty store — when this runner held it within LeaseTTL: nobody can
// have taken it over in that time, since others wait until this instance's
// lease expires. Create fails if another instance created it first.
func (c *claimRef) recreate(ctx context.Context, val []byte) (bool, error) {
	if c.co.c.clock.Since(c.last) > c.co.c.cfg.LeaseTTL {
		return false, errLost
	}
	rev, err := c.co.kv.Create(ctx, claimKey(c.id), val)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, errLost
		}
		return false, nil
	}
	c.co.logger.Info("claim recreated after it vanished (nats store lost?)", zap.String("source", c.id))
	c.rev, c.last = rev, c.co.c.clock.Now()
	return true, nil
}
