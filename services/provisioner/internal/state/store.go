// Package state keeps the provisioner's per-run records in a JetStream KV
// bucket (file storage, opened through the bus, which declares it again
// after a NATS restart that lost it), so that any provisioner instance — a
// restarted one, or another one running at the same time — knows every run: what was
// started where (node, pid, start time, process group, log and exit-status
// files, namespace), the run's targets and Kafka topics, whether its
// teardown is wanted and how far it got, and how it ended. Writes are revision-checked:
// creating a record is the lock that keeps two instances from starting the
// same run, and every later change is a compare-and-set on what was read.
package state

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
)

// Bucket is the KV bucket of the provisioner's records.
const Bucket = bus.BucketProvisioner

// Entry is a record with its key and revision.
type Entry struct {
	Key string
	Rev uint64
	Rec Record
}

// ErrNotFound is returned for a missing record.
var ErrNotFound = errors.New("no record")

// Config names the bucket of the records.
type Config struct {
	// Bucket is the KV bucket every provisioner of one installation
	// shares.
	Bucket string `yaml:"bucket"`
}

// Default is the installation's bucket, gf_provisioner.
func Default() Config { return Config{Bucket: Bucket} }

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	if c.Bucket == "" {
		return errors.New("state.bucket: required")
	}
	return nil
}

// Deps are the store's collaborators.
type Deps struct {
	// Bus opens the bucket; required.
	Bus *bus.Bus
	// Clock stamps records (default: the real clock).
	Clock clock.PassiveClock
}

// Store reads and writes records; safe for concurrent use. The bucket
// handle comes from the bus (bus.KV), which keeps it: a bucket the server
// lost is declared again and the operation retried, and a watch goes on
// across restarts. The store adds no recovery of its own.
type Store struct {
	bus    *bus.Bus
	bucket string
	clock  clock.PassiveClock

	mu       sync.Mutex
	kv       jetstream.KeyValue // nil until Open
	platform string
}

// New builds the store; no I/O until Open.
func New(cfg Config, d Deps) (*Store, error) {
	err := cfg.Validate()
	if d.Bus == nil {
		err = errors.Join(err, errors.New("state: no bus to open the records with"))
	}
	if err != nil {
		return nil, err
	}
	d.Clock = cmp.Or[clock.PassiveClock](d.Clock, clock.RealClock{})
	return &Store{bus: d.Bus, bucket: cfg.Bucket, clock: d.Clock}, nil
}

// Open opens (creating when needed) the bucket and reads the platform id,
// creating it on first use.
func (s *Store) Open(ctx context.Context) error {
	kv, err := s.bus.KV(ctx, s.bucket)
	if err != nil {
		return err
	}
	id := uuid.NewString()
	if _, err := kv.Create(ctx, KeyPlatform, []byte(id)); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("record the platform id in kv bucket %s: %w", s.bucket, err)
		}
		e, err := kv.Get(ctx, KeyPlatform)
		if err != nil {
			return fmt.Errorf("read the platform id from kv bucket %s: %w", s.bucket, err)
		}
		id = string(e.Value())
	}
	s.mu.Lock()
	s.kv, s.platform = kv, id
	s.mu.Unlock()
	return nil
}

// Platform names this installation (every provisioner sharing the bucket):
// processes and namespaces carry it, so that two installations on one
// machine or cluster never remove each other's.
func (s *Store) Platform() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.platform
}

// RestorePlatform records the platform id again after the bucket lost it
// (a NATS server that lost its store): a provisioner starting later would
// otherwise pick a new id and take this installation's processes and
// namespaces for another's. Every instance knew the same id, so whichever
// writes first writes the right one.
func (s *Store) RestorePlatform(ctx context.Context) error {
	id := s.Platform()
	return s.do(func(kv jetstream.KeyValue) error {
		if _, err := kv.Create(ctx, KeyPlatform, []byte(id)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("record the platform id again in kv bucket %s: %w", s.bucket, err)
		}
		return nil
	})
}

// errNotOpen is an operation before Open.
var errNotOpen = errors.New("provisioner records not opened yet")

// do runs op on the bucket.
func (s *Store) do(op func(jetstream.KeyValue) error) error {
	s.mu.Lock()
	kv := s.kv
	s.mu.Unlock()
	if kv == nil {
		return errNotOpen
	}
	return op(kv)
}

// Get reads a record.
func (s *Store) Get(ctx context.Context, key string) (Entry, error) {
	var e Entry
	err := s.do(func(kv jetstream.KeyValue) error {
		v, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read record %s: %w", key, err)
		}
		e, err = decode(v)
		return err
	})
	return e, err
}

func decode(v jetstream.KeyValueEntry) (Entry, error) {
	e := Entry{Key: v.Key(), Rev: v.Revision()}
	if err := json.Unmarshal(v.Value(), &e.Rec); err != nil {
		return e, fmt.Errorf("record %s: not a provisioner record: %w", v.Key(), err)
	}
	return e, nil
}

// Create writes rec under key unless a record is there; created is false
// and the entry is the existing record when one was.
func (s *Store) Create(ctx context.Context, key string, rec Record) (Entry, bool, error) {
	now := s.clock.Now().UnixMilli()
	if rec.CreatedMs == 0 {
		rec.CreatedMs = now
	}
	rec.UpdatedMs = now
	b, err := json.Marshal(rec)
	if err != nil {
		return Entry{}, false, err
	}
	for {
		var rev uint64
		err := s.do(func(kv jetstream.KeyValue) error {
			var err error
			rev, err = kv.Create(ctx, key, b)
			return err
		})
		if err == nil {
			return Entry{Key: key, Rev: rev, Rec: rec}, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Entry{}, false, fmt.Errorf("create record %s: %w", key, err)
		}
		e, err := s.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		return e, false, err
	}
}

// ErrConflict is a revision-checked write that lost to another writer.
var ErrConflict = errors.New("record changed meanwhile")

// Update writes e.Rec if the record is still at e.Rev.
func (s *Store) Update(ctx context.Context, e Entry) (Entry, error) {
	e.Rec.UpdatedMs = s.clock.Now().UnixMilli()
	b, err := json.Marshal(e.Rec)
	if err != nil {
		return e, err
	}
	err = s.do(func(kv jetstream.KeyValue) error {
		rev, err := kv.Update(ctx, e.Key, b, e.Rev)
		if err != nil {
			return err
		}
		e.Rev = rev
		return nil
	})
	if bus.IsRevisionConflict(err) {
		return e, ErrConflict
	}
	if err != nil {
		return e, fmt.Errorf("update record %s: %w", e.Key, err)
	}
	return e, nil
}

// Mutate reads the record at key, applies fn and writes it back with a
// revision check, again on conflicts. fn returns false to leave the record
// as it is. ErrNotFound when there is no record.
func (s *Store) Mutate(ctx context.Context, key string, fn func(*Record) (bool, error)) (Entry, bool, error) {
	for {
		e, err := s.Get(ctx, key)
		if err != nil {
			return e, false, err
		}
		changed, err := fn(&e.Rec)
		if err != nil || !changed {
			return e, false, err
		}
		e, err = s.Update(ctx, e)
		if errors.Is(err, ErrConflict) {
			if ctx.Err() != nil {
				return e, false, ctx.Err()
			}
			continue
		}
		return e, err == nil, err
	}
}

// Delete removes a record if it is still at rev.
func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	return s.do(func(kv jetstream.KeyValue) error {
		err := bus.DeleteRevision(ctx, kv, key, rev)
		if bus.IsRevisionConflict(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("delete record %s: %w", key, err)
		}
		return nil
	})
}

// Find reads the records whose keys match filter (wildcards * and >).
func (s *Store) Find(ctx context.Context, filter string) ([]Entry, error) {
	var keys []string
	err := s.do(func(kv jetstream.KeyValue) error {
		l, err := kv.ListKeysFiltered(ctx, filter)
		if err != nil {
			return err
		}
		defer func() { _ = l.Stop() }()
		keys = keys[:0]
		for k := range l.Keys() {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list records %s: %w", filter, err)
	}
	var out []Entry
	for _, k := range keys {
		e, err := s.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Watch delivers the current records matching filters, a nil entry, then
// every change, until ctx ends (see jetstream.KeyValue.WatchFiltered).
func (s *Store) Watch(ctx context.Context, filters ...string) (jetstream.KeyWatcher, error) {
	var w jetstream.KeyWatcher
	err := s.do(func(kv jetstream.KeyValue) error {
		var err error
		w, err = kv.WatchFiltered(ctx, append([]string(nil), filters...))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("watch records %v: %w", filters, err)
	}
	return w, nil
}

// MarkFinal records that the scheduler has ended run runID.
func (s *Store) MarkFinal(ctx context.Context, runID, runState string) error {
	b, err := json.Marshal(Final{RunID: runID, State: runState, AtMs: s.clock.Now().UnixMilli()})
	if err != nil {
		return err
	}
	return s.do(func(kv jetstream.KeyValue) error {
		_, err := kv.Create(ctx, FinalKey(runID), b)
		if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("mark run %s %s: %w", runID, runState, err)
		}
		return nil
	})
}
