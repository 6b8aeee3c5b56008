package energy

import (
	"context"
	"fmt"
	"time"
)

// Sources of readings beyond the local meters (SourceRAPL, SourceModel).
const (
	SourceScaphandre = "scaphandre"
	SourceKepler     = "kepler"
	SourcePromQL     = "promql"
)

// Basis says what a Measurement's workload figures are, and so how the
// node's energy is divided among them.
type Basis int

const (
	// BasisNone: the source sees no workloads; everything is unattributed.
	BasisNone Basis = iota
	// BasisCPU: workloads carry the CPU seconds they used; divide with
	// Attribute (Kepler's method).
	BasisCPU
	// BasisJoules: workloads carry the energy the source itself attributed
	// to them (an exporter); divide with Split.
	BasisJoules
)

// Workload is a unit of work a source can see on a node: a process, a
// container or a pod, identified by whatever the source knows of it.
type Workload struct {
	// Key is unique within one Measurement and stable across readings of the
	// same source ("pid/1234", "container/<id>", "pod/<uid>").
	Key         string
	PID, PPID   int    // 0 when unknown
	ContainerID string // bare id, no runtime scheme
	PodUID      string
	Pod         string // pod name
	Namespace   string
}

// WorkloadUse is what one workload used over an interval, in the unit of the
// Measurement's Basis.
type WorkloadUse struct {
	Workload
	Value float64 // CPU seconds (BasisCPU) or joules (BasisJoules)
}

// Measurement is a Source's reading of one interval. (NodeReading.Resets
// counts the source's counter resets, node and workloads alike.)
type Measurement struct {
	NodeReading
	Basis     Basis
	Workloads []WorkloadUse
}

// Source measures one node's energy, and where it can, what its workloads
// used.
//
// Read returns the interval since the previous successful Read, ending at
// now. The first Read, and a Read after which no trustworthy delta exists
// (every counter of the node total reset and no power gauge to fall back
// on), return a baseline with Interval 0 that callers must not record. A
// failed Read leaves the source's state unchanged, so the next successful
// Read covers the whole gap. now must not go backwards. Never returns
// negative energy. A Source may be used by one goroutine at a time.
type Source interface {
	Read(ctx context.Context, now time.Time) (Measurement, error)
}

// Checkpointer is implemented by sources whose state can move to another
// process: a collector that takes over the source restores the last
// checkpoint so its first Read continues exactly where the previous owner
// stopped, leaving neither a gap nor an overlap.
//
// Checkpoint keeps the per-workload state only of the workloads for which
// keep returns true (nil keeps all): a workload without state gets a
// baseline on its next Read and so contributes nothing for one interval,
// which only moves that energy to the unattributed rest. Restore replaces
// the whole state; it rejects data it cannot decode and then leaves the
// state unchanged.
type Checkpointer interface {
	Checkpoint(keep func(workloadKey string) bool) ([]byte, error)
	Restore(data []byte) error
}

// Every Source here; all but a meter without checkpoints are Checkpointers.
var (
	_ Source       = (*LocalSource)(nil)
	_ Source       = (*KeplerSource)(nil)
	_ Source       = (*ScaphandreSource)(nil)
	_ Source       = (*PromQLSource)(nil)
	_ Source       = meterSource{}
	_ Checkpointer = (*LocalSource)(nil)
	_ Checkpointer = (*KeplerSource)(nil)
	_ Checkpointer = (*ScaphandreSource)(nil)
	_ Checkpointer = (*PromQLSource)(nil)
	_ Checkpointer = meterSource{}
)

// meterSource adapts a NodeMeter, which sees no workloads, to a Source.
type meterSource struct {
	m    NodeMeter
	proc ProcFS // the meter's /proc, whose boot a checkpoint names
}

// Read implements Source. A done ctx fails the Read: meters read files,
// which do not wait for a deadline, so there is nothing else to bound.
func (s meterSource) Read(ctx context.Context, now time.Time) (Measurement, error) {
	if err := ctx.Err(); err != nil {
		return Measurement{}, fmt.Errorf("read meter: %w", err)
	}
	r, err := s.m.Read(now)
	if err != nil {
		return Measurement{}, err
	}
	return Measurement{NodeReading: r}, nil
}
