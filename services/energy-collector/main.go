// Command energy-collector runs a GreenFlow energy collector against
// external NATS and ClickHouse given by flags. `greenflow dev` runs the same
// component in one process with every other service.
package main

import (
	"flag"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/energy-collector/app"
)

func main() {
	svcmain.Main("energy-collector", svcmain.Needs{Store: true}, func(fs *flag.FlagSet) svcmain.Builder {
		cfg := app.Default()
		app.RegisterFlags(fs, &cfg)
		return func(d svcmain.Deps) (service.Component, error) { return app.New(cfg, d) }
	})
}
