package energy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// counterState is what every counter-reading source keeps between readings:
// the time of the previous reading, the exporter's start time (to notice a
// restart) and its counters. It is the unit of a checkpoint.
type counterState struct {
	started  bool
	last     time.Time
	start    float64 // the exporter's process_start_time_seconds, 0 if unknown
	counters CounterSet
}

// interval checks now against the previous reading.
func (s *counterState) interval(now time.Time) (time.Duration, error) {
	if !s.started {
		return 0, nil
	}
	if now.Before(s.last) {
		return 0, fmt.Errorf("reading at %s is before the previous one at %s", now.Format(time.RFC3339Nano), s.last.Format(time.RFC3339Nano))
	}
	return now.Sub(s.last), nil
}

// restarted reports whether the exporter's start time changed since the
// previous reading; then none of its counters continue the old ones.
func (s *counterState) restarted(fams map[string]*dto.MetricFamily) (float64, bool) {
	start, ok := firstValue(fams, "process_start_time_seconds")
	if !ok {
		return 0, false
	}
	return start, s.started && s.start != 0 && start != s.start
}

// begin starts a reading of an exporter's page: the counters to observe
// into — a fresh set when the exporter restarted, since none of its
// counters continue the old ones — and the exporter's start time.
func (s *counterState) begin(fams map[string]*dto.MetricFamily) (*CounterSet, float64) {
	start, restarted := s.restarted(fams)
	if restarted {
		return &CounterSet{}, start
	}
	return &s.counters, start
}

// finish makes a reading the previous one — its time, the exporter's start
// time, the counters observed into cs — and returns it: as it is when its
// total is complete, else as a baseline.
func (s *counterState) finish(now time.Time, start float64, cs *CounterSet, m Measurement, complete bool) Measurement {
	s.started, s.last, s.start = true, now, start
	if cs != &s.counters {
		s.counters = *cs
	}
	s.counters.Commit()
	if !complete {
		return baseline(m)
	}
	m.TotalPowerW = power(m.TotalDeltaJ, m.Interval)
	return m
}

// baseline turns a measurement whose total is not trustworthy into a
// baseline reading: zero interval, no energy, no workloads.
func baseline(m Measurement) Measurement {
	return Measurement{NodeReading: NodeReading{Time: m.Time, Source: m.Source, Estimated: m.Estimated, Resets: m.Resets, Implausible: m.Implausible},
		Basis: m.Basis}
}

type checkpointData struct {
	Version  int                `json:"v"`
	TimeNs   int64              `json:"time_ns"`
	Start    float64            `json:"start,omitempty"`
	Counters map[string]float64 `json:"counters"`
}

const checkpointVersion = 1

// Checkpoint implements Checkpointer for the sources embedding the state:
// it encodes the state, keeping the counters of the workloads that pass
// keep (nil keeps all) and every node counter.
func (s *counterState) Checkpoint(keep func(string) bool) ([]byte, error) {
	if !s.started {
		return nil, errors.New("checkpoint: no reading yet")
	}
	return json.Marshal(checkpointData{Version: checkpointVersion, TimeNs: s.last.UnixNano(), Start: s.start,
		Counters: s.counters.snapshot(workloadKeep(keep))})
}

// Restore implements Checkpointer: it decodes a checkpoint; the state is
// unchanged on error.
func (s *counterState) Restore(data []byte) error {
	var c checkpointData
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("restore checkpoint: %w", err)
	}
	if c.Version != checkpointVersion {
		return fmt.Errorf("restore checkpoint: version %d, expected %d", c.Version, checkpointVersion)
	}
	if c.TimeNs <= 0 {
		return errors.New("restore checkpoint: no reading time")
	}
	s.started, s.last, s.start = true, time.Unix(0, c.TimeNs), c.Start
	s.counters.restore(c.Counters)
	return nil
}

// workloadKeep adapts a keep function on workload keys to counter keys of
// the form "w|<workload key>|…"; every other counter is kept.
func workloadKeep(keep func(string) bool) func(string) bool {
	if keep == nil {
		return nil
	}
	return func(k string) bool {
		rest, ok := strings.CutPrefix(k, "w|")
		if !ok {
			return true
		}
		if i := strings.LastIndexByte(rest, '|'); i >= 0 {
			rest = rest[:i]
		}
		return keep(rest)
	}
}
