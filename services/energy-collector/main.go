// Command energy-collector runs GreenFlow's energy-collector service against external NATS, Kafka and
// ClickHouse given by flags. `greenflow dev` runs the same component in one
// process with every other service.
package main

import (
	"flag"
	"os"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/energy-collector/app"
)

func main() { service.Exit("energy-collector", run(os.Args[1:])) }

func run(args []string) error {
	fs := flag.NewFlagSet("energy-collector", flag.ContinueOnError)
	var common svcmain.Common
	common.Register(fs)
	cfg := app.Default()
	app.RegisterFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return svcmain.Run(ctx, "energy-collector", common, svcmain.Needs{Store: true}, func(d svcmain.Deps) (service.Component, error) {
		return app.New(cfg, d)
	})
}
