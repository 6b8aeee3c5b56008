package auth

import (
	"context"
	"errors"
	"sync"

	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
)

// Tokens is the token store on a bus, opened at its first use: a
// component's New does no I/O, and a bucket that could not be opened yet
// (NATS down at start) is tried again at the next request — which is
// refused meanwhile, never let through.
type Tokens struct {
	b     *bus.Bus
	clock clock.PassiveClock
	mu    sync.Mutex
	store *Store
}

// OnBus returns the token store on b (clk: the real clock when nil).
func OnBus(b *bus.Bus, clk clock.PassiveClock) *Tokens { return &Tokens{b: b, clock: clk} }

// Store opens the store, once.
func (t *Tokens) Store(ctx context.Context) (*Store, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.store != nil {
		return t.store, nil
	}
	if t.b == nil {
		return nil, errors.New("no token store: the service was built without a bus")
	}
	s, err := OpenStore(ctx, t.b, t.clock)
	if err != nil {
		return nil, err
	}
	t.store = s
	return s, nil
}

// Verify checks a presented token against the store.
func (t *Tokens) Verify(ctx context.Context, plain string) (Token, error) {
	s, err := t.Store(ctx)
	if err != nil {
		return Token{}, err
	}
	return s.Verify(ctx, plain)
}

// Store returns s itself, so a Store serves where a Tokens does.
func (s *Store) Store(context.Context) (*Store, error) { return s, nil }

// StoreOpener yields the token store (Tokens opens it on first use).
type StoreOpener interface {
	Store(ctx context.Context) (*Store, error)
}

var (
	_ StoreOpener = (*Tokens)(nil)
	_ StoreOpener = (*Store)(nil)
	_ Verifier    = (*Tokens)(nil)
)
