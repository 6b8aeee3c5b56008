package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
)

// BenchmarkOrchestrationOverheadPerRun runs experiments through the dev
// stack (real services, in-process Kafka, ClickHouse) and reports, per run,
// the time spent outside the timed phases (baseline, warm-up, measuring,
// cool-down): provisioning the UC-3 processor, teardown and analysis.
// Target: < 2 s per run.
func BenchmarkOrchestrationOverheadPerRun(b *testing.B) {
	ctx, st, cb := startStack(b, time.Hour)
	sets := phases("1s", "0s", "2s", "spec.repetitions=1")
	var overhead time.Duration
	var runs int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id, _, obs := submitExample(ctx, b, cb, sets)
		require.Equal(b, events.ExperimentStateDone, obs.WaitFinal(b, 2*time.Minute, nil))
		rows, err := st.Store.Runs(ctx, id)
		require.NoError(b, err)
		for _, r := range rows {
			var ph []events.Phase
			require.NoError(b, json.Unmarshal([]byte(r.Phases), &ph))
			var timed, all time.Duration
			for _, p := range ph {
				d := time.Duration(p.EndMs-p.StartMs) * time.Millisecond
				all += d
				switch p.Name {
				case events.RunStateBaseline, events.RunStateWarmup, events.RunStateMeasuring, events.RunStateCooldown:
					timed += d
				}
			}
			overhead += all - timed
			runs++
		}
	}
	b.StopTimer()
	b.ReportMetric(overhead.Seconds()/float64(runs), "s-overhead/run")
}
