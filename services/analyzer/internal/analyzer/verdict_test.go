package analyzer_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/services/analyzer/internal/analyzer"
)

// TestJudge checks the verdict's arithmetic: a 10 s window at 1000 msg/s
// offers 10,000 events; the tolerance is 2 % (200 events) plus 100 ms of
// load (100 events); a gap may last up to max(3 s, 3 intervals); 1 s of
// the window may stay uncovered.
func TestJudge(t *testing.T) {
	t.Parallel()
	policy := analyzer.Policy{LoadTolerance: 0.02, LoadEdgeSlack: 100 * time.Millisecond, MaxBridgedGap: 3 * time.Second, MaxBridgedIntervals: 3,
		MaxUncovered: time.Second, MaxOverlap: 100 * time.Millisecond}
	node := func(gaps uint64, maxGapMs, uncoveredMs float64) analyzer.SeriesQuality {
		return analyzer.SeriesQuality{Kind: "node", Name: "n1", IntervalMs: 1000, Gaps: gaps, MaxGapMs: maxGapMs, UncoveredMs: uncoveredMs}
	}
	target := func(intervalMs int64, gaps uint64, maxGapMs, uncoveredMs float64) analyzer.SeriesQuality {
		return analyzer.SeriesQuality{Kind: "target", Name: "process/r/sut-0", IntervalMs: intervalMs, Gaps: gaps, MaxGapMs: maxGapMs, UncoveredMs: uncoveredMs}
	}
	base := func() analyzer.VerdictInput {
		return analyzer.VerdictInput{WindowMs: 10_000, OfferedRate: 1000, Events: 10_000, EventsFrom: analyzer.EventsFromBroker, Nodes: []string{"n1"},
			Series: []analyzer.SeriesQuality{node(0, 0, 3), target(1000, 0, 0, 3)}}
	}
	for _, tc := range []struct {
		name    string
		mod     func(*analyzer.VerdictInput)
		invalid []string // substrings of the reason, in order of the sorted reasons
		flags   []string
		ratio   float64
	}{
		{name: "clean run", mod: func(*analyzer.VerdictInput) {}, ratio: 1},
		{name: "shortfall within tolerance", mod: func(in *analyzer.VerdictInput) { in.Events = 9_701 }, ratio: 0.9701},
		{name: "shortfall at the tolerance", mod: func(in *analyzer.VerdictInput) { in.Events = 9_700 }, ratio: 0.97},
		{name: "shortfall beyond tolerance", mod: func(in *analyzer.VerdictInput) { in.Events = 9_699 }, ratio: 0.9699,
			invalid: []string{"offered load not delivered in the measured window: 9699 of 10000 events (97.0%; tolerance 2.0% + 100ms of load) by the input topic's high-water marks"}},
		// The slack is a count, not a share: in a 1 s window 2 % + 100 ms is 120 of 1000 events.
		{name: "a 1 s window at its tolerance", mod: func(in *analyzer.VerdictInput) { in.WindowMs, in.Events = 1000, 880 }, ratio: 0.88},
		{name: "a 1 s window beyond it", mod: func(in *analyzer.VerdictInput) { in.WindowMs, in.Events = 1000, 879 },
			ratio: 0.879, invalid: []string{"879 of 1000 events"}},
		{name: "shortfall counted by the generators", mod: func(in *analyzer.VerdictInput) { in.Events, in.EventsFrom = 5_000, analyzer.EventsFromGenerator },
			ratio: 0.5, invalid: []string{"5000 of 10000 events (50.0%; tolerance 2.0% + 100ms of load) by the generators' acknowledged records"}},
		{name: "surplus within tolerance", mod: func(in *analyzer.VerdictInput) { in.Events = 10_300 }, ratio: 1.03},
		// A catch-up or back-fill puts more load in the window than the
		// spec asked for: the figures would be of another load.
		{name: "surplus beyond tolerance is a catch-up", mod: func(in *analyzer.VerdictInput) { in.Events = 10_301 }, ratio: 1.0301,
			flags:   []string{results.FlagLoadSurplus},
			invalid: []string{"more load than offered in the measured window: 10301 of 10000 events (103.0%; tolerance 2.0% + 100ms of load) by the input topic's high-water marks"}},
		{name: "no load series", mod: func(in *analyzer.VerdictInput) { in.Events, in.EventsFrom = 0, analyzer.EventsUnknown }, ratio: math.NaN(),
			invalid: []string{"the load in the measured window cannot be checked"}},
		{name: "no offered load: nothing to check", mod: func(in *analyzer.VerdictInput) {
			in.OfferedRate, in.Events, in.EventsFrom = 0, 0, analyzer.EventsUnknown
		}, ratio: math.NaN()},
		{name: "node gap within 3 s bridged and flagged", mod: func(in *analyzer.VerdictInput) { in.Series[0] = node(2, 3000, 3) }, ratio: 1,
			flags: []string{results.FlagEnergyGapBridged}},
		{name: "node gap beyond 3 s", mod: func(in *analyzer.VerdictInput) { in.Series[0] = node(1, 3001, 3) }, ratio: 1,
			invalid: []string{"energy samples of node n1 missing for 3.0 s (bridging bound 3.0 s)"}},
		{name: "slow meter: 3 intervals of 5 s bound a gap", mod: func(in *analyzer.VerdictInput) { in.Series[1] = target(5000, 1, 15_000, 3) }, ratio: 1,
			flags: []string{results.FlagEnergyGapBridged}},
		{name: "slow meter beyond 3 intervals", mod: func(in *analyzer.VerdictInput) { in.Series[1] = target(5000, 1, 15_001, 3) }, ratio: 1,
			invalid: []string{"energy samples of target process/r/sut-0 missing for 15.0 s (bridging bound 15.0 s)"}},
		// A collector down for 8 s resumes from its checkpoint: one sample
		// spans the outage, its energy right, the series blind there.
		{name: "a stretched sample within the bound is flagged", mod: func(in *analyzer.VerdictInput) {
			in.Series[0].MedianIntervalMs, in.Series[0].IntervalMs, in.Series[0].Stretches, in.Series[0].MaxStretchMs = 1000, 3500, 1, 2500
		}, ratio: 1, flags: []string{results.FlagSamplesStretched}},
		{name: "a stretched sample beyond the bound", mod: func(in *analyzer.VerdictInput) {
			in.Series[0].MedianIntervalMs, in.Series[0].IntervalMs, in.Series[0].Stretches, in.Series[0].MaxStretchMs = 1000, 8088, 1, 7088
		}, ratio: 1, invalid: []string{"energy samples of node n1: one sample spans 7.1 s beyond the usual 1.0 s interval — the meter went unread (bound 3.0 s)"}},
		// The bound follows the usual interval, not the longest one (which
		// the stretched sample itself sets).
		{name: "the gap bound follows the usual interval", mod: func(in *analyzer.VerdictInput) {
			in.Series[0].MedianIntervalMs, in.Series[0].IntervalMs, in.Series[0].Gaps, in.Series[0].MaxGapMs = 1000, 8000, 1, 4000
		}, ratio: 1, invalid: []string{"energy samples of node n1 missing for 4.0 s (bridging bound 3.0 s)"}},
		// Two collectors reading one machine's meter: every stretch twice.
		{name: "samples measured twice", mod: func(in *analyzer.VerdictInput) {
			in.Series[0].OverlapMs, in.Series[0].Collectors = 5900, []string{"ec-1", "ec-2"}
		}, ratio: 1, invalid: []string{"energy samples of node n1 cover 5.9 s of the window twice (collectors ec-1, ec-2): measured twice, its energy would count twice"}},
		{name: "overlap within the bound", mod: func(in *analyzer.VerdictInput) { in.Series[0].OverlapMs = 100 }, ratio: 1},
		{name: "target uncovered at the window end", mod: func(in *analyzer.VerdictInput) { in.Series[1] = target(1000, 0, 0, 4000) }, ratio: 1,
			invalid: []string{"energy samples of target process/r/sut-0 cover 4.0 s less than the measured window (bound 1.0 s)"}},
		{name: "uncovered within the bound", mod: func(in *analyzer.VerdictInput) { in.Series[0] = node(0, 0, 1000) }, ratio: 1},
		{name: "node without samples", mod: func(in *analyzer.VerdictInput) {
			in.Nodes, in.MissingNodes = []string{"n1", "n2"}, []string{"n2"}
		}, ratio: 1, invalid: []string{"no energy samples for node n2 in the measured window"}},
		{name: "target lost during the run", mod: func(in *analyzer.VerdictInput) {
			in.Series, in.LostTargets = in.Series[:1], []string{"process/r/sut-0"}
		},
			ratio: 1, invalid: []string{"target process/r/sut-0 was measured during the run but not in the measured window"}},
		{name: "target the meters cannot see", mod: func(in *analyzer.VerdictInput) {
			in.Series, in.UnmeasuredTargets = in.Series[:1], []string{"pod/ns/p/c"}
		}, ratio: 1, flags: []string{results.FlagTargetUnmeasured}},
		{name: "samples late", mod: func(in *analyzer.VerdictInput) { in.SamplesLate = true }, ratio: 1, flags: []string{results.FlagSamplesLate}},
		{name: "the load's account", mod: func(in *analyzer.VerdictInput) {
			in.Load = analyzer.LoadAccount{Takeovers: 1, Restarts: 2, Backfilled: 300, Missed: 12}
		}, ratio: 1, flags: []string{results.FlagLoadBackfilled, results.FlagLoadMissed, results.FlagLoadRestart, results.FlagLoadTakeover}},
		{name: "a second off the offered rate", mod: func(in *analyzer.VerdictInput) { in.Load.RateDeviated = true },
			ratio: 1, flags: []string{results.FlagLoadRateDeviation}},
		{name: "several reasons at once, sorted", mod: func(in *analyzer.VerdictInput) {
			in.Events = 1_000
			in.Series[0] = node(1, 10_000, 0)
			in.SamplesLate = true
		}, ratio: 0.1, flags: []string{results.FlagSamplesLate},
			invalid: []string{"energy samples of node n1 missing for 10.0 s", "offered load not delivered"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			tc.mod(&in)
			v := analyzer.Judge(in, policy)
			require.Equal(t, len(tc.invalid) > 0, v.Invalid, "reasons: %v", v.Reasons)
			require.Len(t, v.Reasons, len(tc.invalid), "reasons: %v", v.Reasons)
			for i, want := range tc.invalid {
				require.Contains(t, v.Reasons[i], want)
			}
			require.Equal(t, tc.flags, v.Flags)
			if math.IsNaN(tc.ratio) {
				require.True(t, math.IsNaN(v.DeliveredRatio), "ratio %g", v.DeliveredRatio)
			} else {
				require.InDelta(t, tc.ratio, v.DeliveredRatio, 1e-12)
			}
			again := analyzer.Judge(in, policy)
			require.Equal(t, []any{v.Invalid, v.Reasons, v.Flags}, []any{again.Invalid, again.Reasons, again.Flags}, "pure: the same input, the same verdict")
		})
	}
}
