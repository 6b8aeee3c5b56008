// Command greenflow is GreenFlow's command-line tool: run every service in
// one process (dev), run the demo experiment, validate and submit specs,
// watch progress, read results, cancel.
package main

import (
	"os"

	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	uc3app "github.com/greenflow/greenflow/services/uc3-processor/app"
)

func main() {
	// The local provisioner starts the reference UC-3 processor as
	// "greenflow uc3-processor …" so one binary is enough in dev mode.
	if len(os.Args) > 1 && os.Args[1] == "uc3-processor" {
		if err := uc3app.Main(os.Args[2:]); err != nil {
			os.Stderr.WriteString("uc3-processor: " + err.Error() + "\n")
			os.Exit(1)
		}
		return
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
