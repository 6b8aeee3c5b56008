package analyzer

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
)

// LagSLO is the lag-trend objective a run is judged by. It is the run's own
// experiment's spec (slos.lagTrendSlope, slos.lagWarmup) wherever the spec
// states it, and the analyzer's flags otherwise: a spec that asks for a 3 s
// warm-up and a 2000 msg/s threshold must be judged by those, not by
// whatever the analyzer was started with.
type LagSLO struct {
	// Threshold is the largest slope (msg/s) that meets the SLO.
	Threshold float64
	// Warmup is counted from the start of the load (Theodolite drops the
	// first warmupSeconds of a run's lag); the fit never starts before the
	// measurement window, whatever the warm-up.
	Warmup time.Duration
	// FromSpec says the threshold and warm-up came from the spec.
	FromSpec bool
}

// LagSLO is the objective when the spec says nothing.
func (c Config) LagSLO() LagSLO { return LagSLO{Threshold: c.LagThreshold, Warmup: c.LagWarmup} }

// lagSLOOf reads the lag-trend SLO from an experiment's stored (resolved)
// spec, keeping def's value for each field the spec does not state. A
// threshold of 0 counts as not stated: "slope < 0" would fail a run whose
// lag is flat, which no spec means.
func lagSLOOf(specJSON string, def LagSLO) (LagSLO, error) {
	if specJSON == "" {
		return def, nil
	}
	var doc struct {
		Spec struct {
			SLOs *struct {
				LagTrendSlope *float64       `json:"lagTrendSlope"`
				LagWarmup     *spec.Duration `json:"lagWarmup"`
			} `json:"slos"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(specJSON), &doc); err != nil {
		return def, fmt.Errorf("read spec.slos of the stored spec: %w", err)
	}
	out := def
	if s := doc.Spec.SLOs; s != nil {
		if s.LagTrendSlope != nil && *s.LagTrendSlope > 0 {
			out.Threshold, out.FromSpec = *s.LagTrendSlope, true
		}
		if s.LagWarmup != nil && s.LagWarmup.Duration >= 0 {
			out.Warmup, out.FromSpec = s.LagWarmup.Duration, true
		}
	}
	return out, nil
}

// loadStartMs is when the run's load started: the start of its warm-up
// phase (the load generator starts with it), else the measurement window's.
func loadStartMs(m *events.RunMeasured) int64 {
	for _, p := range m.Phases {
		if p.Name == events.RunStateWarmup && p.StartMs > 0 && p.StartMs <= m.MeasureStartMs {
			return p.StartMs
		}
	}
	return m.MeasureStartMs
}

// lagFitFromMs is where the lag-trend fit starts: the load's start plus the
// warm-up, and never before the measurement window — a lag sampled before
// the load (a zero) or during its ramp-up would tilt the slope by the rate
// alone.
func lagFitFromMs(m *events.RunMeasured, slo LagSLO) int64 {
	return max(m.MeasureStartMs, loadStartMs(m)+slo.Warmup.Milliseconds())
}
