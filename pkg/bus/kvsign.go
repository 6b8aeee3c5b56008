package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// How a bus KV handle signs and checks records (sign.go): puts are sealed
// with the writer's key; deletes and purges are markers it publishes itself
// with a sealed body (nats.go's carry none); reads hand out only records a
// writer of the bucket sealed — a record that fails is skipped by watches
// and, for Get, the newest record that holds is read instead, so a forged
// put or delete changes nothing a service sees.

// KV operation header values (nats.go's, which it does not export).
const (
	kvOpHeader = "KV-Operation"
	kvOpPut    = "PUT"
	kvOpDel    = "DEL"
	kvOpPurge  = "PURGE"
)

func opName(op jetstream.KeyValueOp) string {
	switch op {
	case jetstream.KeyValueDelete:
		return kvOpDel
	case jetstream.KeyValuePurge:
		return kvOpPurge
	}
	return kvOpPut
}

// rawOp is a stored message's KV operation: a put carries no header.
func rawOp(h nats.Header) string {
	if op := h.Get(kvOpHeader); op != "" {
		return op
	}
	return kvOpPut
}

// openedEntry is an entry whose value is the record without its seal.
type openedEntry struct {
	jetstream.KeyValueEntry
	value []byte
}

func (e openedEntry) Value() []byte { return e.value }

// open checks e's seal and strips it.
func (k *bucket) openEntry(e jetstream.KeyValueEntry) (jetstream.KeyValueEntry, error) {
	if e == nil {
		return nil, nil
	}
	data, err := k.b.sig.unseal(e.Bucket(), e.Key(), opName(e.Operation()), e.Value())
	if err != nil {
		return nil, err
	}
	return openedEntry{e, data}, nil
}

// rejected logs and counts a record that failed its check.
func (k *bucket) rejected(err error) {
	k.b.m.unverified.WithLabelValues("kv").Inc()
	k.b.logger.Warn("kv record skipped: its signature does not hold", zap.Error(err))
}

// sealPut seals a value put under key.
func (h kvHandle) sealPut(key string, value []byte) ([]byte, error) {
	return h.k.b.sig.seal(h.k.name(), key, kvOpPut, value)
}

// get reads key's newest record that holds.
func (h kvHandle) get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	var e jetstream.KeyValueEntry
	err := h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) (err error) { e, err = kv.Get(ctx, key); return err })
	if h.k.b.sig == nil || (err != nil && !errors.Is(err, jetstream.ErrKeyNotFound)) {
		if err != nil {
			return nil, err
		}
		return h.k.openEntry(e)
	}
	if err == nil {
		oe, oerr := h.k.openEntry(e)
		if oerr == nil {
			return oe, nil
		}
		h.k.rejected(oerr)
		return h.newestThatHolds(ctx, key)
	}
	// Not found: never written, purged, or deleted — by a marker that
	// must hold too.
	var last *jetstream.RawStreamMsg
	err = h.k.do(ctx, func(ctx context.Context, _ jetstream.KeyValue) (err error) {
		last, err = h.k.stream().GetLastMsgForSubject(ctx, "$KV."+h.k.name()+"."+key)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", h.k.name(), key, err)
	}
	_, uerr := h.k.b.sig.unseal(h.k.name(), key, rawOp(last.Header), last.Data)
	if uerr == nil {
		return nil, jetstream.ErrKeyNotFound
	}
	h.k.rejected(uerr)
	return h.newestThatHolds(ctx, key)
}

// stream is the stream behind the bucket, as open last found it.
func (k *bucket) stream() jetstream.Stream {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.st
}

// newestThatHolds walks key's history back to the newest record whose seal
// holds: a put is the value, a delete or purge means none.
func (h kvHandle) newestThatHolds(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	var hist []jetstream.KeyValueEntry
	err := h.k.do(ctx, func(ctx context.Context, kv jetstream.KeyValue) (err error) {
		hist, err = kv.History(ctx, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := len(hist) - 1; i >= 0; i-- {
		oe, oerr := h.k.openEntry(hist[i])
		if oerr != nil {
			continue
		}
		if oe.Operation() != jetstream.KeyValuePut {
			break
		}
		return oe, nil
	}
	return nil, jetstream.ErrKeyNotFound
}

// marker deletes (DEL) or purges (PURGE) key with a sealed marker, at
// revision rev when rev > 0.
func (h kvHandle) marker(ctx context.Context, key, op string, rev uint64) error {
	name := h.k.name()
	data, err := h.k.b.sig.seal(name, key, op, nil)
	if err != nil {
		return err
	}
	msg := nats.NewMsg("$KV." + name + "." + key)
	msg.Data = data
	msg.Header.Set(kvOpHeader, op)
	if op == kvOpPurge {
		msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	var opts []jetstream.PublishOpt
	if rev > 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(rev))
	}
	return h.k.do(ctx, func(ctx context.Context, _ jetstream.KeyValue) error {
		_, err := h.k.b.js.PublishMsg(ctx, msg, opts...)
		return err
	})
}

// DeleteRevision deletes key from kv if its newest revision is still rev
// (nats.go's Delete with LastRevision, which a bus KV handle cannot read
// out of its option: the marker it publishes is sealed).
func DeleteRevision(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) error {
	if h, ok := kv.(kvHandle); ok && h.k.b.sig != nil {
		return h.marker(ctx, key, kvOpDel, rev)
	}
	return kv.Delete(ctx, key, jetstream.LastRevision(rev))
}
