package analyzer

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/store"
)

// loadRate checks the measured window's load second by second against the
// offered rate, from the load generators' per-second delivery series
// (pkg/kafkasignals: records of each second of the schedule Kafka
// acknowledged within the report lag of its end, against the records the
// schedule holds). The window's total is judged elsewhere (the load
// tolerance); this catches a load whose total is right but whose shape is
// not — nothing for two seconds, then twice the rate — which the records'
// own timestamps (their scheduled times) hide. A deviating second flags the
// run (results.FlagLoadRateDeviation) rather than failing it: the energy is
// measured right, under a load that was not the one offered in those
// seconds; the run's total still fails it when the load was not delivered.
// Only whole seconds of the schedule inside the window are compared; a
// schedule that started after the window's start (a preparation longer
// than the warm-up) is flagged too.
func (a *Analyzer) loadRate(ctx context.Context, m *events.RunMeasured) (kafkasignals.Deviation, error) {
	read := func(name string) (map[string][]store.Point, error) {
		return a.store.RunMetricSeries(ctx, m.ExperimentID, m.RunID, name, m.MeasureStartMs-1000, m.MeasureEndMs)
	}
	var series [3]map[string][]store.Point
	for i, name := range []string{kafkasignals.MetricLoadOffered, kafkasignals.MetricLoadOnTime, kafkasignals.MetricLoadLatenessMax} {
		s, err := read(name)
		if err != nil {
			return kafkasignals.Deviation{}, fmt.Errorf("read load truth of run %s: %w", m.RunID, err)
		}
		series[i] = s
	}
	d := kafkasignals.CheckRate(kafkasignals.TruthFrom(series[0], series[1], series[2]), m.MeasureStartMs, m.MeasureEndMs, kafkasignals.RateTolerance)
	if d.Flagged() {
		a.logger.Warn("load rate deviated from the offered rate in the measured window", zap.String("run_id", m.RunID),
			zap.Int("seconds_checked", d.Checked), zap.Int("seconds_deviating", d.Deviating), zap.Int64("worst_second_ms", d.WorstAtMs),
			zap.Float64("worst_offered", d.WorstOffered), zap.Float64("worst_delivered", d.WorstDelivered),
			zap.Float64("max_lateness_ms", d.MaxLatenessMs), zap.Int64("late_start_ms", d.LateStartMs))
	}
	return d, nil
}
