// Package app wires the analyzer for its own binary and for `greenflow dev`.
package app

import (
	"flag"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// Config is the analyzer's configuration.
type Config = analyzer.Config

// Service declares the analyzer for its binary and for `greenflow dev`.
var Service = svcmain.Service[Config]{
	Name:    "analyzer",
	Needs:   svcmain.Needs{Store: true},
	Default: analyzer.Default,
	Flags:   RegisterFlags,
	New:     New,
}

// RegisterFlags adds the analyzer's flags.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.Float64Var(&c.LagThreshold, "lag-threshold", c.LagThreshold, "lag-trend SLO: largest consumer-lag growth in msg/s, when the spec states no slos.lagTrendSlope")
	fs.DurationVar(&c.LagStep, "lag-step", c.LagStep, "sampling step of the consumer-lag series")
	fs.DurationVar(&c.LagWarmup, "lag-warmup", c.LagWarmup, "time from the load's start dropped before the lag fit, when the spec states no slos.lagWarmup (never before the window)")
	fs.Float64Var(&c.CVThreshold, "cv-threshold", c.CVThreshold, "flag configurations whose repetitions vary more than this CV")
	fs.Float64Var(&c.ConfidenceLevel, "confidence", c.ConfidenceLevel, "confidence level of per-configuration intervals")
	fs.Float64Var(&c.LoadTolerance, "load-tolerance", c.LoadTolerance,
		"largest shortfall or surplus of events in the measured window against the offered load (fraction) a valid run may have")
	fs.DurationVar(&c.LoadEdgeSlack, "load-edge-slack", c.LoadEdgeSlack,
		"this much of the offered load (rate × duration) is added to the tolerance: records due at a window edge may arrive just after it")
	fs.DurationVar(&c.MaxBridgedGap, "max-bridged-gap", c.MaxBridgedGap,
		"longest gap in a node's or target's samples that is bridged (and flagged); longer gaps make the run invalid")
	fs.IntVar(&c.MaxBridgedIntervals, "max-bridged-intervals", c.MaxBridgedIntervals,
		"a gap may also last up to this many of the series' sampling intervals (the larger bound applies)")
	fs.DurationVar(&c.MaxUncovered, "max-uncovered", c.MaxUncovered, "window time of a series that no sample may cover")
	fs.DurationVar(&c.MaxOverlap, "max-sample-overlap", c.MaxOverlap,
		"window time of a series that two samples may both cover (the same stretch measured twice, e.g. by two collectors on one machine)")
	fs.DurationVar(&c.SamplesWait, "samples-wait", c.SamplesWait,
		"how long after a window's end the analysis waits for every node's samples past it (then flags samples_late)")
}

// New builds the analyzer component. The results API
// (GET /v1/experiments/{id}/results) is served on d.Mux when there is one.
func New(c Config, d svcmain.Deps) (service.Component, error) {
	a, err := analyzer.New(c, analyzer.Deps{Bus: d.Bus, Store: d.Store, Logger: d.Logger, Registry: d.Registry})
	if err != nil {
		return nil, err
	}
	if d.Mux != nil {
		a.RegisterHTTP(d.Mux)
	}
	return a, nil
}
