package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// BenchmarkOrchestrationOverheadPerRun runs experiments through the dev
// stack (real services, in-process Kafka, ClickHouse) and reports, per run,
// the time spent outside the timed phases (baseline, warm-up, measuring,
// cool-down): provisioning the UC-3 processor, teardown and analysis.
// Target: < 2 s per run.
func BenchmarkOrchestrationOverheadPerRun(b *testing.B) {
	ctx := context.Background()
	st, cb := startStack(b)
	sets := []string{"spec.phases.baseline=1s", "spec.phases.warmup=0s", "spec.phases.measure=2s", "spec.phases.cooldown=0s",
		"spec.meters.interval=200ms", "spec.repetitions=1"}
	var overhead time.Duration
	var runs int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id, _ := submitExample(ctx, b, cb, sets)
		final := make(chan string, 1)
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		go func() {
			_ = cb.Watch(wctx, time.Now().Add(-time.Second), []events.Type{events.TypeExperimentState}, func(d bus.Delivery) {
				if m := d.Msg.(*events.ExperimentState); m.ExperimentID == id && (m.State == "done" || m.State == "failed") {
					select {
					case final <- m.State:
					default:
					}
				}
			})
		}()
		require.Equal(b, "done", <-final)
		wcancel()
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
				case "baseline", "warmup", "measuring", "cooldown":
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
