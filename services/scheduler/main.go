// Command scheduler runs GreenFlow's scheduler against external NATS, Kafka
// and ClickHouse given by flags. `greenflow dev` runs the same component in
// one process with every other service.
package main

import "github.com/greenflow/greenflow/services/scheduler/app"

func main() { app.Service.Main() }
