// Command greenflow is GreenFlow's command-line tool: every service in one
// process (dev), the demo experiment, validating and submitting specs,
// following and cancelling experiments, and reading, comparing, exporting
// and reporting results — package cli lists every command. It also runs
// the reference UC-3 processor ("greenflow uc3-processor"), so that the
// local provisioner needs no second binary in dev mode.
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
