package loadgen

import (
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
)

// account is what the leader knows of a load once it is over: the
// instances' final checkpoints and what the broker holds.
type account struct {
	plan     *plan
	statuses []status // of the participants that reported
	missing  []string // participants that never reported
	lost     []string // participants that died before reporting Done
	// uncovered are records of ranges still owned by dead instances at the
	// end, due after their last acked watermark: nobody produced them, as
	// far as anyone knows.
	uncovered int64
	timedOut  bool
	// unfinished and unfinishedSent are what the instances still producing
	// at the deadline had produced and Kafka had acknowledged by their last
	// checkpoint (timedOut).
	unfinished, unfinishedSent int64
	// delivered is what the load added to the input topic (high-water
	// marks summed over partitions), when fromBroker.
	delivered  int64
	fromBroker bool
}

// summarize folds an account into the run's one load.finished.
func summarize(a account) events.LoadFinished {
	p := a.plan
	fin := events.LoadFinished{ExperimentID: p.Cmd.ExperimentID, RunID: p.Cmd.RunID, Instance: strings.Join(p.Participants, ","),
		StartMs: p.StartMs, EndMs: p.StartMs, Takeovers: p.Takeovers}
	var reasons, notes []string
	var behind int64
	for _, s := range a.statuses {
		behind += s.Behind
		fin.RecordsSent += s.Sent
		fin.Errors += s.Errors
		fin.RecordsMissed += s.Missed
		fin.RecordsBackfilled += s.Backfilled
		fin.Restarts += s.Restarts
		fin.EndMs = max(fin.EndMs, s.EndMs, s.UpdatedMs)
		if s.Failed {
			fin.Failed = true
			reasons = append(reasons, s.Instance+": "+s.Reason)
		}
	}
	fin.RecordsMissed += a.uncovered
	fin.RecordsDelivered, fin.DeliveredFromBroker = fin.RecordsSent, false
	if a.fromBroker {
		fin.RecordsDelivered, fin.DeliveredFromBroker = a.delivered, true
	}
	// The broker's count against the schedule: what is in the topic beyond
	// the records due (less those missed) was produced twice — after the
	// last checkpoint of an instance that died or restarted; what is short
	// of it is unexplained, and counted missed: as a note only, a load
	// short of records ended like a complete one, and the analyzer (which
	// flags load_missed) took its delivered count for the offered load.
	var twice, short int64
	if a.fromBroker && !p.Stopped && !fin.Failed && !a.timedOut {
		switch d := a.delivered - (offered(p) - fin.RecordsMissed); {
		case d > 0:
			twice = d
		case d < 0:
			short = -d
			fin.RecordsMissed += short
		}
	}
	if len(a.missing) > 0 {
		notes = append(notes, fmt.Sprintf("%s died without a report; their ranges were taken over", strings.Join(a.missing, ", ")))
	}
	if len(a.lost) > 0 {
		notes = append(notes, fmt.Sprintf("%s died; counted as of their last checkpoint, their ranges were taken over", strings.Join(a.lost, ", ")))
	}
	if fin.Takeovers > 0 {
		notes = append(notes, fmt.Sprintf("%d take-over(s) of a dead instance's ranges", fin.Takeovers))
	}
	if fin.Restarts > 0 {
		notes = append(notes, fmt.Sprintf("%d restart(s) resumed from a checkpoint", fin.Restarts))
	}
	if fin.RecordsBackfilled > 0 {
		notes = append(notes, fmt.Sprintf("%d records back-filled late", fin.RecordsBackfilled))
	}
	if fin.RecordsMissed > 0 {
		notes = append(notes, fmt.Sprintf("%d records due were never produced", fin.RecordsMissed))
	}
	if behind > 0 && !p.Stopped {
		notes = append(notes, fmt.Sprintf("%d records due were not produced in time (behind schedule)", behind))
	}
	if twice > 0 {
		notes = append(notes, fmt.Sprintf("%d records more in the topic than the schedule less those counted missed "+
			"(produced twice after the last checkpoint of an instance that died or restarted, or produced then "+
			"in a range too old to back-fill)", twice))
	}
	if short > 0 {
		notes = append(notes, fmt.Sprintf("%d records neither in the topic nor counted as missed by the instances; counted missed", short))
	}
	if a.timedOut {
		fin.Failed = true
		reasons = append(reasons, a.timeoutReason(fin.RecordsMissed, &fin.Permanent))
	}
	if d := p.duration(); d > 0 {
		fin.AchievedRate = float64(fin.RecordsDelivered) / d.Seconds()
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

// timeoutReason says why the load did not finish by the deadline. When
// the generators had not even produced the schedule's records by then —
// end of schedule + flush, delivery and membership timeouts — they could
// not keep up with the offered rate, which a retry would not change:
// permanent, with the offered and produced rates (a run at 2×10⁹ msg/s was
// retried three times as a transient timeout).
func (a account) timeoutReason(missed int64, permanent *bool) string {
	due := offered(a.plan) - missed
	produced, delivered := a.unfinished, a.unfinishedSent
	for _, s := range a.statuses {
		produced += s.Produced
		delivered += s.Sent
	}
	d := a.plan.duration().Seconds()
	if due <= 0 || produced >= due || d <= 0 {
		return "load generators did not finish in time"
	}
	*permanent = true
	return fmt.Sprintf("load generators could not keep up with the offered load: %.0f msg/s offered, %.0f msg/s produced "+
		"(%d of %d records, %.1f%%, by the finish deadline), %.0f msg/s delivered (acknowledged by Kafka); "+
		"lower the rate or add load-generator instances",
		float64(due)/d, float64(produced)/d, produced, due, 100*float64(produced)/float64(due), float64(delivered)/d)
}

// offered is the number of records the plan's whole schedule holds.
func offered(p *plan) int64 {
	return dueAll(p.Cmd.Workload.Sensors, time.Duration(p.PeriodNs), p.duration())
}

// dueAll is the number of records of all n sensors due before t. Phases are
// floor(k·period/n) for k in [0, n) (see Phase), so within a period the
// records before r are the k with k·period/n < r: ceil(r·n/period) of them.
func dueAll(n int, period, t time.Duration) int64 {
	if n <= 0 || period <= 0 || t <= 0 {
		return 0
	}
	full, r := int64(t/period), uint64(t%period)
	hi, lo := bits.Mul64(r, uint64(n))
	lo, carry := bits.Add64(lo, uint64(period)-1, 0)
	q, _ := bits.Div64(hi+carry, lo, uint64(period))
	return full*int64(n) + int64(min(q, uint64(n)))
}

// dueBetween is the number of records of the sensors of pieces due in
// [piece.From, end).
func dueBetween(pieces []piece, n int, period time.Duration, seed uint64, end time.Duration) int64 {
	var total int64
	before := func(phase, t time.Duration) int64 { // records of one sensor due before t
		if t <= phase {
			return 0
		}
		return int64((t-phase-1)/period) + 1
	}
	for _, pc := range pieces {
		if pc.From >= end {
			continue
		}
		for s := pc.Lo; s < pc.Hi; s++ {
			ph := Phase(seed, s, n, period)
			total += before(ph, end) - before(ph, pc.From)
		}
	}
	return total
}
