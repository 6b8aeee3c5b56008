package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
)

// TokenBucket is the JetStream KV bucket holding token records, keyed by
// id. Every service with an HTTP API reads it; only the admin token API
// (and the dev stack's first start) writes it.
const TokenBucket = bus.BucketTokens

// Errors a token check ends with; the API answers 401 for each and tells
// the client which.
var (
	ErrUnknownToken = errors.New("unknown token")
	ErrRevoked      = errors.New("token revoked")
	ErrExpired      = errors.New("token expired")
	// ErrAmbiguous: a name shared by several live tokens revokes none.
	ErrAmbiguous = errors.New("several live tokens have this name; give the id")
)

// Store keeps token records in a KV bucket. It is safe for concurrent use.
type Store struct {
	kv    jetstream.KeyValue
	clock clock.PassiveClock
}

// NewStore uses kv (the TokenBucket) and clk (the real clock when nil).
func NewStore(kv jetstream.KeyValue, clk clock.PassiveClock) *Store {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Store{kv: kv, clock: clk}
}

// OpenStore opens the TokenBucket on b.
func OpenStore(ctx context.Context, b *bus.Bus, clk clock.PassiveClock) (*Store, error) {
	kv, err := b.KV(ctx, TokenBucket)
	if err != nil {
		return nil, fmt.Errorf("open token store: %w", err)
	}
	return NewStore(kv, clk), nil
}

// Create makes a token named name with role; ttl 0 never expires. It
// returns the token — the only time it exists outside its holder — and
// its record. A name in use by a live (unrevoked, unexpired) token is
// refused: names revoke tokens and must say which.
func (s *Store) Create(ctx context.Context, name string, role Role, ttl time.Duration) (string, Token, error) {
	if err := ValidName(name); err != nil {
		return "", Token{}, err
	}
	if _, ok := rank[role]; !ok {
		return "", Token{}, fmt.Errorf("role %q: expected viewer, operator or admin", role)
	}
	if ttl < 0 {
		return "", Token{}, fmt.Errorf("expiry %s: expected a positive duration, or 0 for none", ttl)
	}
	all, err := s.List(ctx)
	if err != nil {
		return "", Token{}, err
	}
	now := s.clock.Now()
	for _, t := range all {
		if t.Name == name && !t.Revoked() && !t.Expired(now) {
			return "", Token{}, fmt.Errorf("token name %q is taken by token %s: revoke it first or pick another name", name, t.ID)
		}
	}
	plain, t, err := newToken(name, role, now, ttl)
	if err != nil {
		return "", Token{}, err
	}
	b, _ := json.Marshal(t)
	if _, err := s.kv.Create(ctx, t.ID, b); err != nil {
		return "", Token{}, fmt.Errorf("store token %s: %w", name, err)
	}
	return plain, t, nil
}

// Adopt stores the record of a token drawn elsewhere (Draw) — a cluster's
// first admin token, made by `greenflow cluster up` into a Secret the
// scheduler reads — under name and role. Adopting the same token again
// returns its record (a restarted scheduler adopts it once more); a revoked
// one stays revoked, and a name a live token of another id holds is
// refused, as in Create.
func (s *Store) Adopt(ctx context.Context, name string, role Role, plain string) (Token, error) {
	id, err := idOf(plain)
	if err != nil {
		return Token{}, err
	}
	if t, _, err := s.get(ctx, id); err == nil {
		switch {
		case !t.matches(plain):
			return Token{}, fmt.Errorf("token %s: another token has this id", id)
		case t.Revoked():
			return t, ErrRevoked
		}
		return t, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Token{}, err
	}
	if err := ValidName(name); err != nil {
		return Token{}, err
	}
	if _, ok := rank[role]; !ok {
		return Token{}, fmt.Errorf("role %q: expected viewer, operator or admin", role)
	}
	all, err := s.List(ctx)
	if err != nil {
		return Token{}, err
	}
	now := s.clock.Now()
	for _, t := range all {
		if t.Name == name && !t.Revoked() && !t.Expired(now) {
			return Token{}, fmt.Errorf("token name %q is taken by token %s: revoke it first or pick another name", name, t.ID)
		}
	}
	t := Token{ID: id, Name: name, Role: role, Hash: hashOf(plain), CreatedMs: now.UnixMilli()}
	b, _ := json.Marshal(t)
	if _, err := s.kv.Create(ctx, t.ID, b); err != nil {
		return Token{}, fmt.Errorf("store token %s: %w", name, err)
	}
	return t, nil
}

// Verify returns the record of a presented token, or why it is refused.
func (s *Store) Verify(ctx context.Context, plain string) (Token, error) {
	id, err := idOf(plain)
	if err != nil {
		return Token{}, ErrUnknownToken
	}
	t, _, err := s.get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Token{}, ErrUnknownToken
	}
	if err != nil {
		return Token{}, err
	}
	if !t.matches(plain) {
		return Token{}, ErrUnknownToken
	}
	if t.Revoked() {
		return t, ErrRevoked
	}
	if t.Expired(s.clock.Now()) {
		return t, ErrExpired
	}
	return t, nil
}

func (s *Store) get(ctx context.Context, id string) (Token, uint64, error) {
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		return Token{}, 0, err
	}
	var t Token
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return Token{}, 0, fmt.Errorf("token record %s: %w", id, err)
	}
	return t, e.Revision(), nil
}

// List returns every token record (revoked and expired ones too), oldest
// first.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	keys, err := s.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out := make([]Token, 0, len(keys))
	for _, k := range keys {
		t, _, err := s.get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedMs < out[j].CreatedMs })
	return out, nil
}

// Revoke revokes the token with id ref, or else the live token named ref.
// Revoking a revoked token changes nothing.
func (s *Store) Revoke(ctx context.Context, ref string) (Token, error) {
	all, err := s.List(ctx)
	if err != nil {
		return Token{}, err
	}
	var found []Token
	for _, t := range all {
		if t.ID == ref {
			found = []Token{t}
			break
		}
		if t.Name == ref && !t.Revoked() {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return Token{}, fmt.Errorf("revoke %q: %w (no live token has this name or id)", ref, ErrUnknownToken)
	case 1:
	default:
		return Token{}, fmt.Errorf("revoke %q: %w (%d tokens)", ref, ErrAmbiguous, len(found))
	}
	for {
		t, rev, err := s.get(ctx, found[0].ID)
		if err != nil {
			return Token{}, fmt.Errorf("revoke %q: %w", ref, err)
		}
		if t.Revoked() {
			return t, nil
		}
		t.RevokedMs = s.clock.Now().UnixMilli()
		b, _ := json.Marshal(t)
		_, err = s.kv.Update(ctx, t.ID, b, rev)
		if err == nil {
			return t, nil
		}
		if !bus.IsRevisionConflict(err) {
			return Token{}, fmt.Errorf("revoke %q: %w", ref, err)
		}
		// Changed meanwhile: read it again.
	}
}
