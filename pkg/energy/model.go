package energy

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// ModelZone is the single zone a ModelMeter reports: the whole node.
const ModelZone = "node"

// ModelMeter estimates node power where no energy counter is readable (VMs,
// CI) with the linear model P = idleW + (maxW − idleW) × utilisation, where
// utilisation is the share of busy CPU time in /proc/stat over the interval.
// Its readings are always marked Estimated.
type ModelMeter struct {
	proc         ProcFS
	idleW, maxW  float64
	last         lastReading
	cumulativeJ  float64
	invalidModel error
}

var _ NodeMeter = (*ModelMeter)(nil)

// NewModelMeter returns a meter for a node drawing idleW watts when idle and
// maxW at full CPU utilisation, reading CPU times from procRoot/stat. It does
// no I/O. Invalid parameters are reported by Validate and by every Read.
func NewModelMeter(procRoot string, idleW, maxW float64) *ModelMeter {
	m := &ModelMeter{proc: ProcFS{Root: procRoot}, idleW: idleW, maxW: maxW}
	m.invalidModel = validateModel(idleW, maxW)
	return m
}

// Validate reports whether the model's parameters make sense: both finite,
// non-negative, and idle not above max.
func (m *ModelMeter) Validate() error { return m.invalidModel }

// SetModel changes the model from the next reading on (the interval that
// reading closes is estimated with the new watts). Invalid watts are
// refused and the model kept.
func (m *ModelMeter) SetModel(idleW, maxW float64) error {
	if err := validateModel(idleW, maxW); err != nil {
		return err
	}
	m.idleW, m.maxW, m.invalidModel = idleW, maxW, nil
	return nil
}

// Model returns the node's modelled power at 0 % and 100 % CPU.
func (m *ModelMeter) Model() (idleW, maxW float64) { return m.idleW, m.maxW }

// Modelled is implemented by sources that estimate with a ModelMeter; it
// returns the meter, or nil when the source measures (RAPL chosen by auto).
type Modelled interface {
	ModelMeter() *ModelMeter
}

var _ Modelled = (*LocalSource)(nil)

// ModelMeter implements Modelled.
func (s *LocalSource) ModelMeter() *ModelMeter {
	m, _ := s.meter.(*ModelMeter)
	return m
}

func validateModel(idleW, maxW float64) error {
	var errs []error
	if math.IsNaN(idleW) || math.IsInf(idleW, 0) || idleW < 0 {
		errs = append(errs, fmt.Errorf("idle power %v W: must be a finite number ≥ 0", idleW))
	}
	if math.IsNaN(maxW) || math.IsInf(maxW, 0) || maxW < 0 {
		errs = append(errs, fmt.Errorf("max power %v W: must be a finite number ≥ 0", maxW))
	}
	if idleW > maxW {
		errs = append(errs, fmt.Errorf("idle power %v W exceeds max power %v W", idleW, maxW))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid power model: %w", err)
	}
	return nil
}

// Read implements NodeMeter. An interval too short for the kernel's 10 ms
// CPU-time resolution has no measurable utilisation and is charged at idle
// power, as is one in which the CPU times went backwards (CPUs went
// offline; the reading counts a reset).
func (m *ModelMeter) Read(now time.Time) (NodeReading, error) {
	if m.invalidModel != nil {
		return NodeReading{}, m.invalidModel
	}
	iv, err := m.last.next(m.proc, now)
	if err != nil {
		return NodeReading{}, fmt.Errorf("model meter: %w", err)
	}

	var util, powerW float64
	if iv.used.TotalSeconds > 0 {
		util = min(max(iv.used.BusySeconds/iv.used.TotalSeconds, 0), 1)
	}
	if iv.interval > 0 {
		powerW = m.idleW + (m.maxW-m.idleW)*util
	}
	deltaJ := powerW * iv.interval.Seconds()
	m.cumulativeJ += deltaJ
	m.last.advance(iv)

	r := NodeReading{
		Time:     now,
		Interval: iv.interval,
		Zones: []ZoneEnergy{{
			Zone:        ModelZone,
			DeltaJ:      deltaJ,
			PowerW:      powerW,
			CumulativeJ: m.cumulativeJ,
		}},
		TotalDeltaJ:      deltaJ,
		TotalPowerW:      powerW,
		TotalCumulativeJ: m.cumulativeJ,
		CPU:              iv.used,
		Estimated:        true,
		Source:           SourceModel,
	}
	if iv.reset {
		// The model's counters are the CPU times: their interval is
		// estimated at idle power, and flagged.
		r.Resets = 1
	}
	return r, nil
}
