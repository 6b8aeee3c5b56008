// Command load-generator runs GreenFlow's load-generator service against
// external NATS, Kafka and ClickHouse given by flags. `greenflow dev` runs the
// same component in one process with every other service.
package main

import (
	"flag"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/load-generator/app"
)

func main() {
	cfg := app.Default()
	needs := svcmain.Needs{StoreWhen: func() bool { return cfg.RecordKafkaSignals }}
	svcmain.Main("load-generator", needs, func(fs *flag.FlagSet) svcmain.Builder {
		app.RegisterFlags(fs, &cfg)
		return func(d svcmain.Deps) (service.Component, error) { return app.New(cfg, d) }
	})
}
