package analyzer

import (
	"slices"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// runPhases are the rows of table run_phases for a measured run: each
// phase the scheduler recorded (an open one ends where the measured window
// does, the run's last known instant) and the measured window itself, so
// dashboards select a run's samples by its id and draw its phases without
// a time-window join of their own.
func runPhases(m *events.RunMeasured) []store.RunPhase {
	w := func(phase string, from, to int64) store.RunPhase {
		return store.RunPhase{ExperimentID: m.ExperimentID, RunID: m.RunID, ConfigHash: m.ConfigHash, Repetition: uint32(m.Repetition),
			Phase: phase, StartMs: from, EndMs: to}
	}
	out := []store.RunPhase{w(store.PhaseWindow, m.MeasureStartMs, m.MeasureEndMs)}
	baseline := false
	for _, p := range m.Phases {
		if p.Name == "" || p.Name == store.PhaseWindow || p.StartMs <= 0 {
			continue
		}
		end := p.EndMs
		if end <= 0 {
			end = max(m.MeasureEndMs, p.StartMs)
		}
		baseline = baseline || p.Name == events.RunStateBaseline
		out = append(out, w(p.Name, p.StartMs, end))
	}
	// A run measured without the scheduler's phase list still has the
	// baseline window the analysis used.
	if !baseline && m.BaselineEnd > m.BaselineStart && m.BaselineStart > 0 {
		out = append(out, w(events.RunStateBaseline, m.BaselineStart, m.BaselineEnd))
	}
	return out
}

// runFactors are the rows of table run_factors for a measured run, by
// factor name.
func runFactors(m *events.RunMeasured) []store.RunFactor {
	names := make([]string, 0, len(m.Factors))
	for k := range m.Factors {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]store.RunFactor, len(names))
	for i, k := range names {
		out[i] = store.RunFactor{ExperimentID: m.ExperimentID, RunID: m.RunID, ConfigHash: m.ConfigHash, Factor: k, Value: m.Factors[k]}
	}
	return out
}
