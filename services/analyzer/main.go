// Command analyzer runs GreenFlow's analyzer service against external NATS, Kafka and
// ClickHouse given by flags. `greenflow dev` runs the same component in one
// process with every other service.
package main

import "github.com/greenflow/greenflow/services/analyzer/app"

func main() { app.Service.Main() }
