package spec

import (
	"fmt"
	"time"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// Upper bounds of the workload's sizes, from what they cost where they are
// paid. The number of sensors costs load-generator memory: every instance
// builds the whole key table and the pacer of its share before the load
// starts, so a sensor count past the budget would end in "fatal error: out
// of memory" (taking every service of `greenflow dev` with it) instead of a
// clear refusal at `greenflow validate`.
const (
	// LoadGeneratorMemoryBudget is the memory one load-generator instance
	// may spend on one load.
	LoadGeneratorMemoryBudget = 4 << 30
	// loadGeneratorFixedBytes is what a load costs whatever its size: the
	// Kafka client's buffer (at most 2²⁰ records of under 200 bytes with
	// their bookkeeping) and the lanes' acknowledgement slots (at most
	// 50,002 × 16 bytes each).
	loadGeneratorFixedBytes = 256 << 20
	// pacerBytesPerSensor: a pacer keeps each sensor's phase (8 bytes) and
	// index (4), and sorts them as 16-byte pairs while it is built.
	pacerBytesPerSensor = 28
	// MaxRatePerSec bounds the offered rate. It costs no memory (the
	// client's buffer is bounded); it is far above what a generator
	// instance sends (~535,000 msg/s here), so a larger value is a typo.
	MaxRatePerSec = 1e9
	// MaxModelWatts bounds the spec's model wattages of a whole node
	// (meters.model idleWatts, maxWatts, platformWatts): a large
	// four-socket server draws 2–3 kW at full load, so 10 kW is a typo
	// (a misplaced unit), not a machine.
	MaxModelWatts = 10_000
	// MaxModelWattsPerVCPU bounds idleWattsPerVCPU and maxWattsPerVCPU: a
	// 400 W processor of 32 vCPUs is 12.5 W each; 100 W a vCPU is none.
	MaxModelWattsPerVCPU = 100
	// MaxRatePerSensor: a sensor sends at most once a microsecond (the
	// schedule's resolution); the load generator refuses more.
	MaxRatePerSensor = 1e6
	// MaxLoadDuration bounds warm-up plus measurement, the load's length.
	// The generators keep per-second counters and write per-second series
	// for it, and their acknowledgement slots (at most 50,000 per lane)
	// widen with it — at 24 h a slot is 1.7 s of schedule, what may be
	// produced twice after a generator dies.
	MaxLoadDuration = 24 * time.Hour
	// MaxPeriod bounds workload.periodMs: every sensor sends once a period,
	// so with a longer period than any load may last some sensors would
	// never send.
	MaxPeriod = MaxLoadDuration
	// MaxPartitions bounds kafka.partitions. The generator's memory does
	// not grow with it (its Kafka client buffers at most 2²⁰ records
	// whatever the partitions); a broker's practical limit does.
	MaxPartitions = 10_000
	// MaxReplicas bounds sut.kubernetes.replicas. Not a memory estimate
	// either: each replica is a pod the provisioner waits for, a target the
	// collectors sample and the analyzer writes rows for, and idle past
	// kafka.partitions (a partition has one consumer); more is a typo.
	MaxReplicas = 1000
)

// LoadGeneratorBytes estimates the peak memory one load-generator instance
// needs for a load of n sensors: the key table of every sensor, each key as
// bytes and as a string (2 × uc3.KeyOffset(n): 2 bytes of prefix and the
// digits, per sensor), the pacer of its share — at most all n sensors, one
// instance alone — at 28 bytes each, and the fixed part (256 MiB). For
// 10,000,000 sensors the key table and the pacer allocated 458 MB when
// measured (every transient counted, no collection), as estimated; with
// the fixed part the estimate is 0.73 GB. The budget allows 84,349,042.
func LoadGeneratorBytes(n int) int64 {
	if n <= 0 {
		return loadGeneratorFixedBytes
	}
	return 2*int64(uc3.KeyOffset(n)) + pacerBytesPerSensor*int64(n) + loadGeneratorFixedBytes
}

// MaxSensors is the largest sensor count whose LoadGeneratorBytes fits in
// LoadGeneratorMemoryBudget.
var MaxSensors = func() int {
	lo, hi := 0, LoadGeneratorMemoryBudget // an upper bound: each sensor costs more than a byte
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if LoadGeneratorBytes(mid) <= LoadGeneratorMemoryBudget {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}()

// SensorsProblem says why n sensors are too many for a load generator, or
// "" when they fit; the load generator checks its commands with it too.
func SensorsProblem(n int) string {
	if n <= MaxSensors {
		return ""
	}
	return fmt.Sprintf("got %d, expected at most %d: a load generator would need %.1f GiB for it "+
		"(2 × key bytes + %d B per sensor + 256 MiB), over its %d GiB budget", n, MaxSensors,
		float64(LoadGeneratorBytes(n))/(1<<30), pacerBytesPerSensor, LoadGeneratorMemoryBudget>>30)
}
