// Command provisioner runs GreenFlow's provisioner against external NATS and
// Kafka given by flags. `greenflow dev` runs the same component in one
// process with every other service.
package main

import "github.com/greenflow/greenflow/services/provisioner/app"

func main() { app.Service.Main() }
