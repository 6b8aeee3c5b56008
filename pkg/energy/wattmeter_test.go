package energy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func samples(period time.Duration, averaged bool, ws map[int]float64) energy.PowerSamples {
	ps := energy.PowerSamples{Period: period, Averaged: averaged, Zone: energy.ZoneWall}
	for s := -100; s <= 100; s++ {
		if w, ok := ws[s]; ok {
			ps.Samples = append(ps.Samples, energy.PowerSample{Time: at(s), Watts: w})
		}
	}
	return ps
}

func constant(from, to int, w float64) map[int]float64 {
	m := map[int]float64{}
	for s := from; s <= to; s++ {
		m[s] = w
	}
	return m
}

// The analyzer's integration and gap policy, applied to a meter's series.
func TestIntegratePower(t *testing.T) {
	withGap := constant(0, 20, 100)
	for s := 6; s <= 9; s++ {
		delete(withGap, s) // 4 s lost: (5, 10] covered by the sample at 10 only for (9, 10]
	}
	withGap[10] = 140
	for _, tc := range []struct {
		name             string
		ps               energy.PowerSamples
		start, end       int
		joules, bridged  float64
		gaps             int
		gapS, uncoveredS float64
		implausible      int
	}{
		{name: "averaged 1 Hz, exact", ps: samples(time.Second, true, constant(0, 20, 100)), start: 5, end: 15, joules: 1000},
		// (5, 9] is bridged at the mean of 100 (at 5) and 140 (at 10), linearly:
		// the stretch (5, 9] of the line from 100 to 140 over (5, 10].
		{name: "gap bridged by the trapezoid and reported", ps: samples(time.Second, true, withGap), start: 2, end: 12,
			joules: 3*100 + (100+132)/2.0*4 + 140 + 2*100, bridged: (100 + 132) / 2.0 * 4, gaps: 1, gapS: 4},
		{name: "nothing extrapolated past the last sample", ps: samples(time.Second, true, constant(0, 10, 100)), start: 5, end: 15,
			joules: 500, uncoveredS: 5},
		{name: "instantaneous (BMC, 5 s) by the trapezoid, interpolated at the edges",
			ps: samples(5*time.Second, false, map[int]float64{0: 100, 5: 200, 10: 200, 15: 100}), start: 2, end: 12,
			joules: (140+200)/2.0*3 + 200*5 + (200+160)/2.0*2},
		// Left out, the value's second is uncovered (two periods apart is not
		// yet a gap to bridge).
		{name: "implausible values left out", ps: samples(time.Second, true, map[int]float64{1: 100, 2: 100, 3: 1e6, 4: 100, 5: 100}),
			start: 1, end: 5, joules: 300, uncoveredS: 1, implausible: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := energy.IntegratePower(tc.ps, at(tc.start), at(tc.end), 0)
			require.InDelta(t, tc.joules, in.Joules, 1e-9)
			require.InDelta(t, tc.bridged, in.BridgedJ, 1e-9)
			require.Equal(t, tc.gaps, in.Gaps)
			require.InDelta(t, tc.gapS, in.GapS, 1e-9)
			require.InDelta(t, tc.uncoveredS, in.UncoveredS, 1e-9)
			require.Len(t, in.Implausible, tc.implausible)
		})
	}
	// A window edge inside an averaged sample's second counts its share.
	in := energy.IntegratePower(samples(time.Second, true, constant(0, 20, 100)), at(5).Add(500*time.Millisecond), at(15).Add(250*time.Millisecond), 0)
	require.InDelta(t, 975, in.Joules, 1e-9)
	require.Zero(t, in.UncoveredS)
}

// Kwollect publishes late: a Read waits, bounded, until the series
// reaches its time; past the bound it fails naming how far the series
// got, and the next Read covers the whole stretch. Kwollect here is
// g5ktest's stand-in for the Grid'5000 API (unreachable from CI).
func TestWattmeterWaitsForLateData(t *testing.T) {
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	api := g5ktest.New("alice", "s3cret", clocktesting.NewFakePassiveClock(start), map[string][]string{"taurus": {"taurus-7.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	apiClock := clocktesting.NewFakePassiveClock(start)
	api.Clock = apiClock
	api.Lag = 30 * time.Second
	api.Power("taurus-7", func(time.Time) float64 { return 150 })
	api.Gap("taurus-7", start.Add(62*time.Second), start.Add(64*time.Second)) // 2 s lost: bridged

	c, err := g5k.New(g5k.Config{URL: api.URL + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	require.NoError(t, err)
	clk := clocktesting.NewFakeClock(start)
	src, err := energy.NewWattmeterSource(energy.WattmeterOptions{Series: g5k.KwollectSeries{C: c, Site: "lyon", Node: "taurus-7"},
		MaxLag: time.Minute, Poll: 5 * time.Second, Clock: clk})
	require.NoError(t, err)
	ctx := context.Background()

	apiClock.SetTime(start.Add(50 * time.Second))
	_, err = src.Read(ctx, start.Add(20*time.Second)) // baseline
	require.NoError(t, err)

	// The reading at 60 s: Kwollect has data up to 20 s (now 50 s, lag 30 s).
	read := testenv.Go(t, ctx, func(ctx context.Context) error {
		m, err := src.Read(ctx, start.Add(60*time.Second))
		if err == nil && (m.TotalDeltaJ != 150*40 || m.Zones[0].Zone != energy.ZoneWall) {
			return fmt.Errorf("unexpected measurement %+v", m)
		}
		return err
	})
	for range 8 { // eight polls later (40 s), the data reaches 60 s
		testenv.Eventually(t, 5*time.Second, "the read waits", clk.HasWaiters)
		apiClock.SetTime(apiClock.Now().Add(5 * time.Second))
		clk.Step(5 * time.Second)
	}
	require.NoError(t, read.Wait(5*time.Second, "read covered"))

	// Kwollect stops publishing: the wait ends at MaxLag with the reason.
	read = testenv.Go(t, ctx, func(ctx context.Context) error {
		_, err := src.Read(ctx, start.Add(120*time.Second))
		return err
	})
	for range 12 {
		testenv.Eventually(t, 5*time.Second, "the read waits", clk.HasWaiters)
		clk.Step(5 * time.Second)
	}
	err = read.Wait(5*time.Second, "read gives up")
	require.ErrorIs(t, err, energy.ErrNotCovered)
	require.ErrorContains(t, err, "samples up to 2026-11-30T10:01:00Z after waiting 1m0s")

	// Published at last: the next reading covers everything since 60 s,
	// the 2 s gap bridged and reported.
	apiClock.SetTime(start.Add(200 * time.Second))
	m, err := src.Read(ctx, start.Add(130*time.Second))
	require.NoError(t, err)
	require.Equal(t, 70*time.Second, m.Interval)
	require.InDelta(t, 150*70, m.TotalDeltaJ, 1e-9)
	require.Equal(t, 1, src.LastIntegral.Gaps)
	require.InDelta(t, 2*150, src.LastIntegral.BridgedJ, 1e-9)
}

// A run's window measured at the wall after the run, as the testbed does:
// the whole window, a lost stretch bridged and reported, and a window the
// meter never covered refused with the reason.
func TestMeasureWindow(t *testing.T) {
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	api := g5ktest.New("alice", "s3cret", clocktesting.NewFakePassiveClock(start.Add(time.Hour)), map[string][]string{"taurus": {"taurus-7.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	api.Power("taurus-7", func(at time.Time) float64 { return 100 + float64(at.Sub(start)/time.Second%2)*20 }) // 100, 120, 100, …
	api.Gap("taurus-7", start.Add(100*time.Second), start.Add(102*time.Second))
	c, err := g5k.New(g5k.Config{URL: api.URL + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	require.NoError(t, err)
	o := energy.WattmeterOptions{Series: g5k.KwollectSeries{C: c, Site: "lyon", Node: "taurus-7"}, MaxLag: time.Millisecond, Poll: time.Millisecond}

	in, err := energy.MeasureWindow(context.Background(), o, start.Add(60*time.Second), start.Add(360*time.Second))
	require.NoError(t, err)
	// 300 s at a mean of 110 W, less the lost seconds 100 and 101 (100 +
	// 120 J), plus their bridge: the line from 120 W at 99 to 100 W at
	// 102, over (99, 101], by the trapezoid: (120 + 106.67) / 2 × 2.
	require.InDelta(t, 300*110-220+(120+(120-20*2/3.0))/2*2, in.Joules, 1e-9)
	require.Equal(t, 1, in.Gaps)
	require.InDelta(t, 2, in.GapS, 1e-9)

	api.Gap("taurus-7", start.Add(3590*time.Second), start.Add(4000*time.Second))
	_, err = energy.MeasureWindow(context.Background(), o, start.Add(3000*time.Second), start.Add(3600*time.Second))
	require.ErrorIs(t, err, energy.ErrNotCovered)
}

// With a Delay, readings end that much before the time they are taken at,
// where a lagging API already has the data, and say so in their time.
func TestWattmeterDelay(t *testing.T) {
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(start.Add(100 * time.Second))
	api := g5ktest.New("alice", "s3cret", clk, map[string][]string{"taurus": {"taurus-7.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	api.Lag = 30 * time.Second
	api.Power("taurus-7", func(time.Time) float64 { return 200 })
	c, err := g5k.New(g5k.Config{URL: api.URL + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	require.NoError(t, err)
	src, err := energy.NewWattmeterSource(energy.WattmeterOptions{Series: g5k.KwollectSeries{C: c, Site: "lyon", Node: "taurus-7"},
		Delay: 40 * time.Second, MaxLag: time.Millisecond, Poll: time.Millisecond})
	require.NoError(t, err)
	_, err = src.Read(context.Background(), start.Add(90*time.Second))
	require.NoError(t, err)
	m, err := src.Read(context.Background(), start.Add(100*time.Second))
	require.NoError(t, err, "data up to 70 s covers a reading that ends at 60 s")
	require.Equal(t, start.Add(60*time.Second), m.Time)
	require.InDelta(t, 2000, m.TotalDeltaJ, 1e-9)
}

// A node without a wattmeter falls back to its BMC: instantaneous values
// every 5 s, integrated by the trapezoid rule and interpolated at the
// window's edges (exact for power that changes linearly), zone bmc.
func TestWattmeterBMCFallback(t *testing.T) {
	start := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	api := g5ktest.New("", "", clocktesting.NewFakePassiveClock(start.Add(time.Hour)), map[string][]string{"gros": {"gros-3.nancy.grid5000.fr"}})
	t.Cleanup(api.Close)
	api.BMC("gros-3", func(at time.Time) float64 { return 100 + at.Sub(start).Seconds() })
	c, err := g5k.New(g5k.Config{URL: api.URL + "/stable"}, g5k.Deps{})
	require.NoError(t, err)
	src, err := energy.NewWattmeterSource(energy.WattmeterOptions{Series: g5k.KwollectSeries{C: c, Site: "nancy", Node: "gros-3.nancy.grid5000.fr", BMC: true},
		MaxLag: time.Millisecond, Poll: time.Millisecond})
	require.NoError(t, err)
	_, err = src.Read(context.Background(), start.Add(12*time.Second))
	require.NoError(t, err)
	m, err := src.Read(context.Background(), start.Add(48*time.Second))
	require.NoError(t, err)
	require.InDelta(t, 36*100+(48*48-12*12)/2.0, m.TotalDeltaJ, 1e-9)
	require.Equal(t, energy.ZoneBMC, m.Zones[0].Zone)
	require.Equal(t, energy.SourceWattmeter, m.Source)
	require.Zero(t, src.LastIntegral.Gaps)
}
