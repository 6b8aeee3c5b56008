package spec

import "github.com/greenflow/greenflow/pkg/events"

// Collect is the run's meters section as the collectors receive it with
// the run's assignment (collect.assign): the interval, the local meter, and
// the model only when the spec sets one (otherwise each node's profile).
func (m Meters) Collect() *events.CollectMeters {
	out := &events.CollectMeters{IntervalMs: m.Sample.Milliseconds(), Source: m.Source}
	if !m.Model.IsZero() {
		mm := m.Model
		out.Model = &events.CollectModel{IdleWattsPerVCPU: mm.IdleWattsPerVCPU, MaxWattsPerVCPU: mm.MaxWattsPerVCPU,
			PlatformWatts: mm.PlatformWatts, IdleWatts: mm.IdleWatts, MaxWatts: mm.MaxWatts}
	}
	return out
}
