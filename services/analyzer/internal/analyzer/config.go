package analyzer

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/greenflow/greenflow/pkg/auth"
)

// Config configures the analysis.
type Config struct {
	// LagThreshold is the largest lag-trend slope (messages/s) a run may
	// show and still meet the SLO (Theodolite's default: 2000) when its
	// spec states none (LagSLO).
	LagThreshold float64 `yaml:"lagThreshold" flag:"lag-threshold" help:"lag-trend SLO: largest consumer-lag growth in msg/s, when the spec states no slos.lagTrendSlope"`
	// LagStep is the sampling step of the lag series. Theodolite's 5 s is
	// its Prometheus scrape interval; the load generator samples the lag
	// every second (--signal-interval), and a 10 s window fitted at 5 s
	// steps has too few points for a verdict.
	LagStep time.Duration `yaml:"lagStep" flag:"lag-step" help:"sampling step of the consumer-lag series"`
	// LagWarmup is dropped from the start of the load before fitting, when
	// the spec states none; the fit never starts before the measurement
	// window (LagSLO).
	LagWarmup time.Duration `yaml:"lagWarmup" flag:"lag-warmup" help:"time from the load's start dropped before the lag fit, when the spec states no slos.lagWarmup (never before the window)"`
	// LagMinPoints is the fewest lag samples that give a verdict.
	LagMinPoints int `yaml:"lagMinPoints"`
	// CVThreshold flags configurations whose repetitions vary more than
	// this coefficient of variation (0.10 = 10 %).
	CVThreshold float64 `yaml:"cvThreshold" flag:"cv-threshold" help:"flag configurations whose repetitions vary more than this CV"`
	// ConfidenceLevel of the per-configuration intervals (0.95).
	ConfidenceLevel float64 `yaml:"confidenceLevel" flag:"confidence" help:"confidence level of per-configuration intervals"`
	// EdgeMargin is how far outside a window samples are read, to find the
	// neighbours of the first and last sample (gaps, interpolation). It must
	// exceed the longest sampling interval; a gap reaching further than this
	// past a window edge goes unbridged and shows as quality_uncovered_s.
	EdgeMargin time.Duration `yaml:"edgeMargin"`

	// The verdict (see Policy and the package comment).
	LoadTolerance       float64       `yaml:"loadTolerance" flag:"load-tolerance" help:"largest shortfall or surplus of events in the measured window against the offered load (fraction) a valid run may have"`
	LoadEdgeSlack       time.Duration `yaml:"loadEdgeSlack" flag:"load-edge-slack" help:"this much of the offered load (rate × duration) is added to the tolerance: records due at a window edge may arrive just after it"`
	MaxBridgedGap       time.Duration `yaml:"maxBridgedGap" flag:"max-bridged-gap" help:"longest gap in a node's or target's samples that is bridged (and flagged); longer gaps make the run invalid"`
	MaxBridgedIntervals int           `yaml:"maxBridgedIntervals" flag:"max-bridged-intervals" help:"a gap may also last up to this many of the series' sampling intervals (the larger bound applies)"`
	MaxUncovered        time.Duration `yaml:"maxUncovered" flag:"max-uncovered" help:"window time of a series that no sample may cover"`
	MaxOverlap          time.Duration `yaml:"maxOverlap" flag:"max-sample-overlap" help:"window time of a series that two samples may both cover (the same stretch measured twice, e.g. by two collectors on one machine)"`
	// BrokerEdgeSpan is the widest pair of kafka_input_high_watermark
	// samples around a window edge that the events may be interpolated
	// from; wider (or missing), the generators' series is used instead.
	BrokerEdgeSpan time.Duration `yaml:"brokerEdgeSpan"`
	// SamplesWait is how long after the window end the analysis waits for
	// every node's samples (and the load's series) to reach past it; then it
	// goes ahead with what there is and flags samples_late.
	SamplesWait time.Duration `yaml:"samplesWait" flag:"samples-wait" help:"how long after a window's end the analysis waits for every node's samples past it (then flags samples_late)"`
	// HTTP bounds what one client may send to the results API.
	HTTP auth.Limits `yaml:"http"`
}

// Policy is the verdict's part of the configuration.
func (c Config) Policy() Policy {
	return Policy{LoadTolerance: c.LoadTolerance, LoadEdgeSlack: c.LoadEdgeSlack, MaxBridgedGap: c.MaxBridgedGap, MaxBridgedIntervals: c.MaxBridgedIntervals,
		MaxUncovered: c.MaxUncovered, MaxOverlap: c.MaxOverlap}
}

// Default returns Theodolite's SLO defaults, a 10 % CV flag and 95 %
// intervals.
func Default() Config {
	return Config{LagThreshold: 2000, LagStep: time.Second, LagMinPoints: 3, CVThreshold: 0.10, ConfidenceLevel: 0.95,
		EdgeMargin:    time.Minute,
		LoadTolerance: 0.02, LoadEdgeSlack: 200 * time.Millisecond, MaxBridgedGap: 3 * time.Second, MaxBridgedIntervals: 3, MaxUncovered: time.Second,
		MaxOverlap: 100 * time.Millisecond, BrokerEdgeSpan: 2500 * time.Millisecond, SamplesWait: 10 * time.Second,
		HTTP: auth.DefaultLimits()}
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	check := func(bad bool, field string, got any, want string) {
		if bad {
			errs = append(errs, fmt.Errorf("analyzer.%s: got %v, expected %s", field, got, want))
		}
	}
	check(c.LagThreshold <= 0, "lagThreshold", c.LagThreshold, "> 0")
	check(c.LagStep < 100*time.Millisecond, "lagStep", c.LagStep, "at least 100ms")
	check(c.LagWarmup < 0, "lagWarmup", c.LagWarmup, ">= 0")
	check(c.LagMinPoints < 2, "lagMinPoints", c.LagMinPoints, "at least 2")
	check(c.CVThreshold <= 0, "cvThreshold", c.CVThreshold, "> 0")
	check(c.ConfidenceLevel <= 0 || c.ConfidenceLevel >= 1, "confidenceLevel", c.ConfidenceLevel, "between 0 and 1")
	check(c.EdgeMargin < 0, "edgeMargin", c.EdgeMargin, ">= 0")
	check(math.IsNaN(c.LoadTolerance) || c.LoadTolerance < 0 || c.LoadTolerance >= 1, "loadTolerance", c.LoadTolerance, "a fraction in [0, 1)")
	check(c.LoadEdgeSlack < 0, "loadEdgeSlack", c.LoadEdgeSlack, ">= 0")
	check(c.MaxBridgedGap < 0, "maxBridgedGap", c.MaxBridgedGap, ">= 0")
	check(c.MaxBridgedIntervals < 0, "maxBridgedIntervals", c.MaxBridgedIntervals, ">= 0")
	check(c.MaxUncovered < 0, "maxUncovered", c.MaxUncovered, ">= 0")
	check(c.MaxOverlap < 0, "maxOverlap", c.MaxOverlap, ">= 0")
	check(c.BrokerEdgeSpan <= 0, "brokerEdgeSpan", c.BrokerEdgeSpan, "a positive duration")
	check(c.SamplesWait < 0, "samplesWait", c.SamplesWait, ">= 0")
	if err := c.HTTP.Validate("analyzer.http"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
