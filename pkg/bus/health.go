package bus

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// state is a health state: nil is healthy.
type state struct {
	mu  sync.Mutex
	err error
}

func (s *state) set(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *state) get() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Check reports what keeps this service's messaging from working right
// now: a connection that is down, streams or buckets not yet declared again
// after a reconnect, and every consumer that is not consuming (not started
// yet, or its durable consumer lost and being re-declared). Nil means
// ready. It does no I/O.
func (b *Bus) Check() error {
	var errs []error
	if st := b.nc.Status(); st != nats.CONNECTED {
		errs = append(errs, fmt.Errorf("nats connection %s", strings.ToLower(st.String())))
	}
	if err := b.topology.get(); err != nil {
		errs = append(errs, err)
	}
	b.mu.Lock()
	cs := make([]*Consumer, 0, len(b.consumers))
	for c := range b.consumers {
		cs = append(cs, c)
	}
	var waiting []string
	for pattern, ok := range b.expected {
		if !ok {
			waiting = append(waiting, pattern)
		}
	}
	b.mu.Unlock()
	sort.Strings(waiting)
	for _, pattern := range waiting {
		errs = append(errs, fmt.Errorf("consumer %s: not started", pattern))
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].spec.Durable < cs[j].spec.Durable })
	for _, c := range cs {
		if err := c.Check(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Expect makes Check report the durable consumers named by patterns (a
// trailing * matches any suffix) as not started until a consumer of each
// has consumed once — for components that start their consumers inside
// Run, after work readiness must not skip (a KV view to sync).
func (b *Bus) Expect(patterns ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range patterns {
		if _, ok := b.expected[p]; !ok {
			b.expected[p] = false
		}
	}
}

// started records that a consumer of durable consumes.
func (b *Bus) started(durable string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p := range b.expected {
		if p == durable || strings.HasSuffix(p, "*") && strings.HasPrefix(durable, strings.TrimSuffix(p, "*")) {
			b.expected[p] = true
		}
	}
}
