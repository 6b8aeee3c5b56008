package chaos

import (
	"encoding/json"
	"fmt"
	"math"
	"os"

	"github.com/greenflow/greenflow/pkg/results"
)

// judgeRuns judges runs in place — Violations become Judge's verdict plus
// the run's Extra — and computes their records lost against the band's
// median; it returns all their violations.
func judgeRuns(runs []RunFacts, bands map[string]map[string]Band, holeTolMs int64, maxPressure float64) []Violation {
	var all []Violation
	for j := range runs {
		r := &runs[j]
		r.Violations = append(Judge(*r, bands[r.Config], holeTolMs, maxPressure), r.Extra...)
		r.RecordsLost = 0
		if b, ok := bands[r.Config][MDelivered]; ok && r.MeasureEndMs > 0 {
			if _, known := r.Metrics[MDelivered]; known {
				r.RecordsLost = max(0, int64(math.Round(b.Median*r.WindowS()))-r.Topics.InputInWindow)
			}
		}
		all = append(all, r.Violations...)
	}
	return all
}

// Undisturbed lists the runs a segment's bands are drawn from: its
// reference runs, and every control run (a run with no kill, among the
// killed ones) that ended done without data-quality flags and without a structural
// violation. The controls spread over the whole segment, so the bands see
// the machine as it was during the kills, not only at the start: on this
// shared machine the collector's attribution of the SUT's energy moves by a
// third between a busy and an idle machine.
func Undisturbed(seg *Segment) []RunFacts {
	und := append([]RunFacts(nil), seg.References...)
	for _, r := range seg.Runs {
		if r.Role != "control" || r.State != "done" || len(results.DataQuality(r.Flags)) > 0 {
			continue
		}
		clean := true
		// Without bands only the structural checks can fire.
		for _, v := range append(Judge(r, nil, seg.HoleTolMs, 0), r.Extra...) {
			clean = clean && !v.Confirmed
		}
		if clean {
			und = append(und, r)
		}
	}
	return und
}

// Rejudge draws a segment's bands from its undisturbed runs (Undisturbed),
// judges every run again and updates each kill's outcome. It returns how
// many undisturbed runs the bands come from.
func Rejudge(seg *Segment, tol Tolerance, maxPressure float64) int {
	und := Undisturbed(seg)
	seg.Bands = Bands(und, tol)
	seg.HoleTolMs = HoleTolerance(und, tol)
	judgeRuns(seg.References, seg.Bands, seg.HoleTolMs, maxPressure)
	judgeRuns(seg.Runs, seg.Bands, seg.HoleTolMs, maxPressure)
	byRun := map[string]RunFacts{}
	for _, r := range seg.Runs {
		byRun[r.RunID] = r
	}
	for i := range seg.Kills {
		k := &seg.Kills[i]
		var all []Violation
		var first *RunFacts
		for _, id := range k.RunIDs {
			r, ok := byRun[id]
			if !ok {
				continue
			}
			if first == nil {
				first = &r
			}
			all = append(all, r.Violations...)
		}
		if first == nil {
			continue
		}
		k.Outcome, k.Violations, k.RecordsLost = OutcomeOf(*first, all), kindsOf(all), first.RecordsLost
	}
	return len(und)
}

// ReadReport loads a report.json. Reports written before runs kept their
// Extra violations apart, or before control runs had their role, are
// brought up to date, so that they can be judged again.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode report %s: %w", path, err)
	}
	extraKinds := map[string]bool{"topic_left": true, "process_left": true, "not_recovered": true}
	for si := range r.Segments {
		seg := &r.Segments[si]
		control := map[int]bool{}
		for _, k := range seg.Kills {
			if k.Target == TargetNone && len(k.RunIDs) > 0 {
				control[k.Slot] = true
			}
		}
		for i := range seg.Runs {
			run := &seg.Runs[i]
			if run.Role == "chaos" && control[run.Slot] {
				run.Role = "control"
			}
			// Before the analysis check: its primary source from the stored
			// facts (the second, run.analyzed's energy, was not kept).
			if _, ok := run.Metrics[MSUTAnalysis]; !ok && run.Metrics != nil {
				var sutJ float64
				for _, s := range run.Series {
					if s.Role == "sut" {
						sutJ += s.EnergyJ
					}
				}
				if j, ok := run.Results["sut_energy_j"]; ok && sutJ > 0 {
					run.Metrics[MSUTAnalysis] = j / sutJ
				}
			}
			if run.Extra == nil {
				for _, v := range run.Violations {
					if extraKinds[v.Kind] {
						run.Extra = append(run.Extra, v)
					}
				}
			}
		}
	}
	return &r, nil
}
