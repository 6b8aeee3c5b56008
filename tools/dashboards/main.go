// Command dashboards writes GreenFlow's Grafana dashboards (pkg/dashboards)
// as JSON: go run ./tools/dashboards [-out deploy/grafana/dashboards].
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/greenflow/greenflow/pkg/dashboards"
)

func main() {
	out := flag.String("out", "deploy/grafana/dashboards", "directory to write the dashboards' JSON into")
	flag.Parse()
	names, err := dashboards.Write(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboards:", err)
		os.Exit(1)
	}
	for _, n := range names {
		fmt.Println(*out + "/" + n)
	}
}
