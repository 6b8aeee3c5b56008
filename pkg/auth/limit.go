package auth

import (
	"math"
	"sync"
	"time"
)

// bucket is a token bucket: it holds up to burst requests and refills at
// rate per second.
type bucket struct {
	tokens float64
	last   time.Time
}

// take spends one request from b at now when it can; otherwise it returns
// how long until one is available.
func (b *bucket) take(now time.Time, rate float64, burst int) (bool, time.Duration) {
	if b.last.IsZero() {
		b.tokens, b.last = float64(burst), now
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(burst), b.tokens+el*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// full reports whether b has refilled completely at now (it can be
// forgotten: a new bucket starts full).
func (b *bucket) full(now time.Time, rate float64, burst int) bool {
	return b.tokens+now.Sub(b.last).Seconds()*rate >= float64(burst)
}

// limiter keeps one bucket per client key (a token id, or an address for
// requests without a valid token).
type limiter struct {
	rate  float64
	burst int
	mu    sync.Mutex
	m     map[string]*bucket
}

// maxClients bounds the buckets kept; beyond it the full ones (which a
// new bucket would equal) are forgotten.
const maxClients = 10000

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: burst, m: map[string]*bucket{}}
}

// allow spends one request of key at now, or says how long to wait.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxClients {
			for k, o := range l.m {
				if o.full(now, l.rate, l.burst) {
					delete(l.m, k)
				}
			}
		}
		b = &bucket{}
		l.m[key] = b
	}
	return b.take(now, l.rate, l.burst)
}
