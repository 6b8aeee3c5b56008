package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// oldSamples are rows as the schema before 0003 stored them: two meters of
// one node at the same instant (which 0003's key keeps apart), and one row
// stored twice (which it collapses).
func oldSamples() []store.Sample {
	var out []store.Sample
	for i := range 50 {
		ts := int64(1_760_000_000_000) + int64(i)*1000
		for _, src := range []string{"rapl", "kepler"} {
			out = append(out, store.Sample{TsMs: ts, Node: "n1", Scope: "node", TargetID: "node/n1", Source: src,
				PowerW: 10, EnergyJ: float64(i) * 10, DeltaJ: 10, IntervalMs: 1000, Collector: "c1"})
		}
	}
	return append(out, out[7])
}

func oldMetrics() []store.RunMetric {
	var out []store.RunMetric
	for i := range 20 {
		out = append(out, store.RunMetric{ExperimentID: "e1", RunID: "r1", TsMs: int64(1000 * i), Name: "load_records_sent",
			Labels: `{"instance":"lg-0"}`, Value: float64(100 * i)})
	}
	return append(out, out[3], out[4])
}

// openBefore opens a fresh database with the migrations up to version
// applied — the schema a migration after it finds — and returns a context
// for the test's migration, the database and the old store.
func openBefore(t *testing.T, version int) (context.Context, string, *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	dsn := testenv.ClickHouseDSN(t)
	old, err := store.OpenAt(ctx, dsn, testenv.Logger(t), version)
	require.NoError(t, err)
	return ctx, dsn, old
}

// openAtOnce opens n stores on dsn at once, as n services starting
// together do, each running the migrations; the stores opened are closed
// when the test ends.
func openAtOnce(t *testing.T, ctx context.Context, dsn string, n int) ([]*store.Store, []error) {
	t.Helper()
	stores := make([]*store.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = store.Open(ctx, dsn, testenv.Logger(t))
		}()
	}
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			t.Cleanup(func() { s.Close() })
		}
	}
	return stores, errs
}

// openBefore0003 opens a fresh database with the schema before 0003 and
// stores oldSamples in it.
func openBefore0003(t *testing.T) (context.Context, string, *store.Store) {
	t.Helper()
	ctx, dsn, old := openBefore(t, 2)
	require.Equal(t, "MergeTree", engineOf(t, old, "samples"))
	require.NoError(t, old.InsertSamples(ctx, oldSamples()))
	return ctx, dsn, old
}

// A database holding data written with the schema before 0003 is migrated by
// four services starting at once: samples and run_metrics become
// ReplacingMergeTree with the de-duplication key, every old row is there,
// the old tables are kept aside, migration 3 is recorded once, and from then
// on a row written twice counts once.
func TestMigrationKeepsDataWrittenWithThePreviousSchema(t *testing.T) {
	t.Parallel()
	ctx, dsn, old := openBefore0003(t)
	require.NoError(t, old.InsertRunMetrics(ctx, oldMetrics()))

	// Writes keep arriving through the old store's pool while the others
	// migrate: none may be lost.
	var wg sync.WaitGroup
	stopWrites := make(chan struct{})
	var written int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stopWrites:
				return
			default:
			}
			s := store.Sample{TsMs: 1_770_000_000_000 + int64(i), Node: "n2", Scope: "node", TargetID: "node/n2", Source: "rapl", DeltaJ: 1, IntervalMs: 1}
			if err := old.InsertSamples(ctx, []store.Sample{s}); err == nil {
				written++
			}
		}
	}()
	stores, errs := openAtOnce(t, ctx, dsn, 4)
	close(stopWrites)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "service %d", i)
	}
	require.NoError(t, old.Close())
	s := stores[0]

	require.Equal(t, "ReplacingMergeTree", engineOf(t, s, "samples"))
	require.Equal(t, "ReplacingMergeTree", engineOf(t, s, "run_metrics"))
	require.Equal(t, "MergeTree", engineOf(t, s, "samples_before_0003"), "old rows kept aside")
	require.Empty(t, engineOf(t, s, "samples_0003"), "no leftover of the swap")
	require.Empty(t, engineOf(t, s, "run_metrics_0003"), "no leftover of the swap")
	versions, err := s.AppliedVersions(ctx)
	require.NoError(t, err)
	require.Equal(t, allVersions(t), versions)

	// Every old row is there once by key; both meters of n1 survive.
	require.Equal(t, uint64(100), count(t, s, "SELECT count() FROM samples FINAL WHERE node = 'n1'"))
	require.Equal(t, uint64(50), count(t, s, "SELECT count() FROM samples FINAL WHERE node = 'n1' AND source = 'kepler'"))
	require.Equal(t, uint64(20), count(t, s, "SELECT count() FROM run_metrics FINAL"))
	// Rows written during the migration: every acknowledged one is there.
	require.Positive(t, written)
	require.Equal(t, uint64(written), count(t, s, "SELECT count() FROM samples FINAL WHERE node = 'n2'"))

	// From now on a row written twice is one row once merged, and FINAL
	// sees one before that.
	dup := []store.Sample{{TsMs: 1_780_000_000_000, Node: "n3", Scope: "node", TargetID: "node/n3", Source: "rapl", DeltaJ: 5, IntervalMs: 1000}}
	require.NoError(t, s.InsertSamples(ctx, dup))
	require.NoError(t, s.InsertSamples(ctx, dup))
	require.Equal(t, uint64(1), count(t, s, "SELECT count() FROM samples FINAL WHERE node = 'n3'"))
	m := []store.RunMetric{{ExperimentID: "e1", RunID: "r1", TsMs: 99_000, Name: "load_records_sent", Labels: `{"instance":"lg-0"}`, Value: 9900}}
	require.NoError(t, s.InsertRunMetrics(ctx, m))
	require.NoError(t, s.InsertRunMetrics(ctx, m))
	require.NoError(t, s.Conn().Exec(ctx, "OPTIMIZE TABLE samples FINAL"))
	require.NoError(t, s.Conn().Exec(ctx, "OPTIMIZE TABLE run_metrics FINAL"))
	require.Equal(t, uint64(1), count(t, s, "SELECT count() FROM samples WHERE node = 'n3'"))
	require.Equal(t, uint64(100), count(t, s, "SELECT count() FROM samples WHERE node = 'n1'"), "merged: the row stored twice is one")
	require.Equal(t, uint64(21), count(t, s, "SELECT count() FROM run_metrics"))
}

// A migration interrupted after the swap (a crash before its rows were
// copied) is finished by the next start: the old rows are copied then.
func TestInterruptedTableReplacementIsFinished(t *testing.T) {
	t.Parallel()
	ctx, dsn, old := openBefore0003(t)
	defer old.Close()
	migs, err := store.Migrations()
	require.NoError(t, err)
	var create string
	for _, st := range migs[2].Statements {
		if st.ReplaceTable == "samples" {
			create = st.SQL
		}
	}
	require.NotEmpty(t, create)
	// What the crashed migrator did: create and swap, nothing more.
	require.NoError(t, old.Conn().Exec(ctx, create))
	require.NoError(t, old.Conn().Exec(ctx, "RENAME TABLE samples TO samples_before_0003, samples_0003 TO samples"))
	require.Zero(t, count(t, old, "SELECT count() FROM samples"))

	s, err := store.Open(ctx, dsn, testenv.Logger(t))
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, uint64(100), count(t, s, "SELECT count() FROM samples FINAL"))
	require.Equal(t, "ReplacingMergeTree", engineOf(t, s, "samples"))
}

func TestReplaceTableDirectiveIsChecked(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ sql, want string }{
		{"-- greenflow:replace-table t\nCREATE TABLE IF NOT EXISTS t2 (a Int8) ENGINE = MergeTree() ORDER BY a;", "expected a ReplacingMergeTree"},
		{"-- greenflow:replace-table t\nINSERT INTO t SELECT 1;", "expected CREATE TABLE IF NOT EXISTS"},
		{"-- greenflow:replace-table t\nCREATE TABLE IF NOT EXISTS t (a Int8) ENGINE = ReplacingMergeTree() ORDER BY a;", "a name of its own"},
		{"SELECT 1;\n-- greenflow:replace-table t\n", "no statement follows"},
	} {
		_, err := store.SplitStatements(tt.sql)
		require.ErrorContains(t, err, tt.want, tt.sql)
	}
	st, err := store.SplitStatements("-- greenflow:replace-table t\nCREATE TABLE IF NOT EXISTS t_new (a Int8)\nENGINE = ReplacingMergeTree() ORDER BY a;\nSELECT 1;")
	require.NoError(t, err)
	require.Equal(t, []store.Statement{
		{SQL: "CREATE TABLE IF NOT EXISTS t_new (a Int8)\nENGINE = ReplacingMergeTree() ORDER BY a", ReplaceTable: "t"},
		{SQL: "SELECT 1"},
	}, st)
}

func engineOf(tb testing.TB, s *store.Store, table string) string {
	tb.Helper()
	var e string
	rows, err := s.Conn().Query(context.Background(), "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = ?", table)
	require.NoError(tb, err)
	defer rows.Close()
	if rows.Next() {
		require.NoError(tb, rows.Scan(&e))
	}
	return e
}

func count(tb testing.TB, s *store.Store, q string) uint64 {
	tb.Helper()
	var n uint64
	require.NoError(tb, s.Conn().QueryRow(context.Background(), q).Scan(&n), q)
	return n
}

func TestMigrationsAreOrderedAndIdempotentUnderConcurrency(t *testing.T) {
	t.Parallel()
	migs, err := store.Migrations()
	require.NoError(t, err)
	require.NotEmpty(t, migs)
	for i := 1; i < len(migs); i++ {
		require.Greater(t, migs[i].Version, migs[i-1].Version)
	}

	dsn := testenv.ClickHouseDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Four services starting at once against an empty database.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := store.Open(ctx, dsn, testenv.Logger(t))
			if err == nil {
				_ = s.Close()
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	s, err := store.Open(ctx, dsn, testenv.Logger(t))
	require.NoError(t, err)
	defer s.Close()
	versions, err := s.AppliedVersions(ctx)
	require.NoError(t, err)
	require.Equal(t, migs[len(migs)-1].Version, versions[len(versions)-1])
	require.Len(t, versions, len(migs), "each version recorded once after DISTINCT")
}

// allVersions lists the version of every embedded migration.
func allVersions(tb testing.TB) []int {
	tb.Helper()
	migs, err := store.Migrations()
	require.NoError(tb, err)
	var out []int
	for _, m := range migs {
		out = append(out, m.Version)
	}
	return out
}
