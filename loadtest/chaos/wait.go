package chaos

import (
	"context"
	"time"
)

// poll calls cond every `every` until it holds (true), ctx ends (false)
// or within passes (cond's last answer, called once more at the deadline).
func poll(ctx context.Context, within, every time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
}

// confirmed re-reads, every half second for d, what is left of first and
// returns what every read still found: a leftover or a lost record is
// confirmed only when independent reads over d all see it. It returns as
// soon as nothing is left, and nothing when ctx ends first (no
// confirmation then).
func confirmed[K comparable](ctx context.Context, d time.Duration, first []K, read func() []K) map[K]bool {
	left := make(map[K]bool, len(first))
	for _, k := range first {
		left[k] = true
	}
	poll(ctx, d, 500*time.Millisecond, func() bool {
		now := map[K]bool{}
		for _, k := range read() {
			now[k] = true
		}
		for k := range left {
			if !now[k] {
				delete(left, k)
			}
		}
		return len(left) == 0
	})
	if ctx.Err() != nil {
		return nil
	}
	return left
}
