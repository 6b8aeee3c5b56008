// Package spec parses, validates and expands GreenFlow experiment specs: a
// Kubernetes-style YAML document (apiVersion, kind: Experiment, metadata,
// spec) naming the system under test, the UC-3 workload, the factors to
// sweep, repetitions, phases and meters. Unknown fields are errors; every
// problem is reported at once with its field path.
//
// Where things are: types.go (the document), parse.go (YAML/JSON text to an
// Experiment, with --set overrides and spec lines in problems; the size
// limit), check.go (the shape check: unknown fields and mistyped values by
// path, line or --set argument), validate.go,
// paths.go (setting fields by path: --set on the document, factor values on
// a run config), expand.go (the sweep: counting, the grid, the runs),
// prepare.go (what a client submits), cron.go (trigger schedules).
package spec

import (
	"time"

	"github.com/greenflow/greenflow/pkg/energy"
)

// APIVersion is the spec version this build reads.
const APIVersion = "greenflow.dev/v1alpha1"

// MaxRunsWithoutConfirm is the sweep size above which submission needs --yes.
const MaxRunsWithoutConfirm = 10000

// MaxRuns is the sweep size no submission may exceed, --yes or not: every
// run is a record the scheduler keeps, and at minutes per run 100,000 runs
// are months of machine time — a larger number is a mistake in the spec.
const MaxRuns = 10 * MaxRunsWithoutConfirm

// MaxRangeValues bounds the values one factor range may generate; it is
// checked before anything is allocated.
const MaxRangeValues = MaxRuns

// The upper bounds of workload sizes are in bounds.go.

// Default returns an experiment with every default filled in.
func Default() *Experiment {
	return &Experiment{
		APIVersion: APIVersion,
		Kind:       "Experiment",
		Spec: Spec{
			RunConfig: RunConfig{
				SUT:      SUT{Template: "uc3-go", Backend: "local"},
				Workload: Workload{Sensors: 100, PeriodMs: 1000, Value: 10, Format: "avro", SchemaID: 1},
				Kafka:    Kafka{Partitions: 4, InputTopic: "input", OutputTopic: "output"},
				Phases: Phases{Baseline: Duration{10 * time.Second}, Warmup: Duration{10 * time.Second},
					Measure: Duration{60 * time.Second}, Cooldown: Duration{5 * time.Second}},
				// The model is left empty: the collectors then use each node's
				// profile (energy.DefaultProfile, or its calibrated model).
				Meters: Meters{Source: "auto", Sample: Duration{energy.DefaultInterval}},
			},
			Repetitions: 1,
			Order:       "random",
			// No lag warm-up of its own: the fit starts at the measured
			// window's start, so the warm-up phase is the lag's warm-up
			// and every window can be judged. Theodolite's 60 s (counted
			// from the load's start) would leave nothing of a window
			// shorter than a minute; a spec asks for it explicitly.
			SLOs: SLOs{LagTrendSlope: 2000, MinThroughputRatio: 0.95},
		},
	}
}

// Templates known to the provisioner.
var Templates = map[string]bool{"uc3-go": true, "command": true, "uc3-kstreams": true, "uc3-flink": true, "manifest": true}

// MaxBytes bounds a spec's text: specs are a few kilobytes, and the bound
// keeps the experiment.submit command that carries the resolved spec well
// under NATS's default 1 MiB payload. Parse enforces it, so every way in
// (CLI, HTTP, NATS, the bus, triggers) refuses the same specs.
const MaxBytes = 512 << 10
