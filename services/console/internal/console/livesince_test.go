package console_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/console/internal/console"
)

// A hub replays from the earliest run under way, not from the start of a
// long sweep's history.
func TestLiveSinceStartsAtTheRunUnderWay(t *testing.T) {
	const created, now = 1_000, 900_000
	run := func(state string, start int64) console.Run {
		r := console.Run{State: state}
		if start > 0 {
			r.Phases = []events.Phase{{Name: "provisioning", StartMs: start}}
		}
		return r
	}
	for _, tc := range []struct {
		name string
		runs []console.Run
		want int64
	}{
		{"no runs yet", nil, created},
		{"finished runs, one under way", []console.Run{run("done", 2_000), run("done", 50_000), run("measuring", 800_000), run("pending", 0)}, 800_000},
		{"two under way", []console.Run{run("measuring", 700_000), run("provisioning", 650_000)}, 650_000},
		{"only finished and pending", []console.Run{run("done", 2_000), run("pending", 0)}, now},
	} {
		require.Equal(t, tc.want, console.LiveSince(console.Experiment{CreatedMs: created, Runs: tc.runs}, now), tc.name)
	}
}
