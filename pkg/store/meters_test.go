package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// A database holding samples and run metrics written with the schema before
// 0004 is migrated: every old row is still there, and the new tables —
// run_meters, gaps, power_calibrations — take and return their rows.
func TestMigration0004KeepsDataAndAddsTheMeterTables(t *testing.T) {
	t.Parallel()
	ctx, dsn, old := openBefore(t, 3)
	require.Empty(t, engineOf(t, old, "gaps"), "no gaps table before 0004")
	require.NoError(t, old.InsertSamples(ctx, oldSamples()))
	require.NoError(t, old.InsertRunMetrics(ctx, oldMetrics()))
	require.NoError(t, old.Close())

	s, err := store.Open(ctx, dsn, testenv.Logger(t))
	require.NoError(t, err)
	defer s.Close()
	versions, err := s.AppliedVersions(ctx)
	require.NoError(t, err)
	require.Equal(t, allVersions(t), versions)
	require.Equal(t, uint64(100), count(t, s, "SELECT count() FROM samples FINAL WHERE node = 'n1'"), "old samples kept")
	require.Equal(t, uint64(20), count(t, s, "SELECT count() FROM run_metrics FINAL"), "old run metrics kept")

	rm := store.RunMeter{ExperimentID: "e1", RunID: "r1", Node: "n1", SourceID: "local", TsMs: 1000, AskedIntervalMs: 500, IntervalMs: 500,
		AskedSource: "auto", Meter: "model", Estimated: true, Label: "estimated", Model: `{"name":"vcpu-linear"}`, Collector: "c1"}
	require.NoError(t, s.InsertRunMeters(ctx, []store.RunMeter{rm, rm}))
	got, err := s.RunMeters(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, []store.RunMeter{rm}, got, "a row written twice is read once")
	got, err = s.RunMeters(ctx, "e1", rm.RunID)
	require.NoError(t, err)
	require.Equal(t, []store.RunMeter{rm}, got, "the run's own")
	got, err = s.RunMeters(ctx, "e1", "another-run")
	require.NoError(t, err)
	require.Empty(t, got, "another run's rows are not read")

	g := store.Gap{Node: "n1", Source: "local", FromMs: 5000, ToMs: 6000, Samples: 2, Reason: store.GapSpoolFull, Collector: "c1"}
	longer := g
	longer.ToMs, longer.Samples = 9000, 8
	other := store.Gap{Node: "n2", Source: "local", FromMs: 5000, ToMs: 6000, Reason: store.GapStandby}
	require.NoError(t, s.InsertGaps(ctx, []store.Gap{g, longer, other}))
	gaps, err := s.GapsOverlapping(ctx, []string{"n1"}, 8000, 20000)
	require.NoError(t, err)
	require.Equal(t, []store.Gap{longer}, gaps, "the gap recorded again with a later end counts with that end")
	gaps, err = s.GapsOverlapping(ctx, nil, 0, 4999)
	require.NoError(t, err)
	require.Empty(t, gaps)

	fit := store.PowerCalibration{Node: "n1", Source: "rapl", TsMs: 7000, Samples: 30, InterceptW: 20, SlopeW: 80, R2: 0.99, ResidualW: 0.5,
		VCPUs: 8, CPUModel: "Test CPU", Collector: "c1"}
	require.NoError(t, s.InsertPowerCalibrations(ctx, []store.PowerCalibration{fit}))
	fits, err := s.PowerCalibrations(ctx, "n1")
	require.NoError(t, err)
	require.Equal(t, []store.PowerCalibration{fit}, fits)
}
