package analyzer

import (
	"slices"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
)

// Meter fallback. A run whose spec asks `meters.source: rapl` wants its
// nodes measured by their RAPL counters; a collector on a node without
// readable RAPL measures it by the CPU-utilisation model instead, records
// that (run_meters: asked source rapl, meter model, a note naming why),
// and goes on — the run is still worth having, but its figures are
// estimates where the spec asked for measurements. The run is flagged
// meter_fallback so the reader sees it beside the figures.

// addMeterFallback flags the run when one of its recorded meter
// configurations (Inputs.Meters) asked rapl and was measured otherwise.
func addMeterFallback(meters []store.RunMeter, rows []store.Result, sum events.RunAnalyzed) ([]store.Result, events.RunAnalyzed) {
	for _, m := range meters {
		if m.RunID != sum.RunID || m.AskedSource != "rapl" || m.Meter == "rapl" || slices.Contains(sum.Flags, results.FlagMeterFallback) {
			continue
		}
		sum.Flags = addFlag(sum.Flags, results.FlagMeterFallback)
		metric := results.FlagMetric(results.FlagMeterFallback)
		rows = append(rows, store.Result{Scope: results.ScopeRun, Metric: metric, Value: 1, Unit: results.Unit(metric)})
	}
	return rows, sum
}
