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
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/procfs"
)

// Bucket is the KV bucket of the provisioner's records.
const Bucket = "gf_provisioner"

// Record states, in order.
const (
	// Starting: the record exists, the SUT may be starting; Owner holds
	// the provision until LeaseUntilMs.
	Starting = "starting"
	// Running: provisioned; its liveness is watched.
	Running = "running"
	// Stopping: its teardown is wanted (Teardown says why and how far).
	Stopping = "stopping"
	// TornDown: nothing of it is left; Result is what was reported, and is
	// reported again to a repeated teardown.
	TornDown = "torn_down"
)

// Record is everything the provisioner knows of one run.
type Record struct {
	ExperimentID string `json:"experiment_id"`
	RunID        string `json:"run_id"`
	Backend      string `json:"backend"`
	// Node is the machine running a local run's processes.
	Node  string `json:"node,omitempty"`
	State string `json:"state"`
	// Owner is the instance provisioning the run; a provision whose
	// lease ran out (its instance died) may be taken over.
	Owner        string `json:"owner,omitempty"`
	LeaseUntilMs int64  `json:"lease_until_ms,omitempty"`
	// OwnerProc is the owner's process: an instance of the same machine
	// that finds it gone (a provisioner killed and restarted) takes the
	// provision over at once instead of waiting out the lease.
	OwnerProc *procfs.Incarnation `json:"owner_proc,omitempty"`
	Kafka     *events.Kafka       `json:"kafka,omitempty"`
	Targets   []events.Target     `json:"targets,omitempty"`
	Process   *Process            `json:"process,omitempty"`
	// ProvisionFailed is the reason a provision failed (reported again to
	// a redelivered provision); Transient as reported.
	ProvisionFailed string    `json:"provision_failed,omitempty"`
	Transient       bool      `json:"transient,omitempty"`
	Teardown        *Teardown `json:"teardown,omitempty"`
	// Result is the final report of a torn-down run.
	Result    *events.RunTornDown `json:"result,omitempty"`
	CreatedMs int64               `json:"created_ms"`
	UpdatedMs int64               `json:"updated_ms"`
}

// Process is a local run's process: the shim that records the exit status
// (session and process group leader) and the SUT it runs.
type Process struct {
	ShimPID        int    `json:"shim_pid"`
	ShimStartTicks uint64 `json:"shim_start_ticks"`
	PGID           int    `json:"pgid"`
	PID            int    `json:"pid,omitempty"`
	StartTicks     uint64 `json:"start_ticks,omitempty"`
	// BootID is the boot the pids and start times belong to.
	BootID string   `json:"boot_id"`
	Log    string   `json:"log"`
	Status string   `json:"status"`
	Argv   []string `json:"argv"`
	// Signalled: a teardown (or a provisioner stopping with its SUTs) sent
	// it a signal, so its exit is not a crash.
	Signalled bool `json:"signalled,omitempty"`
	// StoppedAtShutdown: stopped when its provisioner stopped (greenflow
	// dev); the run cannot go on.
	StoppedAtShutdown bool `json:"stopped_at_shutdown,omitempty"`
}

// Teardown is a wanted teardown and its progress; the reconciler works
// on it until both the SUT and the topics are gone.
type Teardown struct {
	RequestedMs int64 `json:"requested_ms"`
	// Cause says why: "teardown command", "crash", "provision failed",
	// "run failed" (a final run state), "unknown run".
	Cause string `json:"cause"`
	// From is the run's state when its teardown was wanted: only a run
	// that was running can have crashed.
	From string `json:"from,omitempty"`
	// Report: publish run.torn_down (a command asked, or the SUT crashed).
	Report bool `json:"report,omitempty"`
	// Crashed: the SUT had exited on its own before teardown.
	Crashed     bool   `json:"crashed,omitempty"`
	CrashReason string `json:"crash_reason,omitempty"`
	// Lost: there was no record of the run, or its SUT was not found.
	Lost       bool   `json:"lost,omitempty"`
	LostReason string `json:"lost_reason,omitempty"`
	// SUTRemoved and TopicsRemoved are done independently: a failure of
	// one never skips the other.
	SUTRemoved    bool `json:"sut_removed,omitempty"`
	TopicsRemoved bool `json:"topics_removed,omitempty"`
	Attempts      int  `json:"attempts,omitempty"`
	// NextMs is when the next attempt may start; while an attempt runs it
	// is that attempt's lease.
	NextMs int64  `json:"next_ms,omitempty"`
	Owner  string `json:"owner,omitempty"`
	// OwnerProc is the process of the instance running an attempt; an
	// instance of the same machine that finds it gone does not wait for
	// NextMs.
	OwnerProc *procfs.Incarnation `json:"owner_proc,omitempty"`
	LastError string              `json:"last_error,omitempty"`
}

// Final is a run the scheduler has ended, from its run.state events.
type Final struct {
	RunID string `json:"run_id"`
	State string `json:"state"`
	AtMs  int64  `json:"at_ms"`
}

// Key prefixes; every key is <prefix><token>.
const (
	PrefixLocal = "local."
	PrefixKube  = "kube."
	PrefixFinal = "final."
	// KeyPlatform holds this installation's id (see Store.Platform).
	KeyPlatform = "meta.platform"
)

// Token escapes an id for one token of a key: letters, digits, '-' and '_'
// stay; every other byte becomes =HH.
func Token(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteString(hex.EncodeToString([]byte{c}))
	}
	if b.Len() == 0 {
		return "="
	}
	return b.String()
}

// LocalKey is the record of a local run. The node that runs it is a field,
// not part of the key: a run has one record whichever node picks up its
// provision, so creating the record locks the run across nodes too.
func LocalKey(runID string) string { return PrefixLocal + Token(runID) }

// KubeKey is the record of a kubernetes run.
func KubeKey(runID string) string { return PrefixKube + Token(runID) }

// FinalKey marks a run the scheduler has ended.
func FinalKey(runID string) string { return PrefixFinal + Token(runID) }

// Entry is a record with its key and revision.
type Entry struct {
	Key string
	Rev uint64
	Rec Record
}

// ErrNotFound is returned for a missing record.
var ErrNotFound = errors.New("no record")

// Store reads and writes records; safe for concurrent use. The bucket
// handle comes from the bus (bus.KV), which keeps it: a bucket the server
// lost is declared again and the operation retried, and a watch goes on
// across restarts. The store adds no recovery of its own.
type Store struct {
	bus    *bus.Bus
	bucket string
	now    func() time.Time

	mu       sync.Mutex
	kv       jetstream.KeyValue // nil until Open
	platform string
}

// New builds the store; no I/O until Open.
func New(b *bus.Bus, bucket string) *Store {
	if bucket == "" {
		bucket = Bucket
	}
	return &Store{bus: b, bucket: bucket, now: time.Now}
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
	now := s.now().UnixMilli()
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
	e.Rec.UpdatedMs = s.now().UnixMilli()
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
	if wrongRevision(err) {
		return e, ErrConflict
	}
	if err != nil {
		return e, fmt.Errorf("update record %s: %w", e.Key, err)
	}
	return e, nil
}

// wrongRevision reports a revision-checked write that found another
// revision.
func wrongRevision(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
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
		err := kv.Delete(ctx, key, jetstream.LastRevision(rev))
		if wrongRevision(err) {
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
	b, err := json.Marshal(Final{RunID: runID, State: runState, AtMs: s.now().UnixMilli()})
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

// Leftover is what a backend finds of a run on its node or cluster
// (processes carrying the run's markers, a namespace labelled with it),
// whatever the records say.
type Leftover struct {
	RunID, ExperimentID string
	// Platform is the installation that created it ("" when it carries
	// none: made by an older provisioner).
	Platform string
	// Since is when it was created (its oldest process, the namespace).
	Since time.Time
	// Kafka names the run's topics when it carries them.
	Kafka *events.Kafka
	// Kind is process or namespace; What describes it for logs.
	Kind, What string
	// Terminating: already being removed.
	Terminating bool
}
