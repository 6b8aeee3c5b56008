// Command uc3-processor is GreenFlow's own Theodolite UC-3 stream processor:
// it aggregates ActivePowerRecords per sensor and hour of day over sliding
// event-time windows and emits the statistics to Kafka. See README.md.
package main

import (
	"context"
	"io"
	"os"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/services/uc3-processor/app"
)

const name = "uc3-processor"

func main() {
	ctx, stop := service.SignalContext()
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	service.Exit(name, err)
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	return app.Run(ctx, args, stderr)
}
