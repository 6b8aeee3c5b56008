package testenv

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// StallWatch measures how starved this process is from now until the test
// ends: a goroutine wakes every 10 ms, and the returned function gives the
// longest it woke late so far. Whatever runs in the process (an in-process
// load generator, the dev stack's collector) went through the same stalls,
// so a test can tell a figure a starved machine could not give from one
// the code got wrong — and ask for the account the product owes a starved
// machine instead (a shortfall counted, a gap flagged).
func StallWatch(tb testing.TB) func() time.Duration {
	const every = 10 * time.Millisecond
	var longest atomic.Int64 // ns
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	tick := time.NewTicker(every)
	last := time.Now() // from now, though the goroutine may start later
	go func() {
		defer close(done)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				now := time.Now() // the wake-up, not the tick's due time
				if late := now.Sub(last) - every; int64(late) > longest.Load() {
					longest.Store(int64(late))
				}
				last = now
			}
		}
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return func() time.Duration { return time.Duration(longest.Load()) }
}
