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
	clock        clock
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
// power.
func (m *ModelMeter) Read(now time.Time) (NodeReading, error) {
	if m.invalidModel != nil {
		return NodeReading{}, m.invalidModel
	}
	cpu, err := m.proc.NodeCPU()
	if err != nil {
		return NodeReading{}, fmt.Errorf("model meter: %w", err)
	}
	interval, cpuDelta, err := m.clock.interval(now, cpu)
	if err != nil {
		return NodeReading{}, fmt.Errorf("model meter: %w", err)
	}

	var util, powerW float64
	if cpuDelta.TotalSeconds > 0 {
		util = min(max(cpuDelta.BusySeconds/cpuDelta.TotalSeconds, 0), 1)
	}
	if interval > 0 {
		powerW = m.idleW + (m.maxW-m.idleW)*util
	}
	deltaJ := powerW * interval.Seconds()
	m.cumulativeJ += deltaJ
	m.clock.advance(now, cpu)

	return NodeReading{
		Time:     now,
		Interval: interval,
		Zones: []ZoneEnergy{{
			Zone:        ModelZone,
			DeltaJ:      deltaJ,
			PowerW:      powerW,
			CumulativeJ: m.cumulativeJ,
		}},
		TotalDeltaJ:      deltaJ,
		TotalPowerW:      powerW,
		TotalCumulativeJ: m.cumulativeJ,
		CPU:              cpuDelta,
		Estimated:        true,
		Source:           SourceModel,
	}, nil
}
