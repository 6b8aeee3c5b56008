// Command analyzer runs GreenFlow's analyzer service against external NATS, Kafka and
// ClickHouse given by flags. `greenflow dev` runs the same component in one
// process with every other service.
package main

import (
	"flag"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/analyzer/app"
)

func main() {
	svcmain.Main("analyzer", svcmain.Needs{Store: true}, func(fs *flag.FlagSet) svcmain.Builder {
		cfg := app.Default()
		fs.Float64Var(&cfg.LagThreshold, "lag-threshold", cfg.LagThreshold, "lag-trend SLO: largest consumer-lag growth in msg/s")
		fs.DurationVar(&cfg.LagStep, "lag-step", cfg.LagStep, "sampling step of the consumer-lag series")
		fs.DurationVar(&cfg.LagWarmup, "lag-warmup", cfg.LagWarmup, "extra time dropped from the measurement window before the lag fit")
		fs.Float64Var(&cfg.CVThreshold, "cv-threshold", cfg.CVThreshold, "flag configurations whose repetitions vary more than this CV")
		fs.Float64Var(&cfg.ConfidenceLevel, "confidence", cfg.ConfidenceLevel, "confidence level of per-configuration intervals")
		fs.Float64Var(&cfg.LoadTolerance, "load-tolerance", cfg.LoadTolerance,
			"largest shortfall of events in the measured window against the offered load (fraction) a valid run may have; a surplus beyond it is flagged")
		fs.DurationVar(&cfg.LoadEdgeSlack, "load-edge-slack", cfg.LoadEdgeSlack,
			"this much of the offered load (rate × duration) is added to the tolerance: records due at a window edge may arrive just after it")
		fs.DurationVar(&cfg.MaxBridgedGap, "max-bridged-gap", cfg.MaxBridgedGap,
			"longest gap in a node's or target's samples that is bridged (and flagged); longer gaps make the run invalid")
		fs.IntVar(&cfg.MaxBridgedIntervals, "max-bridged-intervals", cfg.MaxBridgedIntervals,
			"a gap may also last up to this many of the series' sampling intervals (the larger bound applies)")
		fs.DurationVar(&cfg.MaxUncovered, "max-uncovered", cfg.MaxUncovered, "window time of a series that no sample may cover")
		fs.DurationVar(&cfg.SamplesWait, "samples-wait", cfg.SamplesWait,
			"how long after a window's end the analysis waits for every node's samples past it (then flags samples_late)")
		return func(d svcmain.Deps) (service.Component, error) {
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
			return app.NewWithConfig(cfg)(d)
		}
	})
}
