// Command uc3-processor is GreenFlow's own Theodolite UC-3 stream processor:
// it aggregates ActivePowerRecords per sensor and hour of day over sliding
// event-time windows and emits the statistics to Kafka. See README.md.
package main

import (
	"os"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/services/uc3-processor/app"
)

func main() { service.Exit("uc3-processor", app.Main(os.Args[1:])) }
