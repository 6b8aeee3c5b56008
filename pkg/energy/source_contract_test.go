package energy_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

// sourceWorld is what the Source contract suite needs of one
// implementation: the world it measures (see source_worlds_test.go), which
// the suite moves between readings, a second apart.
type sourceWorld interface {
	// newSource opens a Source on the world, as a collector does.
	newSource(t *testing.T) energy.Source
	// spend: the node spends j joules in the next second, its workloads
	// their shares.
	spend(t *testing.T, j float64)
	// reset: the node's counters restart near zero (a driver reload, an
	// exporter restart, CPUs going offline for the model), then it spends j.
	// exact says whether the source still measures that second exactly (a
	// power gauge covers it).
	reset(t *testing.T, j float64) (exact bool)
	// nearWrap, before the first reading, puts the node's raw energy counter
	// j short of its wrap point. exact says whether the source measures the
	// interval in which it wraps exactly (it knows the range, or a power
	// gauge covers it); sources whose counters cannot wrap ignore it.
	nearWrap(t *testing.T, j float64) (exact bool)
	// jump: the node spends j in the next second but its energy counter
	// jumps by extra joules more (a re-based raw counter, an exporter bug).
	// exact says whether the source still measures the second exactly (a
	// power gauge covers it); counters is false for a source without
	// energy counters (the model), which just spends j.
	jump(t *testing.T, j, extra float64) (exact, counters bool)
	// corrupt makes the world's input malformed until mend, and returns what
	// the failed Read's error must name.
	corrupt(t *testing.T) []string
	mend(t *testing.T)
}

// hangingWorld is a world behind a network endpoint, which can stop
// answering (until mend) while keeping the connection open.
type hangingWorld interface {
	sourceWorld
	hang(t *testing.T)
}

// sourceCase is one Source implementation under the contract.
type sourceCase struct {
	name      string
	world     func(t *testing.T) sourceWorld
	source    string // Measurement.Source
	estimated bool
	basis     energy.Basis
	// target is a workload that uses use(j) (in the basis' unit) when the
	// node spends j; "" when the source sees no workloads.
	target string
	use    func(j float64) float64
	// untracked is a workload with per-workload state (counters) that a
	// checkpoint keeping only target leaves out; "" when there is none.
	untracked string
}

func cpuShare(j float64) float64    { return j / 120 } // procWorld: CPU seconds
func joulesShare(j float64) float64 { return j / 4 }   // the exporters' target: a quarter

var sourceCases = []sourceCase{
	{name: "rapl", world: newRAPLWorld(true), source: energy.SourceRAPL, basis: energy.BasisCPU, target: "pid/100", use: cpuShare, untracked: "pid/200"},
	{name: "model", world: newModelWorld(true), source: energy.SourceModel, estimated: true, basis: energy.BasisCPU, target: "pid/100", use: cpuShare, untracked: "pid/200"},
	{name: "rapl meter", world: newRAPLWorld(false), source: energy.SourceRAPL, basis: energy.BasisNone},
	{name: "model meter", world: newModelWorld(false), source: energy.SourceModel, estimated: true, basis: energy.BasisNone},
	{name: "kepler", world: newKeplerWorld, source: energy.SourceKepler, basis: energy.BasisJoules, target: "pid/4242", use: joulesShare, untracked: "pid/999"},
	{name: "scaphandre", world: newScaphandreWorld, source: energy.SourceScaphandre, basis: energy.BasisJoules, target: "pid/4242", use: joulesShare},
	{name: "promql", world: newPromQLWorld, source: energy.SourcePromQL, basis: energy.BasisJoules, target: promTargetPod.String(), use: joulesShare,
		untracked: promOtherPod.String()},
	{name: "wattmeter", world: newWattmeterWorld, source: energy.SourceWattmeter, basis: energy.BasisNone},
}

// TestSourceContract runs one suite against every Source (Watermill's
// universal-suite idea): whatever a source reads, the collector can rely on
// the same behaviour — counters turned into exact per-interval energy,
// resets and wraps never turned into negative energy or a spike (and an
// interval measured short is flagged), failed reads — timeouts, malformed
// input, time going back — changing nothing so the next good reading covers
// the whole gap, and a checkpoint that lets another process continue
// exactly.
func TestSourceContract(t *testing.T) {
	for _, c := range sourceCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			t.Run("counters", func(t *testing.T) { contractCounters(t, c) })
			t.Run("resets", func(t *testing.T) { contractResets(t, c) })
			t.Run("wrap", func(t *testing.T) { contractWrap(t, c) })
			t.Run("implausible jump", func(t *testing.T) { contractImplausible(t, c) })
			t.Run("timeouts", func(t *testing.T) { contractTimeouts(t, c) })
			t.Run("malformed input", func(t *testing.T) { contractMalformed(t, c) })
			t.Run("health", func(t *testing.T) { contractHealth(t, c) })
			t.Run("checkpoint", func(t *testing.T) { contractCheckpoint(t, c) })
		})
	}
}

// reader reads one source of a case's world and checks what must hold of
// every reading.
type reader struct {
	c        sourceCase
	src      energy.Source
	cum      float64            // the node's running total so far, when reported
	zoneCum  map[string]float64 // each zone's
	lastGood time.Time
}

func newReader(c sourceCase, src energy.Source) *reader {
	return &reader{c: c, src: src, zoneCum: map[string]float64{}}
}

// at is the time of the n-th second.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

// read reads at the n-th second; a good reading is checked for what holds
// of every reading.
func (r *reader) read(t *testing.T, ctx context.Context, n int) (energy.Measurement, error) {
	t.Helper()
	m, err := r.src.Read(ctx, at(n))
	if err != nil {
		return m, err
	}
	require.Equal(t, r.c.source, m.Source)
	require.Equal(t, r.c.estimated, m.Estimated)
	require.Equal(t, r.c.basis, m.Basis)
	require.Equal(t, at(n), m.Time)
	require.GreaterOrEqual(t, m.Resets, 0)
	requireFinite(t, m.TotalDeltaJ, m.TotalPowerW, m.TotalCumulativeJ)
	require.GreaterOrEqual(t, m.TotalDeltaJ, 0.0, "never negative energy")
	require.LessOrEqual(t, m.TotalDeltaJ, energy.DefaultMaxPowerW*m.Interval.Seconds(), "never a spike")
	if m.Interval == 0 {
		require.Zero(t, m.TotalDeltaJ, "a baseline has no energy")
		require.Empty(t, m.Workloads, "nor workloads")
	} else {
		require.Equal(t, at(n).Sub(r.lastGood), m.Interval, "since the last good reading")
		require.InDelta(t, m.TotalDeltaJ/m.Interval.Seconds(), m.TotalPowerW, 1e-9)
	}
	// Running totals, where the source keeps them, grow by the deltas.
	if m.TotalCumulativeJ != 0 || r.cum != 0 {
		require.InDelta(t, r.cum+m.TotalDeltaJ, m.TotalCumulativeJ, 1e-6, "running total")
		r.cum = m.TotalCumulativeJ
	}
	for _, z := range m.Zones {
		requireFinite(t, z.DeltaJ, z.PowerW, z.CumulativeJ)
		require.GreaterOrEqual(t, z.DeltaJ, 0.0, z.Zone)
		if m.Interval > 0 {
			require.InDelta(t, z.DeltaJ/m.Interval.Seconds(), z.PowerW, 1e-9, z.Zone)
		}
		if z.CumulativeJ != 0 || r.zoneCum[z.Zone] != 0 {
			require.InDelta(t, r.zoneCum[z.Zone]+z.DeltaJ, z.CumulativeJ, 1e-6, "running total of %s", z.Zone)
			r.zoneCum[z.Zone] = z.CumulativeJ
		}
	}
	for _, w := range m.Workloads {
		requireFinite(t, w.Value)
		require.GreaterOrEqual(t, w.Value, 0.0, w.Key)
	}
	r.lastGood = at(n)
	return m, nil
}

// good reads at the n-th second and requires a good reading.
func (r *reader) good(t *testing.T, n int) energy.Measurement {
	t.Helper()
	m, err := r.read(t, context.Background(), n)
	require.NoError(t, err)
	return m
}

// spent requires m to measure exactly the j joules spent since the last
// good reading, and the target's share of them.
func (r *reader) spent(t *testing.T, m energy.Measurement, j float64) {
	t.Helper()
	require.Positive(t, m.Interval)
	require.InDelta(t, j, m.TotalDeltaJ, 1e-6, "energy")
	require.Zero(t, m.Resets)
	if r.c.target != "" {
		require.InDelta(t, r.c.use(j), workloadValues(m)[r.c.target], 1e-6, "the target's use")
	}
}

// recovers lets the node spend 60 J in the n-th second and requires the
// reading then to cover everything since the last good one, in which the
// node spent j in all.
func (r *reader) recovers(t *testing.T, w sourceWorld, n int, j float64) {
	t.Helper()
	last := r.lastGood
	w.spend(t, 60)
	m := r.good(t, n)
	require.Equal(t, at(n).Sub(last), m.Interval)
	require.Greater(t, m.Interval, time.Second, "a failure was in between")
	r.spent(t, m, j)
}

// failed requires a failed Read at the n-th second, whose error names
// mentions.
func (r *reader) failed(t *testing.T, ctx context.Context, n int, mentions ...string) {
	t.Helper()
	_, err := r.read(t, ctx, n)
	requireErrorMentions(t, err, mentions...)
}

func requireFinite(t *testing.T, vs ...float64) {
	t.Helper()
	for _, v := range vs {
		require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%v is not finite", v)
	}
}

// primed returns a case's world and a reader of it that took its baseline
// (at second 0) and one good reading (at second 1).
func primed(t *testing.T, c sourceCase) (sourceWorld, *reader) {
	w := c.world(t)
	r := newReader(c, w.newSource(t))
	require.Zero(t, r.good(t, 0).Interval, "the first reading is a baseline")
	w.spend(t, 60)
	r.spent(t, r.good(t, 1), 60)
	return w, r
}

// The first reading is a baseline; each next one measures exactly what the
// node spent since; the time of a reading may not go back.
func contractCounters(t *testing.T, c sourceCase) {
	w, r := primed(t, c)
	for n, j := range []float64{36, 108} {
		w.spend(t, j)
		r.spent(t, r.good(t, n+2), j)
	}
	r.failed(t, context.Background(), 2, "before the previous")
	w.spend(t, 60)
	r.spent(t, r.good(t, 4), 60)
}

// A counter that restarts is never negative energy nor a spike: the
// interval is measured exactly (a gauge covers it) or short and flagged;
// the next one is exact again.
func contractResets(t *testing.T, c sourceCase) {
	w, r := primed(t, c)
	exact := w.reset(t, 60)
	requireExactOrFlagged(t, r.good(t, 2), 60, exact)
	w.spend(t, 60)
	r.spent(t, r.good(t, 3), 60)
}

// A raw counter passing its wrap point is measured exactly where the source
// knows the range or has a gauge, else short and flagged — never negative.
func contractWrap(t *testing.T, c sourceCase) {
	w := c.world(t)
	exact := w.nearWrap(t, 30)
	r := newReader(c, w.newSource(t))
	r.good(t, 0)
	w.spend(t, 60)
	requireExactOrFlagged(t, r.good(t, 1), 60, exact)
	w.spend(t, 60)
	r.spent(t, r.good(t, 2), 60)
}

// A counter increase implying more than the plausible power is one rule on
// every path (energy.MaxPlausibleJ): it is not counted as energy — the
// second is measured exactly from a gauge or short — it counts as a reset,
// and it is reported with the power it implied; the next second is exact.
func contractImplausible(t *testing.T, c sourceCase) {
	w, r := primed(t, c)
	exact, counters := w.jump(t, 60, 100_000) // +100 kJ in 1 s: 100 kW
	m := r.good(t, 2)
	if !counters {
		r.spent(t, m, 60)
		require.Empty(t, m.Implausible)
		return
	}
	requireExactOrFlagged(t, m, 60, exact)
	require.Positive(t, m.Resets, "counted as a reset")
	require.NotEmpty(t, m.Implausible, "and reported")
	imp := m.Implausible[0]
	require.InDelta(t, 100_000, imp.DeltaJ, 1000, "%v", imp)
	require.Greater(t, imp.PowerW, imp.BoundW, "%v", imp)
	require.Equal(t, float64(energy.DefaultMaxPowerW), imp.BoundW, "no constraint: the default bound")
	w.spend(t, 60)
	r.spent(t, r.good(t, 3), 60)
}

func requireExactOrFlagged(t *testing.T, m energy.Measurement, j float64, exact bool) {
	t.Helper()
	if exact {
		require.InDelta(t, j, m.TotalDeltaJ, 1e-6, "measured exactly")
		return
	}
	require.LessOrEqual(t, m.TotalDeltaJ, j+1e-6, "short, never more")
	require.Positive(t, m.Resets, "and flagged")
}

// A Read whose context is done — cancelled, or past its deadline while an
// endpoint does not answer — fails at once and changes nothing: the next
// good reading covers the whole gap.
func contractTimeouts(t *testing.T, c sourceCase) {
	w, r := primed(t, c)
	w.spend(t, 60)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.read(t, cancelled, 2)
	require.Error(t, err)
	require.True(t, errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "context canceled"), "%v", err)
	w.spend(t, 60)
	if hw, ok := w.(hangingWorld); ok {
		hw.hang(t)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		began := time.Now()
		r.failed(t, ctx, 3, "context deadline exceeded")
		cancel()
		require.Less(t, time.Since(began), 10*time.Second, "bounded by the deadline")
		w.mend(t)
	}
	r.recovers(t, w, 4, 180)
}

// Malformed input fails the Read with an error naming what is wrong and
// where, and changes nothing.
func contractMalformed(t *testing.T, c sourceCase) {
	w, r := primed(t, c)
	mentions := w.corrupt(t)
	w.spend(t, 60)
	r.failed(t, context.Background(), 2, mentions...)
	w.mend(t)
	r.recovers(t, w, 3, 120)
}

// However many Reads fail, and however, the source is healthy again with
// its next good reading, which covers everything since the last one.
func contractHealth(t *testing.T, c sourceCase) {
	w, r := primed(t, c)
	w.corrupt(t)
	for n := 2; n <= 4; n++ {
		w.spend(t, 60)
		_, err := r.read(t, context.Background(), n)
		require.Error(t, err)
	}
	w.mend(t)
	r.failed(t, context.Background(), 0, "before the previous")
	w.spend(t, 60)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.read(t, cancelled, 5)
	require.Error(t, err)
	r.recovers(t, w, 6, 300)
	w.spend(t, 60)
	r.spent(t, r.good(t, 7), 60)
}

// A checkpoint lets another reader (another collector) continue where the
// first stopped: its first interval starts at the checkpoint and reads
// exactly what the first reads, for the node and the kept workloads, and
// from then on both read alike. Restore refuses what it cannot decode and
// then leaves the state as it was.
func contractCheckpoint(t *testing.T, c sourceCase) {
	fresh, ok := c.world(t).newSource(t).(energy.Checkpointer)
	require.True(t, ok, "%T is a Checkpointer", fresh)
	_, err := fresh.Checkpoint(nil)
	require.ErrorContains(t, err, "no reading yet")
	w, ra := primed(t, c)
	a := ra.src.(energy.Checkpointer)
	cp, err := a.Checkpoint(func(key string) bool { return key == c.target })
	require.NoError(t, err)

	bsrc := w.newSource(t)
	b := bsrc.(energy.Checkpointer)
	require.Error(t, b.Restore([]byte("{")))
	require.Error(t, b.Restore([]byte(`{"v":1}`)), "a checkpoint without a reading")
	require.NoError(t, b.Restore(cp))
	rb := newReader(c, bsrc)
	rb.lastGood, rb.cum, rb.zoneCum = ra.lastGood, ra.cum, cloneMap(ra.zoneCum)

	// The first reader stops; the node goes on for two seconds.
	w.spend(t, 60)
	w.spend(t, 60)
	want, got := ra.good(t, 3), rb.good(t, 3)
	require.Equal(t, 2*time.Second, got.Interval)
	require.Equal(t, want.NodeReading, got.NodeReading, "the node's interval is the one the first reader reads")
	rb.spent(t, got, 120)
	wantW, gotW := workloadValues(want), workloadValues(got)
	if c.untracked != "" {
		require.Positive(t, wantW[c.untracked])
		require.Zero(t, gotW[c.untracked], "left out of the checkpoint: a baseline")
	}

	w.spend(t, 60)
	want, got = ra.good(t, 4), rb.good(t, 4)
	require.Equal(t, want.NodeReading, got.NodeReading)
	require.Equal(t, workloadValues(want), workloadValues(got), "from then on both read alike")

	require.Error(t, a.Restore([]byte("{")))
	w.spend(t, 60)
	ra.spent(t, ra.good(t, 5), 60)
}

func cloneMap(m map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
