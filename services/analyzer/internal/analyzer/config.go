package analyzer

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config configures the analysis.
type Config struct {
	// LagThreshold is the largest lag-trend slope (messages/s) a run may
	// show and still meet the SLO (Theodolite's default: 2000).
	LagThreshold float64 `yaml:"lagThreshold"`
	// LagStep is the sampling step of the lag series (Theodolite: 5 s).
	LagStep time.Duration `yaml:"lagStep"`
	// LagWarmup is dropped from the start of the measurement window before
	// fitting, on top of the run's own warm-up phase.
	LagWarmup time.Duration `yaml:"lagWarmup"`
	// LagMinPoints is the fewest lag samples that give a verdict.
	LagMinPoints int `yaml:"lagMinPoints"`
	// CVThreshold flags configurations whose repetitions vary more than
	// this coefficient of variation (0.10 = 10 %).
	CVThreshold float64 `yaml:"cvThreshold"`
	// ConfidenceLevel of the per-configuration intervals (0.95).
	ConfidenceLevel float64 `yaml:"confidenceLevel"`
	// EdgeMargin is how far outside a window samples are read, to find the
	// neighbours of the first and last sample (gaps, interpolation). It must
	// exceed the longest sampling interval; a gap reaching further than this
	// past a window edge goes unbridged and shows as quality_uncovered_s.
	EdgeMargin time.Duration `yaml:"edgeMargin"`

	// The verdict (see Policy and the package comment).
	LoadTolerance       float64       `yaml:"loadTolerance"`
	LoadEdgeSlack       time.Duration `yaml:"loadEdgeSlack"`
	MaxBridgedGap       time.Duration `yaml:"maxBridgedGap"`
	MaxBridgedIntervals int           `yaml:"maxBridgedIntervals"`
	MaxUncovered        time.Duration `yaml:"maxUncovered"`
	// BrokerEdgeSpan is the widest pair of kafka_input_high_watermark
	// samples around a window edge that the events may be interpolated
	// from; wider (or missing), the generators' series is used instead.
	BrokerEdgeSpan time.Duration `yaml:"brokerEdgeSpan"`
	// SamplesWait is how long after the window end the analysis waits for
	// every node's samples (and the load's series) to reach past it; then it
	// goes ahead with what there is and flags samples_late.
	SamplesWait time.Duration `yaml:"samplesWait"`
}

// Policy is the verdict's part of the configuration.
func (c Config) Policy() Policy {
	return Policy{LoadTolerance: c.LoadTolerance, LoadEdgeSlack: c.LoadEdgeSlack, MaxBridgedGap: c.MaxBridgedGap, MaxBridgedIntervals: c.MaxBridgedIntervals,
		MaxUncovered: c.MaxUncovered}
}

// Default returns Theodolite's SLO defaults, a 10 % CV flag and 95 %
// intervals.
func Default() Config {
	return Config{LagThreshold: 2000, LagStep: 5 * time.Second, LagMinPoints: 3, CVThreshold: 0.10, ConfidenceLevel: 0.95,
		EdgeMargin:    time.Minute,
		LoadTolerance: 0.02, LoadEdgeSlack: 200 * time.Millisecond, MaxBridgedGap: 3 * time.Second, MaxBridgedIntervals: 3, MaxUncovered: time.Second,
		BrokerEdgeSpan: 2500 * time.Millisecond, SamplesWait: 10 * time.Second}
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.LagThreshold <= 0 {
		errs = append(errs, fmt.Errorf("analyzer.lagThreshold: got %g, expected > 0", c.LagThreshold))
	}
	if c.LagStep < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("analyzer.lagStep: got %s, expected at least 100ms", c.LagStep))
	}
	if c.LagWarmup < 0 {
		errs = append(errs, fmt.Errorf("analyzer.lagWarmup: got %s, expected >= 0", c.LagWarmup))
	}
	if c.LagMinPoints < 2 {
		errs = append(errs, fmt.Errorf("analyzer.lagMinPoints: got %d, expected at least 2", c.LagMinPoints))
	}
	if c.CVThreshold <= 0 {
		errs = append(errs, fmt.Errorf("analyzer.cvThreshold: got %g, expected > 0", c.CVThreshold))
	}
	if c.ConfidenceLevel <= 0 || c.ConfidenceLevel >= 1 {
		errs = append(errs, fmt.Errorf("analyzer.confidenceLevel: got %g, expected between 0 and 1", c.ConfidenceLevel))
	}
	if c.EdgeMargin < 0 {
		errs = append(errs, fmt.Errorf("analyzer.edgeMargin: got %s, expected >= 0", c.EdgeMargin))
	}
	if math.IsNaN(c.LoadTolerance) || c.LoadTolerance < 0 || c.LoadTolerance >= 1 {
		errs = append(errs, fmt.Errorf("analyzer.loadTolerance: got %g, expected a fraction in [0, 1)", c.LoadTolerance))
	}
	if c.LoadEdgeSlack < 0 {
		errs = append(errs, fmt.Errorf("analyzer.loadEdgeSlack: got %s, expected >= 0", c.LoadEdgeSlack))
	}
	if c.MaxBridgedGap < 0 {
		errs = append(errs, fmt.Errorf("analyzer.maxBridgedGap: got %s, expected >= 0", c.MaxBridgedGap))
	}
	if c.MaxBridgedIntervals < 0 {
		errs = append(errs, fmt.Errorf("analyzer.maxBridgedIntervals: got %d, expected >= 0", c.MaxBridgedIntervals))
	}
	if c.MaxUncovered < 0 {
		errs = append(errs, fmt.Errorf("analyzer.maxUncovered: got %s, expected >= 0", c.MaxUncovered))
	}
	if c.BrokerEdgeSpan <= 0 {
		errs = append(errs, fmt.Errorf("analyzer.brokerEdgeSpan: got %s, expected a positive duration", c.BrokerEdgeSpan))
	}
	if c.SamplesWait < 0 {
		errs = append(errs, fmt.Errorf("analyzer.samplesWait: got %s, expected >= 0", c.SamplesWait))
	}
	return errors.Join(errs...)
}
