// Command analyzer runs GreenFlow's analyzer service against external NATS, Kafka and
// ClickHouse given by flags. `greenflow dev` runs the same component in one
// process with every other service.
package main

import (
	"flag"
	"os"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/analyzer/app"
)

func main() { service.Exit("analyzer", run(os.Args[1:])) }

func run(args []string) error {
	fs := flag.NewFlagSet("analyzer", flag.ContinueOnError)
	var common svcmain.Common
	common.Register(fs)
	cfg := app.Default()
	fs.Float64Var(&cfg.LagThreshold, "lag-threshold", cfg.LagThreshold, "lag-trend SLO: largest consumer-lag growth in msg/s")
	fs.DurationVar(&cfg.LagStep, "lag-step", cfg.LagStep, "sampling step of the consumer-lag series")
	fs.DurationVar(&cfg.LagWarmup, "lag-warmup", cfg.LagWarmup, "extra time dropped from the measurement window before the lag fit")
	fs.Float64Var(&cfg.CVThreshold, "cv-threshold", cfg.CVThreshold, "flag configurations whose repetitions vary more than this CV")
	fs.Float64Var(&cfg.ConfidenceLevel, "confidence", cfg.ConfidenceLevel, "confidence level of per-configuration intervals")

	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return svcmain.Run(ctx, "analyzer", common, svcmain.Needs{Store: true}, app.NewWithConfig(cfg))
}
