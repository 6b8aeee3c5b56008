package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/bus"
)

var errConflict = errors.New("revision conflict")

// kvStore wraps the bucket with typed, revision-checked access.
type kvStore struct{ kv jetstream.KeyValue }

func (k kvStore) get(ctx context.Context, key string, v any) (uint64, error) {
	e, err := k.kv.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

// create writes a new key and returns its revision; it fails if the key
// exists.
func (k kvStore) create(ctx context.Context, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", key, err)
	}
	return k.kv.Create(ctx, key, b)
}

// versioned is a value with the KV revision it was read or written at.
type versioned[T any] struct {
	Value    T
	Revision uint64
}

// update applies fn with optimistic concurrency: it re-reads and retries on
// a revision conflict. fn returns false to skip writing. The result carries
// the revision written (or read, when nothing changed). A missing key is an
// error.
func update[T any](ctx context.Context, k kvStore, key string, fn func(*T) (bool, error)) (versioned[T], bool, error) {
	return write(ctx, k, key, false, func(v *T, _ bool) (bool, error) { return fn(v) })
}

// upsert is update that creates a missing key: fn then sees found false
// and the zero T.
func upsert[T any](ctx context.Context, k kvStore, key string, fn func(v *T, found bool) (bool, error)) (versioned[T], bool, error) {
	return write(ctx, k, key, true, fn)
}

func write[T any](ctx context.Context, k kvStore, key string, create bool, fn func(v *T, found bool) (bool, error)) (versioned[T], bool, error) {
	for attempt := 0; attempt < 20; attempt++ {
		var v T
		rev, err := k.get(ctx, key, &v)
		missing := errors.Is(err, jetstream.ErrKeyNotFound)
		if err != nil && !(missing && create) {
			return versioned[T]{Value: v}, false, fmt.Errorf("read %s: %w", key, err)
		}
		changed, err := fn(&v, !missing)
		if err != nil || !changed {
			return versioned[T]{v, rev}, false, err
		}
		b, err := json.Marshal(&v)
		if err != nil {
			return versioned[T]{v, rev}, false, fmt.Errorf("encode %s: %w", key, err)
		}
		var nrev uint64
		if missing {
			nrev, err = k.kv.Create(ctx, key, b)
		} else {
			nrev, err = k.kv.Update(ctx, key, b, rev)
		}
		if bus.IsRevisionConflict(err) {
			continue // another writer came first: read again
		}
		if err != nil {
			return versioned[T]{v, rev}, false, fmt.Errorf("write %s: %w", key, err)
		}
		return versioned[T]{v, nrev}, true, nil
	}
	return versioned[T]{}, false, fmt.Errorf("write %s: %w after 20 attempts", key, errConflict)
}
