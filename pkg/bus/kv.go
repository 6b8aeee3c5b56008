package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// KV opens bucket with its configuration (BucketConfig): it looks it up
// and waits for the declarer under authentication, and declares it itself
// without. See KVWith for what the bus does for it.
func (b *Bus) KV(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	return b.KVWith(ctx, BucketConfig(bucket))
}

// KVWith opens the bucket cfg describes — creating or updating it when
// this bus declares (admin, or no authentication), looking it up and
// waiting for the declarer otherwise — and keeps it: after a NATS restart
// the bus declares it again, or waits for it again (a memory-stored bucket
// is always lost; a file-stored one with an empty store); an operation
// that finds it gone opens it again and tries once more; and a watch
// started from it goes on — when the bucket had to be re-created, the
// watch starts over from its current values, delivering a delete for every
// key that vanished (and no second nil marker). The returned KeyValue is
// safe for concurrent use.
func (b *Bus) KVWith(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	b.mu.Lock()
	k, ok := b.buckets[cfg.Bucket]
	if !ok {
		k = &bucket{b: b, changed: make(chan struct{})}
		b.buckets[cfg.Bucket] = k
	}
	b.mu.Unlock()
	k.mu.Lock()
	k.cfg = cfg
	k.mu.Unlock()
	if err := k.open(ctx); err != nil {
		return nil, err
	}
	return kvHandle{k}, nil
}

// bucket is a key-value bucket the bus keeps declared.
type bucket struct {
	b       *Bus
	mu      sync.Mutex
	cfg     jetstream.KeyValueConfig
	kv      jetstream.KeyValue
	st      jetstream.Stream // behind kv: its raw messages (kvsign.go)
	created time.Time        // of the stream behind the bucket
	changed chan struct{}    // closed, and replaced, when the bucket was re-created
}

// open creates or updates the bucket and notices when its stream is a new
// one (created since we last looked): the bucket was lost and is empty.
func (k *bucket) open(ctx context.Context) error {
	k.mu.Lock()
	cfg := k.cfg
	k.mu.Unlock()
	var kv jetstream.KeyValue
	var err error
	if k.b.declares("KV_" + cfg.Bucket) {
		kv, err = k.b.js.CreateOrUpdateKeyValue(ctx, cfg)
		if err != nil && replaceable[cfg.Bucket] {
			kv, err = k.replace(ctx, cfg, err)
		}
	} else {
		err = k.b.awaitDeclared(ctx, "kv bucket "+cfg.Bucket, func() error {
			var lerr error
			kv, lerr = k.b.js.KeyValue(ctx, cfg.Bucket)
			if errors.Is(lerr, jetstream.ErrBucketNotFound) {
				return errNotYet
			}
			return lerr
		})
	}
	if err != nil {
		return fmt.Errorf("open kv bucket %s: %w", cfg.Bucket, err)
	}
	st, err := k.b.js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return fmt.Errorf("open kv bucket %s: %w", cfg.Bucket, err)
	}
	created := st.CachedInfo().Created
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kv, k.st = kv, st
	if !k.created.IsZero() && !created.Equal(k.created) {
		k.b.logger.Warn("kv bucket was lost and is declared again, empty", zap.String("bucket", cfg.Bucket))
		k.notifyLocked()
	}
	k.created = created
	return nil
}

// replace deletes and declares again a replaceable bucket whose update
// failed (err) because its storage differs — a membership bucket an older
// version left in memory cannot be moved to a file by an update.
func (k *bucket) replace(ctx context.Context, cfg jetstream.KeyValueConfig, err error) (jetstream.KeyValue, error) {
	st, serr := k.b.js.Stream(ctx, "KV_"+cfg.Bucket)
	if serr != nil || st.CachedInfo().Config.Storage == cfg.Storage {
		return nil, err
	}
	k.b.logger.Warn("replacing a kv bucket to change its storage", zap.String("bucket", cfg.Bucket), zap.Stringer("storage", cfg.Storage))
	if derr := k.b.js.DeleteKeyValue(ctx, cfg.Bucket); derr != nil && !errors.Is(derr, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("replace kv bucket %s: %w", cfg.Bucket, derr)
	}
	return k.b.js.CreateOrUpdateKeyValue(ctx, cfg)
}

// reopen is open after a reconnect: watches start over even when the
// bucket survived, because the server-side consumers behind them did not
// (a restarted server keeps no ephemeral consumer; waiting for a watch to
// notice by missed heartbeats takes tens of seconds).
func (k *bucket) reopen(ctx context.Context) error {
	if err := k.open(ctx); err != nil {
		return err
	}
	k.mu.Lock()
	k.notifyLocked()
	k.mu.Unlock()
	return nil
}

// notifyLocked wakes the bucket's watchers (k.mu held).
func (k *bucket) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

func (k *bucket) current() (jetstream.KeyValue, <-chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kv, k.changed
}

// gone reports whether err says the bucket's stream does not exist.
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// do runs f; when the bucket turns out to be gone it is declared again and
// f runs once more.
func (k *bucket) do(ctx context.Context, f func(context.Context, jetstream.KeyValue) error) error {
	ctx, done := k.b.refusable(ctx, jsAPIOn("KV_"+k.cfg.Bucket))
	defer done()
	kv, _ := k.current()
	err := f(ctx, kv)
	if !gone(err) {
		return refusal(ctx, err)
	}
	if oerr := k.open(ctx); oerr != nil {
		return errors.Join(err, oerr)
	}
	kv, _ = k.current()
	return refusal(ctx, f(ctx, kv))
}

// kvHandle is the jetstream.KeyValue the bus hands out.
type kvHandle struct{ k *bucket }

var _ jetstream.KeyValue = kvHandle{}

func (h kvHandle) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return h.get(ctx, key) // kvsign.go
}

func (h kvHandle) GetRevision(ctx context.Context, key string, revision uint64) (e jetstream.KeyValueEntry, err error) {
	err = h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error {
		e, err = kv.GetRevision(ctx, key, revision)
		return err
	})
	if err != nil {
		return nil, err
	}
	return h.k.openEntry(e)
}

func (h kvHandle) Put(ctx context.Context, key string, value []byte) (rev uint64, err error) {
	if value, err = h.sealPut(key, value); err != nil {
		return 0, err
	}
	err = h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error { rev, err = kv.Put(ctx, key, value); return err })
	return rev, err
}

func (h kvHandle) PutString(ctx context.Context, key string, value string) (rev uint64, err error) {
	return h.Put(ctx, key, []byte(value))
}

func (h kvHandle) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (rev uint64, err error) {
	if value, err = h.sealPut(key, value); err != nil {
		return 0, err
	}
	err = h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error {
		rev, err = kv.Create(ctx, key, value, opts...)
		return err
	})
	return rev, err
}

func (h kvHandle) Update(ctx context.Context, key string, value []byte, revision uint64) (rev uint64, err error) {
	if value, err = h.sealPut(key, value); err != nil {
		return 0, err
	}
	err = h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error {
		rev, err = kv.Update(ctx, key, value, revision)
		return err
	})
	return rev, err
}

// Delete and Purge publish sealed markers on a signing bus (kvsign.go);
// their options cannot be read out of nats.go's, so none is taken there
// (DeleteRevision is Delete with LastRevision).
func (h kvHandle) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if h.k.b.sig != nil {
		if len(opts) > 0 {
			return fmt.Errorf("delete %s/%s: a signed bucket takes no delete options (bus.DeleteRevision deletes at a revision)", h.k.name(), key)
		}
		return h.marker(ctx, key, kvOpDel, 0)
	}
	return h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error { return kv.Delete(ctx, key, opts...) })
}

func (h kvHandle) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if h.k.b.sig != nil {
		if len(opts) > 0 {
			return fmt.Errorf("purge %s/%s: a signed bucket takes no purge options", h.k.name(), key)
		}
		return h.marker(ctx, key, kvOpPurge, 0)
	}
	return h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error { return kv.Purge(ctx, key, opts...) })
}

func (h kvHandle) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return h.k.watch(ctx, func(kv jetstream.KeyValue) (jetstream.KeyWatcher, error) { return kv.Watch(ctx, keys, opts...) })
}

func (h kvHandle) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return h.k.watch(ctx, func(kv jetstream.KeyValue) (jetstream.KeyWatcher, error) { return kv.WatchAll(ctx, opts...) })
}

// WatchFiltered hands nats.go a fresh copy of keys at every (re)start:
// nats.go prefixes the keys in place, so a watch started again with the same
// slice would follow "$KV.<bucket>.$KV.<bucket>.<key>" — up, and silent.
func (h kvHandle) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	keys = slices.Clone(keys)
	return h.k.watch(ctx, func(kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
		// A copy each time: nats.go rewrites the slice it is given (into
		// subjects), and a restarted watch must start from the keys.
		return kv.WatchFiltered(ctx, slices.Clone(keys), opts...)
	})
}

func (h kvHandle) Keys(ctx context.Context, opts ...jetstream.WatchOpt) (keys []string, err error) {
	err = h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error { keys, err = kv.Keys(ctx, opts...); return err })
	return keys, err
}

func (h kvHandle) ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (l jetstream.KeyLister, err error) {
	// A lister reads on after do returns: it lives on the caller's ctx, not
	// on do's (which ends with do and would stop it at once).
	err = h.k.do(ctx, func(_ context.Context, kv jetstream.KeyValue) error { l, err = kv.ListKeys(ctx, opts...); return err })
	return l, err
}

func (h kvHandle) ListKeysFiltered(ctx context.Context, filters ...string) (l jetstream.KeyLister, err error) {
	err = h.k.do(ctx, func(_ context.Context, kv jetstream.KeyValue) error { // the caller's ctx: see ListKeys
		l, err = kv.ListKeysFiltered(ctx, filters...)
		return err
	})
	return l, err
}

func (h kvHandle) History(ctx context.Context, key string, opts ...jetstream.WatchOpt) (es []jetstream.KeyValueEntry, err error) {
	err = h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error {
		es, err = kv.History(ctx, key, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := es[:0]
	for _, e := range es {
		oe, oerr := h.k.openEntry(e)
		if oerr != nil {
			h.k.rejected(oerr)
			continue
		}
		out = append(out, oe)
	}
	if len(out) == 0 {
		return nil, jetstream.ErrKeyNotFound
	}
	return out, nil
}

func (h kvHandle) Bucket() string { return h.k.name() }

func (k *bucket) name() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cfg.Bucket
}

func (h kvHandle) PurgeDeletes(ctx context.Context, opts ...jetstream.KVPurgeOpt) error {
	return h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error { return kv.PurgeDeletes(ctx, opts...) })
}

func (h kvHandle) Status(ctx context.Context) (st jetstream.KeyValueStatus, err error) {
	err = h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) error { st, err = kv.Status(ctx); return err })
	return st, err
}

// watch starts a watcher that outlives the loss of its bucket.
func (k *bucket) watch(ctx context.Context, start func(jetstream.KeyValue) (jetstream.KeyWatcher, error)) (jetstream.KeyWatcher, error) {
	var inner jetstream.KeyWatcher
	if err := k.do(ctx, func(_ context.Context, kv jetstream.KeyValue) (err error) { inner, err = start(kv); return err }); err != nil {
		return nil, err
	}
	_, changed := k.current()
	w := &watcher{k: k, start: start, updates: make(chan jetstream.KeyValueEntry, 256), stop: make(chan struct{})}
	go w.run(ctx, inner, changed)
	return w, nil
}

// watcher forwards an inner watcher's entries and, when the bucket is
// re-created, replaces it: a watch of a lost bucket would otherwise stop
// or, resuming at its old sequence, miss the new bucket's first entries.
type watcher struct {
	k        *bucket
	start    func(jetstream.KeyValue) (jetstream.KeyWatcher, error)
	updates  chan jetstream.KeyValueEntry
	stop     chan struct{}
	stopOnce sync.Once
}

func (w *watcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

func (w *watcher) Stop() error {
	w.stopOnce.Do(func() { close(w.stop) })
	return nil
}

func (w *watcher) run(ctx context.Context, inner jetstream.KeyWatcher, changed <-chan struct{}) {
	l := &watchLoop{w: w, ctx: ctx, name: w.k.name(), inner: inner, changed: changed, keys: map[string]bool{}}
	defer close(w.updates)
	defer func() {
		if l.inner != nil {
			_ = l.inner.Stop()
		}
	}()
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		case <-l.changed:
			if !l.restart() {
				return
			}
		case e, ok := <-l.inner.Updates():
			if !ok {
				// The inner watch ended without us stopping it (it could
				// not re-create its consumer): start over, and compare.
				if !l.sleep(100*time.Millisecond) || !l.restart() {
					return
				}
				continue
			}
			if !l.forward(e) {
				return
			}
		}
	}
}

// watchLoop is one watcher's run: the inner watch it forwards from, and
// the keys it has passed on, to tell which a re-created bucket lost. Its
// methods return false when the watcher is stopped meanwhile.
type watchLoop struct {
	w       *watcher
	ctx     context.Context
	name    string
	inner   jetstream.KeyWatcher // nil once stopped for good
	changed <-chan struct{}      // closed when the bucket handle is replaced
	keys    map[string]bool      // live keys passed on
	// resync holds the keys seen since the inner watch restarted, until
	// its initial values end; nil otherwise.
	resync   map[string]bool
	initDone bool
}

func (l *watchLoop) sleep(d time.Duration) bool {
	select {
	case <-l.w.stop:
		return false
	case <-l.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (l *watchLoop) send(e jetstream.KeyValueEntry) bool {
	select {
	case l.w.updates <- e:
		return true
	case <-l.w.stop:
	case <-l.ctx.Done():
	}
	return false
}

// restart replaces the inner watch, backing off until it starts, and
// begins a resync.
func (l *watchLoop) restart() bool {
	_ = l.inner.Stop()
	delay := 100 * time.Millisecond
	for {
		kv, ch := l.w.k.current()
		next, err := l.w.start(kv)
		if err == nil {
			l.inner, l.changed, l.resync = next, ch, map[string]bool{}
			return true
		}
		l.w.k.b.logger.Warn("restart kv watch failed; retrying", zap.String("bucket", l.name), zap.Error(err), zap.Duration("delay", delay))
		if !l.sleep(delay) {
			l.inner = nil // stopped above
			return false
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// forward passes an update on and keeps track of the live keys.
func (l *watchLoop) forward(e jetstream.KeyValueEntry) bool {
	if e == nil {
		return l.initialValuesDone()
	}
	oe, err := l.w.k.openEntry(e)
	if err != nil {
		l.w.k.rejected(err) // a forged put or delete: the key keeps what it had
		return true
	}
	e = oe
	if e.Operation() == jetstream.KeyValuePut {
		l.keys[e.Key()] = true
		if l.resync != nil {
			l.resync[e.Key()] = true
		}
	} else {
		delete(l.keys, e.Key())
	}
	return l.send(e)
}

// initialValuesDone handles the marker ending an inner watch's initial
// values: the first one is passed on; after a restart, the keys not seen
// again are passed on as deleted, lost with their bucket.
func (l *watchLoop) initialValuesDone() bool {
	if l.resync != nil {
		for key := range l.keys {
			if !l.resync[key] {
				delete(l.keys, key)
				if !l.send(deletedEntry{bucket: l.name, key: key}) {
					return false
				}
			}
		}
		l.resync = nil
		return true
	}
	if l.initDone {
		return true
	}
	l.initDone = true
	return l.send(nil)
}

// deletedEntry tells a watcher that a key is gone with its lost bucket.
type deletedEntry struct{ bucket, key string }

// KeyLost reports whether e is a delete that a watch of a bus KV handle
// made up rather than one the server recorded: the key was there before
// the watch had to start over and is not there now, with no delete or
// purge of its own — its bucket was lost and declared again empty (a NATS
// restart with an empty store, a memory bucket after any restart). Nobody
// deleted the key, so a reader that knows its value from elsewhere (the
// energy collector its assignments, from its own consumer) may put it back
// instead of forgetting it.
func KeyLost(e jetstream.KeyValueEntry) bool {
	_, ok := e.(deletedEntry)
	return ok
}

func (d deletedEntry) Bucket() string                  { return d.bucket }
func (d deletedEntry) Key() string                     { return d.key }
func (d deletedEntry) Value() []byte                   { return nil }
func (d deletedEntry) Revision() uint64                { return 0 }
func (d deletedEntry) Created() time.Time              { return time.Time{} }
func (d deletedEntry) Delta() uint64                   { return 0 }
func (d deletedEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValueDelete }
