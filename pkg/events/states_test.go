package events_test

import (
	"encoding/json"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/schemas"
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

// The experiment.state schema's enum is exactly the declared experiment
// states: one declaration, checked.
func TestExperimentStatesMatchTheSchema(t *testing.T) {
	b, err := fs.ReadFile(schemas.Events, "events/experiment.state.v1.json")
	require.NoError(t, err)
	var doc struct {
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(b, &doc))
	require.ElementsMatch(t, []string{events.ExperimentStateQueued, events.ExperimentStateRunning, events.ExperimentStateDone, events.ExperimentStateFailed,
		events.ExperimentStateCancelled}, doc.Properties["state"].Enum)
}

// The run.state schema's enum is exactly the declared run states.
func TestRunStatesMatchTheSchema(t *testing.T) {
	b, err := fs.ReadFile(schemas.Events, "events/run.state.v1.json")
	require.NoError(t, err)
	var doc struct {
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(b, &doc))
	require.Equal(t, events.RunStates, doc.Properties["state"].Enum)
}
