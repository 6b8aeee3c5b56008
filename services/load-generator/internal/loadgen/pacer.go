package loadgen

import (
	"math/rand/v2"
	"sort"
	"time"
)

// Pacer schedules an open UC-3 workload: n sensors, each emitting once per
// period at its own random phase in [0, period). It answers how many records
// are due after an elapsed time and which sensor the j-th record belongs to,
// without per-record timers.
type Pacer struct {
	period time.Duration
	phases []time.Duration // sorted
	order  []int           // order[k] = sensor of the k-th phase
}

// NewPacer spreads n sensors over period with phases drawn from rng.
func NewPacer(n int, period time.Duration, rng *rand.Rand) *Pacer {
	type ps struct {
		phase  time.Duration
		sensor int
	}
	all := make([]ps, n)
	for i := range all {
		all[i] = ps{time.Duration(rng.Int64N(int64(period))), i}
	}
	sort.Slice(all, func(a, b int) bool { return all[a].phase < all[b].phase })
	p := &Pacer{period: period, phases: make([]time.Duration, n), order: make([]int, n)}
	for i, x := range all {
		p.phases[i], p.order[i] = x.phase, x.sensor
	}
	return p
}

// Due is the number of records due in [0, elapsed].
func (p *Pacer) Due(elapsed time.Duration) int64 {
	if elapsed < 0 {
		return 0
	}
	n := int64(len(p.phases))
	full := int64(elapsed / p.period)
	rem := elapsed % p.period
	k := sort.Search(len(p.phases), func(i int) bool { return p.phases[i] > rem })
	return full*n + int64(k)
}

// Sensor is the sensor of the j-th record (0-based).
func (p *Pacer) Sensor(j int64) int { return p.order[j%int64(len(p.order))] }

// DueAt is when the j-th record is due.
func (p *Pacer) DueAt(j int64) time.Duration {
	n := int64(len(p.phases))
	return time.Duration(j/n)*p.period + p.phases[j%n]
}
