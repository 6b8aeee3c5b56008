package console_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"github.com/greenflow/greenflow/services/console/internal/console"
)

// A hub replays from the earliest run under way, not from the start of a
// long sweep's history.
func TestLiveSinceStartsAtTheRunUnderWay(t *testing.T) {
	const created, now = 1_000, 900_000
	run := func(state string, start int64) schedapi.RunStatus {
		r := schedapi.RunStatus{State: state}
		if start > 0 {
			r.Phases = []events.Phase{{Name: "provisioning", StartMs: start}}
		}
		return r
	}
	for _, tc := range []struct {
		name string
		runs []schedapi.RunStatus
		want int64
	}{
		{"no runs yet", nil, created},
		{"finished runs, one under way", []schedapi.RunStatus{run(events.RunStateDone, 2_000), run(events.RunStateDone, 50_000),
			run(events.RunStateMeasuring, 800_000), run(events.RunStatePending, 0)}, 800_000},
		{"two under way", []schedapi.RunStatus{run(events.RunStateMeasuring, 700_000), run(events.RunStateProvisioning, 650_000)}, 650_000},
		{"only finished and pending", []schedapi.RunStatus{run(events.RunStateDone, 2_000), run(events.RunStatePending, 0)}, now},
	} {
		require.Equal(t, tc.want, console.LiveSince(schedapi.ExperimentStatus{CreatedMs: created, Runs: tc.runs}, now), tc.name)
	}
}
