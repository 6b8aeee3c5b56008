package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
)

// Only admin declares streams and buckets when NATS authenticates its
// users (Declares): a stream's configuration can re-route any subject into
// any other (republish, sources, subject transforms), so a service that
// may create or update even its own bucket may forge any event or mint an
// API token. Their configuration therefore lives here, beside the
// lifecycle streams, and one declarer — `greenflow nats declare`, the dev
// stack, a cluster's nats-topology Deployment — declares them all, as
// admin; the services look them up and wait for them (Bus.KV). Without
// authentication (tests) every bus declares what it uses itself, with the
// same configuration.

// Store limits: a service's seed may write its own bucket and (dead
// letters) the dead-letter stream as much as it likes, so each is bounded —
// filling one hurts that bucket's service, never the JetStream store the
// others share. The server reserves each bound out of its store when the
// stream is made, so they are modest. The lifecycle streams have none: a
// full one would refuse or drop a run's events; a service can flood only
// its own event types there (README, threat model).
const (
	bucketBytes        = 64 << 20
	schedulerBytes     = 1 << 30 // room for many thousands of experiment records, 5 revisions each (not measured)
	deadLetterBytes    = 256 << 20
	triggerStreamBytes = 64 << 20
)

// buckets is every bucket's configuration, by name.
var buckets = map[string]jetstream.KeyValueConfig{
	BucketScheduler:   {Bucket: BucketScheduler, History: 5, MaxBytes: schedulerBytes, Storage: jetstream.FileStorage, Description: "Experiments, runs and armed triggers (the scheduler)"},
	BucketTokens:      {Bucket: BucketTokens, MaxBytes: bucketBytes, History: 1, Storage: jetstream.FileStorage, Description: "API tokens, hashed (pkg/auth)"},
	BucketProvisioner: {Bucket: BucketProvisioner, MaxBytes: bucketBytes, History: 5, Storage: jetstream.FileStorage, Description: "The platform id and provisioned runs (the provisioner)"},
	// Both load-generator buckets in file storage: a NATS server restart
	// must keep the plans and checkpoints, and a membership bucket that
	// vanished with a restart left every later load dead-lettered.
	BucketLoadMembers: {Bucket: BucketLoadMembers, MaxBytes: bucketBytes, TTL: time.Minute, History: 1, Storage: jetstream.FileStorage,
		Description: "Live load-generator instances (heartbeats; liveness is judged by their age)"},
	BucketLoadRuns: {Bucket: BucketLoadRuns, MaxBytes: bucketBytes, TTL: 48 * time.Hour, History: 1, Storage: jetstream.FileStorage,
		Description: "Load plans (key ranges per instance) and per-instance checkpoints"},
	BucketCollectors: {Bucket: BucketCollectors, MaxBytes: bucketBytes, History: 5, Storage: jetstream.FileStorage, Description: "Energy-collector sources, assignments and locks"},
	BucketTestbed:    {Bucket: BucketTestbed, MaxBytes: bucketBytes, History: 5, Storage: jetstream.FileStorage, Description: "Testbed reservations (greenflow testbed)"},
}

// replaceable buckets hold nothing a restart needs (heartbeats): one left
// by an older version with a configuration that cannot be updated (memory
// storage) is deleted and declared again.
var replaceable = map[string]bool{BucketLoadMembers: true}

// BucketConfig is bucket name's configuration; a bucket this package does
// not know (a test's) keeps 5 revisions per key in a file.
func BucketConfig(name string) jetstream.KeyValueConfig {
	if c, ok := buckets[name]; ok {
		return c
	}
	return jetstream.KeyValueConfig{Bucket: name, History: 5, Storage: jetstream.FileStorage}
}

// Buckets names every bucket DeclareTopology declares.
func Buckets() []string {
	out := make([]string, 0, len(buckets))
	for name := range buckets {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// DeclareTopology declares every stream and bucket on b, which must
// declare them (admin's, or a bus on a NATS without authentication), and
// the trigger stream when the scheduler has armed subject triggers. b
// keeps them from then on: after a reconnect — a server restarted with an
// empty store — it declares them again (keepTopology). Triggers armed
// later are FollowTriggers's.
func DeclareTopology(ctx context.Context, b *Bus) error {
	if !b.declares(StreamLifecycle) {
		return fmt.Errorf("declare the nats topology as %q: only %q may declare streams and buckets", b.producer, UserAdmin)
	}
	// The lifecycle, dead-letter, collectors' and watchers' streams are
	// declared by bus.New already.
	var errs []error
	for _, name := range Buckets() {
		if _, err := b.KV(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	kv, err := b.KV(ctx, BucketScheduler)
	if err != nil {
		return err
	}
	keys, err := kv.ListKeysFiltered(ctx, TriggerKeyPrefix+">")
	if err != nil {
		return fmt.Errorf("list armed triggers in kv bucket %s: %w", BucketScheduler, err)
	}
	t := triggerSubjects{}
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read armed trigger %s: %w", key, err)
		}
		t.put(b.logger, key, e.Value())
	}
	_ = keys.Stop()
	return t.declare(ctx, b)
}

// TriggerKeyPrefix starts the scheduler's keys of armed triggers in
// BucketScheduler; a record is JSON whose "subject" field, when not empty,
// is a subject the trigger stream must capture.
const TriggerKeyPrefix = "trigger."

// TriggerStreamConfig is the trigger stream capturing subjects.
func TriggerStreamConfig(subjects []string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: StreamTriggers, Description: "Events that start experiments from templates", Subjects: subjects,
		MaxAge: 7 * 24 * time.Hour, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute,
		MaxBytes: triggerStreamBytes, Discard: jetstream.DiscardNew,
	}
}

// FollowTriggers keeps the trigger stream capturing the subjects of the
// scheduler's armed triggers until ctx ends: the scheduler may not update
// a stream, so it records a trigger and waits until the declarer (this)
// has added its subject. b must declare (DeclareTopology).
func FollowTriggers(ctx context.Context, b *Bus) error {
	kv, err := b.KV(ctx, BucketScheduler)
	if err != nil {
		return ended(ctx, err)
	}
	w, err := kv.Watch(ctx, TriggerKeyPrefix+">")
	if err != nil {
		return ended(ctx, fmt.Errorf("watch armed triggers in kv bucket %s: %w", BucketScheduler, err))
	}
	defer func() { _ = w.Stop() }()
	t := triggerSubjects{}
	synced := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			switch {
			case e == nil:
				synced = true
			case e.Operation() == jetstream.KeyValuePut:
				t.put(b.logger, e.Key(), e.Value())
			default:
				delete(t, e.Key())
			}
			if !synced {
				continue
			}
			if err := t.declare(ctx, b); err != nil {
				// The next change tries again; after a reconnect the bus
				// declares the last configuration it was given.
				b.logger.Warn("the trigger stream could not be updated", zap.Error(err))
			}
		}
	}
}

// ended is err unless ctx ended meanwhile: stopping is no failure.
func ended(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// triggerSubjects are the armed triggers' subjects, by key.
type triggerSubjects map[string]string

// put records the subject of the trigger record at key, unless it may
// not be captured: the server's own ($JS, $KV…) and inbox subjects would
// hand the scheduler, which consumes the trigger stream, what it may not
// read (GreenFlow's own, gf.>, the specs refuse already, and the server
// refuses a subject another stream captures).
func (t triggerSubjects) put(logger *zap.Logger, key string, value []byte) {
	var rec struct {
		Subject string `json:"subject"`
	}
	if err := json.Unmarshal(value, &rec); err != nil {
		logger.Warn("armed trigger record not understood; its subject is not captured", zap.String("key", key), zap.Error(err))
		delete(t, key)
		return
	}
	if err := triggerSubjectOK(rec.Subject); err != nil {
		logger.Warn("armed trigger's subject not captured", zap.String("key", key), zap.Error(err))
		delete(t, key)
		return
	}
	t[key] = rec.Subject
}

func triggerSubjectOK(s string) error { return events.CheckTriggerSubject(s) }

// declare makes the trigger stream capture the subjects (none: nothing).
func (t triggerSubjects) declare(ctx context.Context, b *Bus) error {
	subjects := make([]string, 0, len(t))
	for _, s := range t {
		if !slices.Contains(subjects, s) {
			subjects = append(subjects, s)
		}
	}
	if len(subjects) == 0 {
		return nil
	}
	slices.Sort(subjects)
	b.mu.Lock()
	cur, ok := b.streams[StreamTriggers]
	b.mu.Unlock()
	if ok && slices.Equal(cur.Subjects, subjects) {
		return nil
	}
	if err := b.DeclareStream(ctx, TriggerStreamConfig(subjects)); err != nil {
		return fmt.Errorf("trigger stream for %v: %w", subjects, err)
	}
	return nil
}
