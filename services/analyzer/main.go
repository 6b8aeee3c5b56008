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

	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return svcmain.Run(ctx, "analyzer", common, svcmain.Needs{Store: true}, func(d svcmain.Deps) (service.Component, error) {
		return app.New(d)
	})
}
