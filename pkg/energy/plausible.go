package energy

import (
	"fmt"
	"time"
)

// Implausible is a counter increase no plausible power explains: a raw
// counter re-based or wrapped by a driver reload, an exporter bug, a
// mis-read. It is treated as a reset — not counted as energy — and
// reported so the collector can count and flag it.
type Implausible struct {
	Zone   string  // the zone or series: "package-0", "host", "node|package|…"
	DeltaJ float64 // the increase
	PowerW float64 // the power it implies over the interval
	BoundW float64 // the plausible power it exceeds
}

func (i Implausible) String() string {
	return fmt.Sprintf("%s: +%.0f J implies %.0f W, above the plausible %.0f W", i.Zone, i.DeltaJ, i.PowerW, i.BoundW)
}

// MaxPlausibleJ is the one plausibility rule of every energy path (RAPL
// powercap, Scaphandre, Kepler, PromQL): over interval, a counter may gain
// at most boundW × interval joules. boundW is the zone's plausible power —
// for RAPL from its powercap constraints (see RAPLMeter), for exporters the
// source's configured bound — and DefaultMaxPowerW when 0 or less. An
// interval of 0 (a baseline) has no bound (0 means unbounded to callers).
func MaxPlausibleJ(boundW float64, interval time.Duration) float64 {
	if boundW <= 0 {
		boundW = DefaultMaxPowerW
	}
	return boundW * interval.Seconds()
}

// implausible describes an increase of deltaJ over interval that
// MaxPlausibleJ(boundW, interval) refused.
func implausible(zone string, deltaJ float64, interval time.Duration, boundW float64) Implausible {
	if boundW <= 0 {
		boundW = DefaultMaxPowerW
	}
	return Implausible{Zone: zone, DeltaJ: deltaJ, PowerW: power(deltaJ, interval), BoundW: boundW}
}
