// Command console serves GreenFlow's web console against external NATS and
// ClickHouse given by flags. `greenflow dev` runs the same component in one
// process with every other service.
package main

import "github.com/greenflow/greenflow/services/console/app"

func main() { app.Service.Main() }
