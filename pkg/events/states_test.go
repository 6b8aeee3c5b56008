package events_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
)

func TestFinalStates(t *testing.T) {
	var final []string
	for _, s := range events.RunStates {
		if events.RunFinal(s) {
			final = append(final, s)
		}
	}
	require.Equal(t, []string{events.RunStateDone, events.RunStateFailed, events.RunStateCancelled}, final)
	for _, s := range []string{events.ExperimentStateQueued, events.ExperimentStateRunning} {
		require.False(t, events.ExperimentFinal(s), s)
	}
	for _, s := range []string{events.ExperimentStateDone, events.ExperimentStateFailed, events.ExperimentStateCancelled} {
		require.True(t, events.ExperimentFinal(s), s)
	}
}

// stateEnum is the enum of the state property of a schema file.
func stateEnum(t testing.TB, file string) []string {
	t.Helper()
	b, err := fs.ReadFile(events.EmbeddedSchemas(), file)
	require.NoError(t, err)
	var doc struct {
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(b, &doc))
	return doc.Properties["state"].Enum
}

// The experiment.state schema's enum is exactly the declared experiment
// states, and run.state's the declared run states in lifecycle order: one
// declaration, checked.
func TestStatesMatchTheSchemas(t *testing.T) {
	require.ElementsMatch(t, []string{events.ExperimentStateQueued, events.ExperimentStateRunning, events.ExperimentStateDone, events.ExperimentStateFailed,
		events.ExperimentStateCancelled}, stateEnum(t, "experiment.state.v1.json"))
	for v := 1; v <= events.Version(events.TypeRunState); v++ {
		require.Equal(t, events.RunStates, stateEnum(t, fmt.Sprintf("run.state.v%d.json", v)))
	}
}
