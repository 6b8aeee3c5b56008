package loadgen

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// Coordination state lives in two JetStream KV buckets:
//
//   - BucketMembers: one key per live instance (its name), re-put every
//     MemberTTL/3; the bucket's TTL expires the key of an instance that
//     stopped heartbeating, and a clean shutdown deletes it.
//   - BucketRuns: "plan.<run>" is the run's plan — the load command, the
//     common schedule (start, period, seed, schema id) and the key-range
//     assignment at an epoch; "status.<run>.<instance>" is each instance's
//     running count, final when Done.
//
// The instance that receives load.start (the durable consumer hands it to
// one) writes the plan, splitting the key space over the live instances.
// Every instance watches the plans and produces its ranges. The leader — the
// live instance with the smallest name — re-assigns the ranges of instances
// that died, and when every participant is done (or dead) publishes the run's
// single load.finished, de-duplicated by its message id should two instances
// briefly both think they lead.
const (
	BucketMembers = "GF_LOADGEN_MEMBERS"
	BucketRuns    = "GF_LOADGEN_RUNS"
	// runsTTL bounds how long plans and statuses of old runs are kept.
	runsTTL = 48 * time.Hour
)

func planKey(run string) string             { return "plan." + run }
func statusKey(run, instance string) string { return "status." + run + "." + instance }

// owned is a range and the instance producing it.
type owned struct {
	Instance string `json:"instance"`
	Range
}

// plan is a run's shared schedule and assignment.
type plan struct {
	Cmd          events.LoadStart `json:"cmd"`
	StartMs      int64            `json:"start_ms"`
	PeriodNs     int64            `json:"period_ns"`
	Seed         uint64           `json:"seed"`
	SchemaID     uint32           `json:"schema_id"`
	Epoch        int              `json:"epoch"`
	Ranges       []owned          `json:"ranges"`
	Participants []string         `json:"participants"` // every instance ever assigned, sorted
	Coordinator  string           `json:"coordinator"`
	Stopped      bool             `json:"stopped,omitempty"`
	Finished     bool             `json:"finished,omitempty"`
}

func (p *plan) start() time.Time        { return time.UnixMilli(p.StartMs) }
func (p *plan) duration() time.Duration { return time.Duration(p.Cmd.DurationMs) * time.Millisecond }
func (p *plan) end() time.Time          { return p.start().Add(p.duration()) }

func (p *plan) schedule() schedule {
	f, _ := uc3.ParseFormat(p.Cmd.Workload.Format)
	return schedule{start: p.start(), duration: p.duration(), period: time.Duration(p.PeriodNs), seed: p.Seed,
		sensors: p.Cmd.Workload.Sensors, format: f, schemaID: p.SchemaID, valueW: p.Cmd.Workload.ValueW}
}

// rangesOf returns the ranges instance produces.
func (p *plan) rangesOf(instance string) []Range {
	var out []Range
	for _, o := range p.Ranges {
		if o.Instance == instance {
			out = append(out, o.Range)
		}
	}
	return out
}

func (p *plan) participates(instance string) bool {
	_, ok := slices.BinarySearch(p.Participants, instance)
	return ok
}

// period is the schedule period of a load: every sensor emits once per
// period, so the rate is sensors/period.
func period(w events.Workload) time.Duration {
	return time.Duration(float64(w.Sensors) * float64(time.Second) / w.RatePerSec)
}

// split divides [0, n) into len(instances) contiguous ranges, in the order
// given, differing in length by at most one.
func split(lo, hi int, instances []string) []owned {
	out := make([]owned, 0, len(instances))
	k := len(instances)
	for i, inst := range instances {
		a, b := lo+(hi-lo)*i/k, lo+(hi-lo)*(i+1)/k
		if a < b {
			out = append(out, owned{inst, Range{a, b}})
		}
	}
	return out
}

// reassign gives the ranges of instances not in alive to heirs: each such
// range is split evenly over them. Ranges of live instances stay as they
// are, so during the hand-over nothing is produced twice. Adjacent ranges of
// one instance are merged. It returns nil when nothing changes.
func reassign(ranges []owned, alive func(string) bool, heirs []string) []owned {
	if len(heirs) == 0 {
		return nil
	}
	changed := false
	var out []owned
	for _, o := range ranges {
		if alive(o.Instance) {
			out = append(out, o)
			continue
		}
		changed = true
		out = append(out, split(o.Lo, o.Hi, heirs)...)
	}
	if !changed {
		return nil
	}
	slices.SortFunc(out, func(a, b owned) int { return cmp.Compare(a.Lo, b.Lo) })
	merged := out[:0]
	for _, o := range out {
		if n := len(merged); n > 0 && merged[n-1].Instance == o.Instance && merged[n-1].Hi == o.Lo {
			merged[n-1].Hi = o.Hi
			continue
		}
		merged = append(merged, o)
	}
	return merged
}

// checkCover verifies ranges cover [0, n) exactly once; used by tests and as
// a guard before a plan is written.
func checkCover(ranges []owned, n int) error {
	sorted := slices.Clone(ranges)
	slices.SortFunc(sorted, func(a, b owned) int { return cmp.Compare(a.Lo, b.Lo) })
	at := 0
	for _, o := range sorted {
		switch {
		case o.Lo > at:
			return fmt.Errorf("sensors [%d, %d) unassigned", at, o.Lo)
		case o.Lo < at:
			return fmt.Errorf("sensors [%d, %d) assigned twice", o.Lo, min(at, o.Hi))
		case o.Hi <= o.Lo:
			return fmt.Errorf("empty range [%d, %d) of %s", o.Lo, o.Hi, o.Instance)
		}
		at = o.Hi
	}
	if at != n {
		return fmt.Errorf("sensors [%d, %d) unassigned", at, n)
	}
	return nil
}

// status is one instance's count for a run, written every second and once
// more, Done, at its end.
type status struct {
	Instance  string `json:"instance"`
	Sent      int64  `json:"sent"`
	Errors    int64  `json:"errors"`
	Produced  int64  `json:"produced"`
	Behind    int64  `json:"behind"`
	StartMs   int64  `json:"start_ms"`
	EndMs     int64  `json:"end_ms"`
	Done      bool   `json:"done"`
	Failed    bool   `json:"failed"`
	Reason    string `json:"reason,omitempty"`
	UpdatedMs int64  `json:"updated_ms"`
}

// summarize folds the instances' statuses into the run's one load.finished.
// missing lists participants that never reported; lost those that died
// before reporting Done (their last count is used).
func summarize(p *plan, sts []status, missing, lost []string, timedOut bool) events.LoadFinished {
	fin := events.LoadFinished{ExperimentID: p.Cmd.ExperimentID, RunID: p.Cmd.RunID, Instance: strings.Join(p.Participants, ","),
		StartMs: p.StartMs, EndMs: p.StartMs}
	var reasons, notes []string
	var behind int64
	for _, s := range sts {
		behind += s.Behind
		fin.RecordsSent += s.Sent
		fin.Errors += s.Errors
		fin.EndMs = max(fin.EndMs, s.EndMs, s.UpdatedMs)
		if s.Failed {
			fin.Failed = true
			reasons = append(reasons, s.Instance+": "+s.Reason)
		}
	}
	if len(missing) > 0 {
		notes = append(notes, fmt.Sprintf("%s died without a report; their ranges were taken over", strings.Join(missing, ", ")))
	}
	if len(lost) > 0 {
		notes = append(notes, fmt.Sprintf("%s died; counted as of their last report, their ranges were taken over", strings.Join(lost, ", ")))
	}
	if behind > 0 && !p.Stopped {
		notes = append(notes, fmt.Sprintf("%d records due were not produced in time (behind schedule)", behind))
	}
	if timedOut {
		fin.Failed = true
		reasons = append(reasons, "load generators did not finish in time")
	}
	if d := p.duration(); d > 0 {
		fin.AchievedRate = float64(fin.RecordsSent) / d.Seconds()
	}
	switch {
	case fin.Failed:
		fin.Reason = strings.Join(append(reasons, notes...), "; ")
	case p.Stopped:
		fin.Reason = strings.Join(append([]string{"stopped"}, notes...), "; ")
	default:
		fin.Reason = strings.Join(notes, "; ")
	}
	return fin
}
