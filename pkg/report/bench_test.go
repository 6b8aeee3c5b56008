package report_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// The 20-run experiment the export and report benchmarks read, stored after
// the benchmarks' shared history (testenv.HistoryStore): 5 configurations ×
// 4 repetitions; each run 30 s of baseline, 120 s measured and 10 s of
// cool-down on 4 nodes with 25 process targets each, sampled at 1 Hz — 17,280
// samples a run, 345,600 in all — with its results and targets as the
// analyzer stores them.
const (
	bench20ID      = "bench20"
	bench20Runs    = 20
	bench20Nodes   = 4
	bench20Targets = 25
	bench20Start   = int64(1_760_100_000_000) // after the history and the analyzer benchmark's run
)

var bench20 struct {
	once sync.Once
	st   *store.Store
	err  error
}

func setupBench20(b *testing.B) {
	ctx := context.Background()
	st, _ := testenv.HistoryStore(b)
	bench20.st = st
	runs, err := st.Runs(ctx, bench20ID)
	if err != nil || len(runs) == bench20Runs {
		bench20.err = err
		return
	}
	bench20.err = insertBench20(ctx, st)
}

func insertBench20(ctx context.Context, st *store.Store) error {
	if err := st.UpsertExperiment(ctx, store.Experiment{ExperimentID: bench20ID, Name: "bench20", Spec: `{"name":"bench20"}`, SpecHash: "h",
		RunsTotal: bench20Runs, State: events.ExperimentStateDone, GreenflowVersion: "bench", GitCommit: "bench", Environment: `{}`,
		CreatedMs: bench20Start}); err != nil {
		return err
	}
	var runs []store.Run
	var targets []store.RunTarget
	for i := 0; i < bench20Runs; i++ {
		id := fmt.Sprintf("%s-r%04d", bench20ID, i)
		cfg := i % 5
		base := bench20Start + int64(i)*180_000
		start, end := base+30_000, base+150_000
		phases, _ := json.Marshal([]events.Phase{{Name: "baseline", StartMs: base, EndMs: start}, {Name: "measure", StartMs: start, EndMs: end},
			{Name: "cooldown", StartMs: end, EndMs: end + 10_000}})
		sensors := 1000 * (cfg + 1)
		runs = append(runs, store.Run{ExperimentID: bench20ID, RunID: id, Index: uint32(i), Repetition: uint32(i / 5),
			Config: fmt.Sprintf(`{"workload":{"sensors":%d}}`, sensors), ConfigHash: fmt.Sprintf("cfg%d", cfg),
			Factors: fmt.Sprintf(`{"workload.sensors":"%d"}`, sensors), State: events.RunStateDone, Phases: string(phases),
			MeasureStartMs: start, MeasureEndMs: end, CreatedMs: base - 1000})
		var samples []store.Sample
		cum := map[string]float64{}
		for n := 0; n < bench20Nodes; n++ {
			node := fmt.Sprintf("n%d", n)
			for k := 0; k < bench20Targets; k++ {
				targets = append(targets, store.RunTarget{ExperimentID: bench20ID, RunID: id, TargetID: fmt.Sprintf("process/%s/n%d-%d", id, n, k),
					Kind: "process", Node: node, Role: []string{results.RoleSUT, "broker", "loadgen", "platform"}[k%4]})
			}
			for ts := base + 1000; ts <= end+10_000; ts += 1000 {
				var parts float64
				for k := 0; k < bench20Targets; k++ {
					tid := fmt.Sprintf("process/%s/n%d-%d", id, n, k)
					j := 0.1 + 0.01*float64(k+cfg)
					parts += j
					cum[tid] += j
					samples = append(samples, store.Sample{TsMs: ts, Node: node, Scope: "process", TargetID: tid, Source: "rapl", PowerW: j,
						EnergyJ: cum[tid], DeltaJ: j, IntervalMs: 1000, Collector: "bench"})
				}
				cum[node] += parts + 20
				cum[node+"u"] += 20
				samples = append(samples,
					store.Sample{TsMs: ts, Node: node, Scope: "node", TargetID: "node/" + node, Source: "rapl", PowerW: parts + 20, EnergyJ: cum[node],
						DeltaJ: parts + 20, IntervalMs: 1000, Collector: "bench"},
					store.Sample{TsMs: ts, Node: node, Scope: "unattributed", TargetID: "node/" + node, Source: "rapl", PowerW: 20,
						EnergyJ: cum[node+"u"], DeltaJ: 20, IntervalMs: 1000, Collector: "bench"})
			}
		}
		if err := st.InsertSamples(ctx, samples); err != nil {
			return err
		}
		var res []store.Result
		for m, v := range map[string]float64{results.DurationS: 120, results.OfferedRateEPS: float64(sensors), results.Events: float64(sensors) * 120,
			results.ThroughputEPS: float64(sensors) * (0.99 + 0.002*float64(i/5)), results.SUTEnergyJ: 300 + float64(i), results.SUTMeanPowerW: 2.5,
			results.NodeEnergyJ: 12_000 + float64(i), results.NodeMeanPowerW: 100, results.SUTMicroJPerEvent: 2500 / float64(cfg+1),
			results.NodeMicroJPerEvent: 100_000 / float64(cfg+1), results.LagTrendSlope: 10, results.LagSLOThreshold: 2000} {
			res = append(res, store.Result{ExperimentID: bench20ID, RunID: id, Scope: results.ScopeRun, Metric: m, Value: v, Unit: results.Unit(m)})
		}
		if err := st.ReplaceResults(ctx, bench20ID, id, res); err != nil {
			return err
		}
	}
	if err := st.ReplaceRunTargets(ctx, targets); err != nil {
		return err
	}
	return st.UpsertRuns(ctx, runs)
}

func benchBench20(b *testing.B, do func(context.Context, *store.Store) error) {
	bench20.once.Do(func() { setupBench20(b) })
	if bench20.err != nil {
		b.Fatal(bench20.err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := do(ctx, bench20.st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExportTwentyRunsAfterHistory times `greenflow export` of the
// 20-run experiment, every sample included (345,600 rows in samples.csv),
// on a database that also holds the shared history (target: under 1 s).
func BenchmarkExportTwentyRunsAfterHistory(b *testing.B) {
	dir := b.TempDir()
	benchBench20(b, func(ctx context.Context, st *store.Store) error {
		files, err := report.Export(ctx, st, bench20ID, dir, true)
		if err == nil && len(files) < 6 {
			err = fmt.Errorf("export wrote %d files", len(files))
		}
		return err
	})
}

// BenchmarkReportTwentyRunsAfterHistory times `greenflow report` of the
// 20-run experiment (every run's power plot) on the same database.
func BenchmarkReportTwentyRunsAfterHistory(b *testing.B) {
	benchBench20(b, func(ctx context.Context, st *store.Store) error {
		page, err := report.Report(ctx, st, bench20ID, bench20Runs)
		if err == nil && len(page) < 10_000 {
			err = fmt.Errorf("report of %d bytes", len(page))
		}
		return err
	})
}
