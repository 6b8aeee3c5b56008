package loadgen

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// publishQueue publishes messages in order from its own goroutine, retrying
// each (with its fixed message id) for up to publishRetryFor, so that a
// NATS hiccup neither blocks the caller nor loses the report.
type publishQueue struct {
	bus    *bus.Bus
	logger *zap.Logger
	ch     chan queuedMsg
	done   chan struct{}
	stop   context.CancelFunc
	ctx    context.Context
}

type queuedMsg struct {
	m  events.Message
	id string
}

const publishRetryFor = 30 * time.Second

func newPublishQueue(b *bus.Bus, logger *zap.Logger) *publishQueue {
	ctx, cancel := context.WithCancel(context.Background())
	q := &publishQueue{bus: b, logger: logger, ch: make(chan queuedMsg, 256), done: make(chan struct{}), stop: cancel, ctx: ctx}
	go q.run()
	return q
}

// add queues m; when the queue is full (NATS down for long) the oldest
// report is dropped: the series is cumulative, later reports cover it.
func (q *publishQueue) add(m events.Message, id string) {
	for {
		select {
		case q.ch <- queuedMsg{m, id}:
			return
		default:
		}
		select {
		case old := <-q.ch:
			q.logger.Warn("progress report dropped: the queue is full", zap.String("id", old.id))
		default:
		}
	}
}

func (q *publishQueue) run() {
	defer close(q.done)
	for qm := range q.ch {
		deadline := time.Now().Add(publishRetryFor)
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(q.ctx, 5*time.Second)
			err := q.bus.Publish(pctx, qm.m, qm.id)
			cancel()
			if err == nil {
				break
			}
			if q.ctx.Err() != nil || time.Now().After(deadline) {
				q.logger.Warn("publish progress report failed", zap.String("id", qm.id), zap.Error(err))
				break
			}
			sleep(q.ctx, min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
		}
	}
}

// close publishes what is queued, waiting at most within, then gives up.
func (q *publishQueue) close(within time.Duration) {
	close(q.ch)
	select {
	case <-q.done:
	case <-time.After(within):
		q.stop()
		<-q.done
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
