package loadgen

import (
	"cmp"
	"math/bits"
	"slices"
	"time"
)

// Range is the contiguous run of sensor indices [Lo, Hi).
type Range struct {
	Lo int `json:"lo"`
	Hi int `json:"hi"`
}

// Len is the number of sensors in r.
func (r Range) Len() int { return max(0, r.Hi-r.Lo) }

// Phase is sensor s's offset within the period in the schedule of a load of
// n sensors with this seed. The n phases are evenly spaced — sensor s gets
// slot perm(s) of n, perm a pseudo-random permutation — so every window of
// the schedule holds its exact share of records (a second holds the rate
// ±1, whatever the period), while each sensor's offset still looks random,
// as Theodolite's are. Every instance computes the same phases, so the
// instances sharing a load together follow exactly the schedule one
// instance would.
func Phase(seed uint64, s, n int, period time.Duration) time.Duration {
	hi, lo := bits.Mul64(permute(seed, uint64(s), uint64(n)), uint64(period))
	q, _ := bits.Div64(hi, lo, uint64(n))
	return time.Duration(q)
}

// permute is a bijection of [0, n) keyed by seed: a 4-round Feistel network
// on the smallest even number of bits covering n, cycle-walking values ≥ n
// back into range (fewer than 4 steps on average).
func permute(seed, x, n uint64) uint64 {
	if n <= 1 {
		return 0
	}
	half := (bits.Len64(n-1) + 1) / 2
	mask := uint64(1)<<half - 1
	for {
		l, r := x>>half, x&mask
		for round := range uint64(4) {
			l, r = r, l^(splitmix64(seed^(round<<56)^r)&mask)
		}
		x = l<<half | r
		if x < n {
			return x
		}
	}
}

// splitmix64 is a strong 64-bit mixer (Steele, Lea, Flood 2014).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Pacer schedules an open UC-3 workload over some sensors: each emits once
// per period at its own phase. It answers how many records are due before an
// elapsed time and which sensor the j-th record belongs to, without
// per-record timers. Records are numbered from 0 in schedule order.
type Pacer struct {
	period time.Duration
	phases []time.Duration // sorted
	order  []int32         // order[k] = sensor of the k-th phase
}

// NewPacer schedules the sensors of ranges, out of n, over period with the
// phases of seed.
func NewPacer(ranges []Range, n int, period time.Duration, seed uint64) *Pacer {
	type ps struct {
		phase  time.Duration
		sensor int32
	}
	k := 0
	for _, r := range ranges {
		k += r.Len()
	}
	all := make([]ps, 0, k)
	for _, r := range ranges {
		for s := r.Lo; s < r.Hi; s++ {
			all = append(all, ps{Phase(seed, s, n, period), int32(s)})
		}
	}
	slices.SortFunc(all, func(a, b ps) int {
		if c := cmp.Compare(a.phase, b.phase); c != 0 {
			return c
		}
		return cmp.Compare(a.sensor, b.sensor)
	})
	p := &Pacer{period: period, phases: make([]time.Duration, k), order: make([]int32, k)}
	for i, x := range all {
		p.phases[i], p.order[i] = x.phase, x.sensor
	}
	return p
}

// Sensors is the number of sensors scheduled.
func (p *Pacer) Sensors() int { return len(p.phases) }

// Rate is the scheduled records per second.
func (p *Pacer) Rate() float64 { return float64(len(p.phases)) / p.period.Seconds() }

// Due is the number of records due before elapsed: those at [0, elapsed).
func (p *Pacer) Due(elapsed time.Duration) int64 {
	n := int64(len(p.phases))
	if elapsed <= 0 || n == 0 {
		return 0
	}
	full := int64(elapsed / p.period)
	k, _ := slices.BinarySearch(p.phases, elapsed%p.period)
	return full*n + int64(k)
}

// Sensor is the sensor of the j-th record.
func (p *Pacer) Sensor(j int64) int { return int(p.order[j%int64(len(p.order))]) }

// DueAt is when the j-th record is due.
func (p *Pacer) DueAt(j int64) time.Duration {
	n := int64(len(p.phases))
	return time.Duration(j/n)*p.period + p.phases[j%n]
}

// throttle bounds catching up after a stall. Records on schedule (due within
// LateTolerance) always go; older ones — a backlog — take tokens from a
// bucket filled at the spare (MaxCatchUp − 1) × the scheduled rate and
// holding at most burst tokens, so the total stays within MaxCatchUp × the
// rate while catching up. A step less than LateTolerance after the last is
// a delayed tick, not a stall: the tokens of the whole gap are kept, even
// beyond burst. Capped at burst, a process starved of CPU (a step every
// 60 ms) caught up at a third of the allowed rate, and a backlog built
// mid-load could still be there at the end, counted missed
// (TestCatchUpAfterStall, its 60 ms steps).
type throttle struct {
	rate      float64 // tokens per second
	burst     float64
	tolerance time.Duration
	tokens    float64
	last      time.Time
}

func newThrottle(schedRate, factor float64, burst, tolerance time.Duration, now time.Time) *throttle {
	t := &throttle{last: now, tolerance: tolerance}
	t.setRate(schedRate, factor, burst)
	t.tokens = t.burst
	return t
}

// setRate changes the scheduled rate (the instance's share changed).
func (t *throttle) setRate(schedRate, factor float64, burst time.Duration) {
	t.rate = schedRate * (factor - 1)
	t.burst = max(1, t.rate*burst.Seconds())
	t.tokens = min(t.tokens, t.burst)
}

// allow returns how many of want records may go out at now, onTime of which
// are on schedule, and takes tokens for the others.
func (t *throttle) allow(now time.Time, want, onTime int64) int64 {
	if dt := now.Sub(t.last); dt > 0 {
		limit := t.burst
		if dt <= t.tolerance {
			limit = max(limit, dt.Seconds()*t.rate)
		}
		t.tokens = min(limit, t.tokens+dt.Seconds()*t.rate)
		t.last = now
	}
	onTime = min(max(onTime, 0), want)
	late := min(want-onTime, int64(t.tokens))
	if late < 0 {
		late = 0
	}
	t.tokens -= float64(late)
	return onTime + late
}
