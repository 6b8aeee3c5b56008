package bus

import (
	"context"
	"hash/fnv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// workers handle a consumer's messages on several goroutines, each run's
// (by Gf-Run-Id) on the same one, in order: a long handler of one run (a
// provision waiting for readiness) does not hold up another run's.
type workers struct {
	queues []chan queued
	// keep extends a queued message's ack deadline until a worker takes
	// it, so that waiting behind another run's long handler does not get
	// it redelivered (and run twice, or out of order).
	keep   *keeper
	wg     sync.WaitGroup
	mu     sync.RWMutex // held for writing only to close the queues
	closed bool
}

// queued is a message waiting for its worker.
type queued struct {
	msg     jetstream.Msg
	release func() // ends keep's hold on msg
}

// startWorkers starts n workers calling handle.
func startWorkers(n int, keep *keeper, handle func(jetstream.Msg)) *workers {
	w := &workers{queues: make([]chan queued, n), keep: keep}
	for i := range w.queues {
		q := make(chan queued, 64)
		w.queues[i] = q
		w.wg.Go(func() {
			for item := range q {
				item.release() // handle holds it from here
				handle(item.msg)
			}
		})
	}
	return w
}

// dispatch queues msg for its run's worker; once the workers stop, or
// while ctx ends, it is Nak'ed (redelivered later, or after a restart).
func (w *workers) dispatch(ctx context.Context, msg jetstream.Msg) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(msg.Headers().Get(HeaderRun)))
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		_ = msg.Nak()
		return
	}
	item := queued{msg: msg, release: w.keep.hold(msg)}
	select {
	case w.queues[h.Sum32()%uint32(len(w.queues))] <- item:
	case <-ctx.Done():
		item.release()
		_ = msg.Nak()
	}
}

// stop closes the queues and waits for the workers to finish what is
// queued.
func (w *workers) stop() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		for _, q := range w.queues {
			close(q)
		}
	}
	w.mu.Unlock()
	w.wg.Wait()
}
