package scheduler_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// A 20,000-run experiment's status is ~4 MB; NATS delivers no reply over
// its payload limit (1 MB by default), so `greenflow status` only timed
// out. The reply keeps the counts and as many runs as fit, and says how
// many it left out.
func TestStatusReplyFitsTheNATSPayloadLimit(t *testing.T) {
	t.Parallel()
	st := scheduler.ExperimentStatus{ID: "e", State: "running", RunsTotal: 20_000, RunsDone: 5}
	for i := range 20_000 {
		st.Runs = append(st.Runs, scheduler.RunStatus{RunID: fmt.Sprintf("e-r%05d", i), State: "pending",
			Factors: map[string]string{"workload.sensors": "2000"}})
	}
	full, _ := json.Marshal(st)
	const limit = 1 << 20
	require.Greater(t, len(full), limit, "the case must be over the limit")

	got := scheduler.FitPayload(st, limit)
	b, _ := json.Marshal(got)
	require.LessOrEqual(t, len(b), limit)
	require.Positive(t, len(got.Runs))
	require.Equal(t, 20_000, len(got.Runs)+got.RunsOmitted, "every run is listed or counted as left out")
	require.Equal(t, st.Runs[:len(got.Runs)], got.Runs)
	require.Equal(t, 20_000, got.RunsTotal)

	small := scheduler.ExperimentStatus{ID: "e", Runs: st.Runs[:3]}
	require.Equal(t, small, scheduler.FitPayload(small, limit), "a reply that fits is left whole")
}
