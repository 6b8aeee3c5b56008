package bus

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// keeper extends the ack deadline of every message a consumer holds —
// being handled, or queued for a busy worker — every third of the ack
// wait, from one ticker per consumer: a handler that takes longer than the
// ack wait (a provision waiting for readiness) keeps its message, and a
// consumer that died lets it go within one ack wait. The hot path only
// adds and removes a map entry; no goroutine or timer per message.
type keeper struct {
	every    time.Duration
	extended prometheus.Counter
	mu       sync.Mutex
	held     map[uint64]jetstream.Msg
	next     uint64
	done     chan struct{}
	stopped  chan struct{}
}

// startKeeper starts a consumer's keeper; stop ends it.
func startKeeper(every time.Duration, extended prometheus.Counter) *keeper {
	k := &keeper{every: every, extended: extended, held: map[uint64]jetstream.Msg{}, done: make(chan struct{}), stopped: make(chan struct{})}
	go k.run()
	return k
}

// hold keeps msg until the returned release is called.
func (k *keeper) hold(msg jetstream.Msg) (release func()) {
	k.mu.Lock()
	k.next++
	id := k.next
	k.held[id] = msg
	k.mu.Unlock()
	return func() {
		k.mu.Lock()
		delete(k.held, id)
		k.mu.Unlock()
	}
}

func (k *keeper) run() {
	defer close(k.stopped)
	t := time.NewTicker(k.every)
	defer t.Stop()
	var batch []jetstream.Msg
	for {
		select {
		case <-k.done:
			return
		case <-t.C:
		}
		batch = batch[:0]
		k.mu.Lock()
		for _, msg := range k.held {
			batch = append(batch, msg)
		}
		k.mu.Unlock()
		// Outside the lock: each is a publish to the server.
		for _, msg := range batch {
			_ = msg.InProgress()
			k.extended.Inc()
		}
	}
}

// stop ends the keeper; messages still held are no longer extended.
func (k *keeper) stop() {
	close(k.done)
	<-k.stopped
}
