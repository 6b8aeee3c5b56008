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
		app.RegisterFlags(fs, &cfg)
		return func(d svcmain.Deps) (service.Component, error) { return app.New(cfg, d) }
	})
}
