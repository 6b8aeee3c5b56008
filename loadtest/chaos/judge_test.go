package chaos_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/loadtest/chaos"
)

func TestCoverFindsHolesAndIgnoresNothing(t *testing.T) {
	row := func(ts int64) chaos.Sample { return chaos.Sample{TsMs: ts, IntervalMs: 250, DeltaJ: 1} }
	var full []chaos.Sample
	for ts := int64(250); ts <= 3000; ts += 250 {
		full = append(full, row(ts))
	}
	c := chaos.Cover(full, 100, 2900, 250)
	require.Zero(t, c.UncoveredMs)
	require.Empty(t, c.Holes)
	require.Equal(t, 12, c.Samples)

	// Rows 1250..2000 missing: (1000, 2000] uncovered.
	var holed []chaos.Sample
	for _, r := range full {
		if r.TsMs < 1250 || r.TsMs > 2000 {
			holed = append(holed, r)
		}
	}
	c = chaos.Cover(holed, 100, 2900, 250)
	require.EqualValues(t, 1000, c.UncoveredMs)
	require.EqualValues(t, 1000, c.MaxHoleMs)
	require.Equal(t, []chaos.Hole{{StartMs: 1000, EndMs: 2000}}, c.Holes)

	// One row that spans the outage covers it (a bridged restart).
	bridged := append(append([]chaos.Sample(nil), holed...), chaos.Sample{TsMs: 2000, IntervalMs: 1000, DeltaJ: 4})
	require.Zero(t, chaos.Cover(bridged, 100, 2900, 250).UncoveredMs)

	// Nothing after 1500: the end of the window is a hole; nothing at all.
	c = chaos.Cover(full[:5], 0, 3000, 250)
	require.EqualValues(t, 1750, c.MaxHoleMs)
	require.EqualValues(t, 3000, chaos.Cover(nil, 0, 3000, 250).UncoveredMs)
	// Jitter below minHole is counted but not listed.
	jit := []chaos.Sample{row(250), row(500), {TsMs: 760, IntervalMs: 250}, row(1000)}
	c = chaos.Cover(jit, 0, 1000, 250)
	require.EqualValues(t, 10, c.UncoveredMs)
	require.Empty(t, c.Holes)
}

func TestEnergyInCountsEdgeRowsByOverlap(t *testing.T) {
	rows := []chaos.Sample{{TsMs: 1000, IntervalMs: 1000, DeltaJ: 10}, {TsMs: 2000, IntervalMs: 1000, DeltaJ: 20}}
	require.InDelta(t, 5+20*0.25, chaos.EnergyIn(rows, 500, 1250), 1e-9)
	require.InDelta(t, 30, chaos.EnergyIn(rows, 0, 5000), 1e-9)
	require.Zero(t, chaos.EnergyIn(rows, 3000, 4000))
}

func TestMaxGap(t *testing.T) {
	require.EqualValues(t, 1000, chaos.MaxGap(nil, 0, 1000))
	require.EqualValues(t, 600, chaos.MaxGap([]int64{900, 100, 300}, 0, 1000))
	require.EqualValues(t, 400, chaos.MaxGap([]int64{400, 800}, 0, 1000))
}

func ref(cfg string, m map[string]float64) chaos.RunFacts {
	return chaos.RunFacts{RunID: "ref", Config: cfg, State: "done", Metrics: m}
}

func TestBandsFromTheSpreadOfUndisturbedRunsWithAFloor(t *testing.T) {
	tol := chaos.DefaultTolerance(250)
	bands := chaos.Bands([]chaos.RunFacts{
		ref("500", map[string]float64{chaos.MDelivered: 500, chaos.MSUTCPU: 0.030}),
		ref("500", map[string]float64{chaos.MDelivered: 499, chaos.MSUTCPU: 0.040}),
		ref("500", map[string]float64{chaos.MDelivered: 501, chaos.MSUTCPU: 0.035}),
		// flagged or failed runs are no reference
		{RunID: "x", Config: "500", State: "done", Flags: []string{"flag_x"}, Metrics: map[string]float64{chaos.MDelivered: 100}},
		{RunID: "y", Config: "500", State: "failed", Metrics: map[string]float64{chaos.MDelivered: 100}},
		ref("2000", map[string]float64{chaos.MDelivered: 2000}),
	}, tol)
	d := bands["500"][chaos.MDelivered]
	require.Equal(t, 3, d.N)
	require.InDelta(t, 500, d.Median, 1e-9)
	require.InDelta(t, math.Log1p(0.02), d.Tol, 1e-9, "tiny spread: the floor holds")
	require.True(t, d.Contains(491))
	require.False(t, d.Contains(489))
	c := bands["500"][chaos.MSUTCPU]
	require.InDelta(t, 3*math.Log(0.035/0.030), c.Tol, 1e-9, "wide spread: three times it")
	require.NotContains(t, bands, "2000", "one run gives no band")
}

func TestJudgeNeedsBothSourcesForADeviation(t *testing.T) {
	bands := map[string]chaos.Band{
		chaos.MDelivered:  {Median: 500, Tol: math.Log1p(0.05)},
		chaos.MDelivered2: {Median: 500, Tol: math.Log1p(0.05)},
	}
	run := chaos.RunFacts{RunID: "r", State: "done", MeasureStartMs: 1000, MeasureEndMs: 9000,
		Metrics: map[string]float64{chaos.MDelivered: 300, chaos.MDelivered2: 310}}
	vs := chaos.Judge(run, bands, 500, 0)
	require.Len(t, vs, 1)
	require.Equal(t, "records", vs[0].Kind)
	require.True(t, vs[0].Confirmed)

	run.Metrics[chaos.MDelivered2] = 498 // the second source disagrees: uncertain, not a finding
	vs = chaos.Judge(run, bands, 500, 0)
	require.Len(t, vs, 1)
	require.False(t, vs[0].Confirmed)

	run.Flags = []string{"load_takeover"} // flagged: it says so
	require.Empty(t, chaos.Judge(run, bands, 500, 0))

	run.Flags, run.State = nil, "failed" // failed runs may deviate
	require.Empty(t, chaos.Judge(run, bands, 500, 0))
}

func TestJudgeAlwaysChecksStuckDuplicatesAndADeadSUT(t *testing.T) {
	run := chaos.RunFacts{RunID: "r", State: "measuring", StuckConfirmed: true, DupSamples: 3, DupSamplesConfirmed: 3}
	kinds := func(vs []chaos.Violation) []string {
		var out []string
		for _, v := range vs {
			if v.Confirmed {
				out = append(out, v.Kind)
			}
		}
		return out
	}
	require.Equal(t, []string{"stuck", "duplicate_samples"}, kinds(chaos.Judge(run, nil, 500, 0)))

	run = chaos.RunFacts{RunID: "r", State: "done", Flags: []string{"flag_sut_restarted"}, MeasureEndMs: 9000,
		SUT: chaos.SUTLife{PIDs: []int{42}, DiedAtMs: 5000, StateAtDeath: "measuring", DeathConfirmed: true}}
	require.Equal(t, []string{"sut_dead"}, kinds(chaos.Judge(run, nil, 500, 0)), "a flag does not excuse a dead SUT")

	run = chaos.RunFacts{RunID: "r", State: "done", MeasureStartMs: 0, MeasureEndMs: 4000,
		Series: []chaos.SeriesFacts{{Key: "n/node//", Coverage: chaos.SeriesCoverage{UncoveredMs: 900, MaxHoleMs: 900,
			Holes: []chaos.Hole{{StartMs: 1000, EndMs: 1900}}}, HoleConfirmed: true}}}
	require.Equal(t, []string{"samples_hole"}, kinds(chaos.Judge(run, nil, 500, 0)))
	require.Empty(t, kinds(chaos.Judge(run, nil, 1000, 0)), "within the hole tolerance")
}

func TestOutcomeOf(t *testing.T) {
	done := chaos.RunFacts{State: "done"}
	require.Equal(t, chaos.OutDone, chaos.OutcomeOf(done, nil))
	require.Equal(t, chaos.OutDoneFlagged, chaos.OutcomeOf(chaos.RunFacts{State: "done", Flags: []string{"f"}}, nil))
	require.Equal(t, chaos.OutFailedRetried, chaos.OutcomeOf(chaos.RunFacts{State: "failed", RetriedAs: "r-a1"}, nil))
	require.Equal(t, chaos.OutFailed, chaos.OutcomeOf(chaos.RunFacts{State: "failed"}, nil))
	require.Equal(t, chaos.OutViolation, chaos.OutcomeOf(done, []chaos.Violation{{Kind: "records", Confirmed: true}}))
	require.Equal(t, chaos.OutDone, chaos.OutcomeOf(done, []chaos.Violation{{Kind: "records"}}), "unconfirmed is not a finding")
	require.Equal(t, chaos.OutViolation, chaos.OutcomeOf(chaos.RunFacts{State: "measuring"}, nil))
}

func TestJudgeExcusesComparisonsOnAnOverloadedMachineOnly(t *testing.T) {
	bands := map[string]chaos.Band{
		chaos.MDelivered:  {Median: 500, Tol: math.Log1p(0.02)},
		chaos.MDelivered2: {Median: 500, Tol: math.Log1p(0.03)},
	}
	run := chaos.RunFacts{RunID: "r", State: "done", MeasureStartMs: 1000, MeasureEndMs: 9000, Own: &chaos.OwnMeter{CPUPressure: 0.9},
		Metrics: map[string]float64{chaos.MDelivered: 300, chaos.MDelivered2: 300},
		SUT:     chaos.SUTLife{PIDs: []int{7}, DiedAtMs: 4000, DeathConfirmed: true}}
	vs := chaos.Judge(run, bands, 500, 0.5)
	require.Len(t, vs, 2)
	require.Equal(t, "sut_dead", vs[0].Kind)
	require.True(t, vs[0].Counts(), "a dead SUT is no matter of load")
	require.Equal(t, "records", vs[1].Kind)
	require.True(t, vs[1].Confirmed)
	require.False(t, vs[1].Counts())
	require.Contains(t, vs[1].Excused, "90%")

	run.Own.CPUPressure = 0.2
	vs = chaos.Judge(run, bands, 500, 0.5)
	require.True(t, vs[1].Counts())
	vs = chaos.Judge(run, bands, 500, 0) // 0: compare every run
	run.Own.CPUPressure = 0.9
	require.True(t, chaos.Judge(run, bands, 500, 0)[1].Counts())
}

func TestRejudgeDrawsBandsFromReferencesAndCleanControls(t *testing.T) {
	run := func(id, role string, slot int, ratio float64) chaos.RunFacts {
		return chaos.RunFacts{RunID: id, Role: role, Slot: slot, Config: "500", State: "done", MeasureStartMs: 0, MeasureEndMs: 8000,
			Metrics: map[string]float64{chaos.MNodeEnergy: ratio, chaos.MNodeEnergy2: ratio}}
	}
	seg := chaos.Segment{
		References: []chaos.RunFacts{run("ref0", "reference", 0, 1.0), run("ref1", "reference", 0, 0.99)},
		Runs: []chaos.RunFacts{
			run("k1", "chaos", 1, 0.93),    // a kill while the machine drifted
			run("c2", "control", 2, 0.935), // the control beside it: the machine, not the kill
			func() chaos.RunFacts { // a control with a dead SUT is no reference
				r := run("c3", "control", 3, 0.1)
				r.SUT = chaos.SUTLife{PIDs: []int{1}, DiedAtMs: 100, DeathConfirmed: true}
				return r
			}(),
		},
		Kills: []chaos.KillRecord{
			{Kill: chaos.Kill{Slot: 1, Target: "analyzer"}, RunIDs: []string{"k1"}},
			{Kill: chaos.Kill{Slot: 2, Target: chaos.TargetNone}, RunIDs: []string{"c2"}},
		},
	}
	tol := chaos.DefaultTolerance(250)
	onlyRefs := chaos.Bands(seg.References, tol)
	require.False(t, onlyRefs["500"][chaos.MNodeEnergy].Contains(0.93), "against the references alone the kill looks wrong")

	require.Equal(t, 3, chaos.Rejudge(&seg, tol, 0))
	require.True(t, seg.Bands["500"][chaos.MNodeEnergy].Contains(0.93))
	require.Equal(t, chaos.OutDone, seg.Kills[0].Outcome)
	require.Equal(t, chaos.OutDone, seg.Kills[1].Outcome)
}
