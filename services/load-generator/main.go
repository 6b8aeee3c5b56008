// Command load-generator runs GreenFlow's load-generator service against
// external NATS, Kafka and ClickHouse given by flags. `greenflow dev` runs the
// same component in one process with every other service.
package main

import "github.com/greenflow/greenflow/services/load-generator/app"

func main() { app.Service.Main() }
