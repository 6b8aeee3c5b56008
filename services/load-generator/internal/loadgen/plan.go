package loadgen

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// Coordination state lives in two JetStream KV buckets, both in file
// storage so that a NATS server restart keeps them:
//
//   - BucketMembers: one key per live instance (its name), re-put every
//     Heartbeat. An instance is alive while its entry is younger than
//     MemberTTL, measured in the KV server's timestamps (see membership.go);
//     a clean shutdown deletes the entry.
//   - BucketRuns: "plan.<run>" is the run's plan — the load command, the
//     common schedule (start, period, seed, schema id) and the key-range
//     assignment at an epoch, each range with the schedule time its owner
//     produces it from; "status.<run>.<instance>" is each instance's
//     checkpoint: its counts and, per lane of ranges it produces, the acked
//     watermark (every record of those ranges due before it was acknowledged
//     by Kafka), final when Done.
//
// The instance that receives load.start (the durable consumer hands it to
// one) writes the plan, splitting the key space over the live instances.
// Every instance watches the plans and produces its ranges, checkpointing
// every CheckpointInterval. An instance that restarts (same name) resumes its
// ranges from its checkpoint's watermarks. The leader — the live instance
// with the smallest name — hands the ranges of instances that died to the
// others, each piece from the dead instance's last acked watermark, so the
// heirs back-fill what it left; and when every participant is done (or dead)
// it publishes the run's single load.finished, de-duplicated by its message
// id should two instances briefly both think they lead.
const (
	BucketMembers = bus.BucketLoadMembers
	// BucketRuns's TTL (bus.BucketConfig) bounds how long plans and
	// statuses of old runs are kept; BucketMembers's only collects the
	// entries of instances that crashed: it does not decide liveness
	// (MemberTTL does, by timestamp).
	BucketRuns = bus.BucketLoadRuns
)

func planKey(run string) string             { return "plan." + run }
func statusKey(run, instance string) string { return "status." + run + "." + instance }

// owned is a range and the instance producing it.
type owned struct {
	Instance string `json:"instance"`
	Range
	// FromNs is the schedule time (ns from the start) from which the owner
	// produces the range: 0 for ranges owned from the start; for a range
	// handed over, the previous owner's acked watermark, so the heir
	// back-fills what the previous owner left.
	FromNs int64 `json:"from_ns,omitempty"`
	// ProducedNs is how far the previous owner had produced the range at
	// its last checkpoint: records before it that are too old to back-fill
	// are not counted as missed (they were produced).
	ProducedNs int64 `json:"produced_ns,omitempty"`
	// HandedOver marks a range taken over from a dead instance: what its
	// heir produces late there is back-filled.
	HandedOver bool `json:"handed_over,omitempty"`
}

// plan is a run's shared schedule and assignment.
type plan struct {
	Cmd events.LoadStart `json:"cmd"`
	// StartMs is the schedule's start; 0 while the participants prepare.
	// The leader fixes it only once every owner of a range has prepared
	// what the schedule needs (key table, pacers, a connected producer,
	// the topic's metadata): a start fixed before that would have the
	// first seconds produced late and compressed into a catch-up, while
	// the records' timestamps still showed the schedule.
	StartMs int64 `json:"start_ms"`
	// AcceptedMs is when the load was accepted: preparation that takes
	// longer than Config.PrepareTimeout from then fails the load.
	AcceptedMs   int64    `json:"accepted_ms,omitempty"`
	PeriodNs     int64    `json:"period_ns"`
	Seed         uint64   `json:"seed"`
	SchemaID     uint32   `json:"schema_id"`
	Epoch        int      `json:"epoch"`
	Ranges       []owned  `json:"ranges"`
	Participants []string `json:"participants"` // every instance ever assigned, sorted
	Coordinator  string   `json:"coordinator"`
	// Takeovers counts hand-overs of a dead instance's ranges.
	Takeovers int `json:"takeovers,omitempty"`
	// BaselineHWM is the input topic's high-water marks summed over
	// partitions when the load was accepted (BaselineKnown), so what the
	// load added can be read from the topic even when it is not new.
	BaselineHWM   int64 `json:"baseline_hwm,omitempty"`
	BaselineKnown bool  `json:"baseline_known,omitempty"`
	Stopped       bool  `json:"stopped,omitempty"`
	Finished      bool  `json:"finished,omitempty"`
}

func (p *plan) start() time.Time        { return time.UnixMilli(p.StartMs) }
func (p *plan) scheduled() bool         { return p.StartMs != 0 }
func (p *plan) duration() time.Duration { return time.Duration(p.Cmd.DurationMs) * time.Millisecond }
func (p *plan) end() time.Time          { return p.start().Add(p.duration()) }

func (p *plan) schedule() schedule {
	f, _ := uc3.ParseFormat(p.Cmd.Workload.Format)
	s := schedule{duration: p.duration(), period: time.Duration(p.PeriodNs), seed: p.Seed,
		sensors: p.Cmd.Workload.Sensors, format: f, schemaID: p.SchemaID, valueW: p.Cmd.Workload.ValueW}
	if p.scheduled() {
		s.start = p.start()
	}
	return s
}

// piecesOf returns the ranges instance produces, with where it starts them.
func (p *plan) piecesOf(instance string) []piece {
	var out []piece
	for _, o := range p.Ranges {
		if o.Instance == instance {
			out = append(out, piece{Range: o.Range, From: time.Duration(o.FromNs), Produced: time.Duration(o.ProducedNs), Late: o.HandedOver})
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

// split divides [lo, hi) into len(instances) contiguous ranges, in the
// order given, differing in length by at most one.
func split(lo, hi int, instances []string) []owned {
	out := make([]owned, 0, len(instances))
	k := len(instances)
	for i, inst := range instances {
		a, b := lo+(hi-lo)*i/k, lo+(hi-lo)*(i+1)/k
		if a < b {
			out = append(out, owned{Instance: inst, Range: Range{a, b}})
		}
	}
	return out
}

// reassign gives the ranges of instances not in alive to heirs: each such
// range is first cut where the dead instance's progress differs (handover
// returns, per piece, the schedule time to produce it from: its acked
// watermark), then each piece is split evenly over the heirs. Ranges of live
// instances stay as they are. Adjacent ranges of one instance with the same
// starting point are merged. It returns nil when nothing changes.
func reassign(ranges []owned, alive func(string) bool, heirs []string, handover func(o owned) []piece) []owned {
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
		pieces := []piece{{Range: o.Range, From: time.Duration(o.FromNs), Produced: time.Duration(o.ProducedNs)}}
		if handover != nil {
			pieces = handover(o)
		}
		for _, pc := range pieces {
			for _, h := range split(pc.Lo, pc.Hi, heirs) {
				h.FromNs, h.ProducedNs, h.HandedOver = int64(pc.From), int64(pc.Produced), true
				out = append(out, h)
			}
		}
	}
	if !changed {
		return nil
	}
	slices.SortFunc(out, func(a, b owned) int { return cmp.Compare(a.Lo, b.Lo) })
	merged := out[:0]
	for _, o := range out {
		if n := len(merged); n > 0 && merged[n-1].Instance == o.Instance && merged[n-1].Hi == o.Lo && merged[n-1].FromNs == o.FromNs &&
			merged[n-1].ProducedNs == o.ProducedNs && merged[n-1].HandedOver == o.HandedOver {
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

// status is one instance's checkpoint for a run: written every
// CheckpointInterval while it produces and once more, Done, at its end. Its
// counts are cumulative across restarts of the instance.
type status struct {
	Instance string `json:"instance"`
	Sent     int64  `json:"sent"` // acknowledged by Kafka
	Errors   int64  `json:"errors"`
	Produced int64  `json:"produced"`
	Behind   int64  `json:"behind"`
	// Missed were due and will never be produced by anyone: too late to
	// back-fill when a lane started, or still due when the load ended.
	Missed int64 `json:"missed"`
	// Backfilled were produced (and acknowledged) late, to cover a restart,
	// a dead instance's ranges or a late start.
	Backfilled int64 `json:"backfilled"`
	// Restarts counts the times this instance resumed from this checkpoint.
	Restarts int `json:"restarts,omitempty"`
	Epoch    int `json:"epoch"`
	// Prepared: this instance has everything its share of the plan at
	// PreparedEpoch needs (see plan.StartMs); PrepareMs is how long that
	// took from the job's start.
	Prepared      bool  `json:"prepared,omitempty"`
	PreparedEpoch int   `json:"prepared_epoch,omitempty"`
	PrepareMs     int64 `json:"prepare_ms,omitempty"`
	// Lanes are the ranges this instance produces and how far: everything
	// of them due before AckedNs is acknowledged by Kafka.
	Lanes     []laneCkpt `json:"lanes,omitempty"`
	StartMs   int64      `json:"start_ms"`
	EndMs     int64      `json:"end_ms"`
	Done      bool       `json:"done"`
	Failed    bool       `json:"failed"`
	Reason    string     `json:"reason,omitempty"`
	UpdatedMs int64      `json:"updated_ms"`
}

// laneCkpt is the progress of some ranges produced together.
type laneCkpt struct {
	Ranges []Range `json:"ranges"`
	// AckedNs: every record of Ranges due before this schedule time (ns
	// from the start) is acknowledged by Kafka: the point a successor
	// resumes from.
	AckedNs int64 `json:"acked_ns"`
	// ProducedNs: every record due before it was produced.
	ProducedNs int64 `json:"produced_ns"`
}

// piece is a range and the schedule time to produce it from.
type piece struct {
	Range
	From time.Duration
	// Produced is how far the previous owner had produced it (≥ From);
	// records before it are not counted as missed when skipped.
	Produced time.Duration
	// Late marks a range resumed after a restart or taken over from a dead
	// instance: records it produces behind schedule are back-filled (a
	// plain late start is only catching up).
	Late bool
}

// resumeFrom cuts pieces where checkpointed lanes cover them and moves the
// covered parts' start to the lane's acked watermark when that is later: the
// records before it are known to be in Kafka.
func resumeFrom(pieces []piece, lanes []laneCkpt) []piece {
	var out []piece
	for _, pc := range pieces {
		// Cut points inside pc from every lane range overlapping it.
		type cover struct {
			r            Range
			at, produced time.Duration
		}
		var covers []cover
		for _, l := range lanes {
			for _, r := range l.Ranges {
				lo, hi := max(r.Lo, pc.Lo), min(r.Hi, pc.Hi)
				if lo < hi {
					covers = append(covers, cover{Range{lo, hi}, time.Duration(l.AckedNs), time.Duration(l.ProducedNs)})
				}
			}
		}
		slices.SortFunc(covers, func(a, b cover) int { return cmp.Compare(a.r.Lo, b.r.Lo) })
		at := pc.Lo
		for _, c := range covers {
			if c.r.Lo < at { // overlapping lanes: keep the first
				c.r.Lo = at
				if c.r.Lo >= c.r.Hi {
					continue
				}
			}
			if at < c.r.Lo {
				out = append(out, piece{Range{at, c.r.Lo}, pc.From, pc.Produced, pc.Late})
			}
			out = append(out, piece{c.r, max(pc.From, c.at), max(pc.Produced, c.produced), pc.Late})
			at = c.r.Hi
		}
		if at < pc.Hi {
			out = append(out, piece{Range{at, pc.Hi}, pc.From, pc.Produced, pc.Late})
		}
	}
	return mergePieces(out)
}

// mergePieces sorts pieces and merges adjacent ones with the same start.
func mergePieces(ps []piece) []piece {
	slices.SortFunc(ps, func(a, b piece) int { return cmp.Compare(a.Lo, b.Lo) })
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Hi == p.Lo && out[n-1].From == p.From && out[n-1].Produced == p.Produced && out[n-1].Late == p.Late {
			out[n-1].Hi = p.Hi
			continue
		}
		out = append(out, p)
	}
	return out
}
