package testenv

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// Recorder keeps the lifecycle messages of some types published since a
// given time, for a test to look up or wait for: the one event log of the
// test harnesses that only need the messages themselves.
type Recorder struct {
	watch *Running
	mu    sync.Mutex
	got   []events.Message
}

// Record watches b for messages of types published since since, until the
// end of the test.
func Record(tb testing.TB, b *bus.Bus, since time.Time, types ...events.Type) *Recorder {
	tb.Helper()
	r := &Recorder{}
	r.watch = Go(tb, context.Background(), func(ctx context.Context) error {
		return b.Watch(ctx, since, types, func(d bus.Delivery) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.got = append(r.got, d.Msg)
		})
	})
	return r
}

// All returns the recorded messages of type typ about run runID, in the
// order they were published.
func (r *Recorder) All(typ events.Type, runID string) []events.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Message
	for _, m := range r.got {
		if _, id := m.IDs(); m.MessageType() == typ && id == runID {
			out = append(out, m)
		}
	}
	return out
}

// First returns the first recorded message of type typ about run runID,
// or nil.
func (r *Recorder) First(typ events.Type, runID string) events.Message {
	if all := r.All(typ, runID); len(all) > 0 {
		return all[0]
	}
	return nil
}

// Wait waits up to within for a message of type typ about run runID and
// returns the first; the test fails, naming what it waited for, when none
// comes or the watch itself failed.
func (r *Recorder) Wait(tb testing.TB, within time.Duration, typ events.Type, runID string) events.Message {
	tb.Helper()
	var got events.Message
	Eventually(tb, within, string(typ)+" of run "+runID, func() bool {
		if err := r.watch.Err(); err != nil {
			tb.Fatalf("watching for %s of run %s: %v", typ, runID, err)
		}
		got = r.First(typ, runID)
		return got != nil
	})
	return got
}
