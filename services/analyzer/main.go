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
		return func(d svcmain.Deps) (service.Component, error) {
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
			return app.NewWithConfig(cfg)(d)
		}
	})
}
