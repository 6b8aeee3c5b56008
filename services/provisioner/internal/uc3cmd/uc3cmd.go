// Package uc3cmd builds the reference UC-3 processor's command-line flags for
// a run, the same for every backend.
package uc3cmd

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
)

// params maps sut.params keys to the processor's flags.
var params = map[string]string{
	"emitInterval":   "--emit-interval",
	"timeZone":       "--timezone",
	"format":         "--format",
	"windowDuration": "--window-duration",
	"windowAdvance":  "--window-advance",
}

// Flags returns the processor's flags for run p reading from brokers and
// serving metrics on metricsAddr ("" for none).
func Flags(p events.RunProvision, brokers, metricsAddr string) ([]string, error) {
	args := []string{"--brokers", brokers, "--input", p.Kafka.InputTopic, "--output", p.Kafka.OutputTopic,
		"--group", "uc3-" + p.RunID, "--metrics-addr", metricsAddr}
	for _, k := range slices.Sorted(maps.Keys(p.SUT.Params)) {
		flag, ok := params[k]
		if !ok {
			return nil, fmt.Errorf("template uc3-go: unknown parameter sut.params.%s (known: %s)", k, strings.Join(Known(), ", "))
		}
		args = append(args, flag, p.SUT.Params[k])
	}
	return args, nil
}

// Known lists the parameters the processor takes, sorted.
func Known() []string {
	return slices.Sorted(maps.Keys(params))
}
